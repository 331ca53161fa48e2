"""Loading what a run starts from: a transformers model (an id, a folder or an instance) and its tokenizer.

Neutral ground for `modules` (the policy and reference) and `datamodules` (the tokenizer), so that neither imports the
other. A relative ``assets/...`` path that is not in the working folder is the copy shipped in the package
(`preflight.shipped`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import PreflightConfigError
from .shipped import shipped_path

log = logging.getLogger("preflight.models")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
DROPOUT_ATTRIBUTES = ("attention_dropout", "hidden_dropout", "dropout", "attn_dropout", "resid_dropout")


class ModelLoadError(PreflightConfigError):
    """A model that cannot be loaded; the message is one line naming the model."""


def has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def looks_local(name: str) -> bool:
    """A path rather than a Hub id ("owner/name"): it exists, starts like a path, has more than one '/', or its
    first part is a folder here (``assets/tiny-lama``: a typo in a local path, not an owner on the Hub)."""
    first = name.split("/", 1)[0]
    return (
        Path(name).exists()
        or name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or ("/" in name and Path(shipped_path(first)).expanduser().is_dir())
    )


def check_model_path(spec: str) -> None:
    """Fail early, with one line, on a local model folder that does not exist (naming the closest folder beside it)
    or whose config.json is broken."""
    name = shipped_path(spec)
    folder = Path(name).expanduser()
    if looks_local(spec) and not folder.is_dir():
        raise ModelLoadError(f"model {spec!r}: no such folder{closest_folder(spec)}")
    config = folder / "config.json"
    if folder.is_dir() and config.is_file():
        import json

        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise ModelLoadError(f"{config}, {where}: not a valid model config") from None


def closest_folder(spec: str) -> str:
    """`` (did you mean 'assets/tiny-llama'?)`` for the folder beside `spec` whose name is closest to it, or ''."""
    import difflib

    written = Path(spec)
    parent = Path(shipped_path(str(written.parent))).expanduser() if str(written.parent) != "." else Path(".")
    if not parent.is_dir():
        return ""
    names = [p.name for p in parent.iterdir() if p.is_dir()]
    match = difflib.get_close_matches(written.name, names, n=1, cutoff=0.6)
    return f" (did you mean {str(written.parent / match[0])!r}?)" if match else ""


def check_model_source(spec: str, trust_remote_code: bool = False) -> None:
    """Read the model's config now (a folder, the local cache, or the Hub when online), so that a model that
    cannot be had is reported before any run folder exists."""
    check_model_path(spec)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(shipped_path(spec), trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model {spec!r} cannot be loaded ({first_line(err)})") from None


def load_model(
    spec: Any,
    auto_class: Any,
    *,
    trust_remote_code: bool = False,
    init_seed: int = 0,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    **config_overrides: Any,
) -> nn.Module:
    """A model from a transformers instance, a local folder, or a Hub id.

    A local folder with a config but no weights is built from the config with random
    weights, deterministically from `init_seed` (the tiny models of tests and examples).
    Dropout is switched off in the config (and in the modules, see `disable_dropout`).
    """
    if isinstance(spec, nn.Module):
        return disable_dropout(spec)
    from transformers import AutoConfig

    name = str(spec)
    check_model_path(name)
    local = Path(shipped_path(name))
    dtype_kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    if attn_implementation:
        dtype_kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(str(local), trust_remote_code=trust_remote_code, **config_overrides)
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, 0.0)
        if local.is_dir() and not has_weights(local):
            if not WEIGHTS_FROM_CHECKPOINT.get():  # else the checkpoint's weights replace these: nothing to say
                log.info("model %s has no weights: building it from its config with seed %d", name, init_seed)
            with _seeded(init_seed):
                model = auto_class.from_config(config, trust_remote_code=trust_remote_code, **dtype_kwargs)
        else:
            model = auto_class.from_pretrained(
                str(local), config=config, trust_remote_code=trust_remote_code, **dtype_kwargs
            )
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model {name!r} cannot be loaded ({first_line(err)})") from None
    return disable_dropout(model)


#: set while a module is built only to receive a checkpoint's weights (`weights_from_checkpoint`)
WEIGHTS_FROM_CHECKPOINT: contextvars.ContextVar[bool] = contextvars.ContextVar("weights_from_checkpoint", default=False)


@contextlib.contextmanager
def weights_from_checkpoint(active: bool = True):
    """Within it, a config-only model folder is built without saying it has no weights: a checkpoint's weights
    are about to replace the random ones (``--ckpt_path``)."""
    token = WEIGHTS_FROM_CHECKPOINT.set(active)
    try:
        yield
    finally:
        WEIGHTS_FROM_CHECKPOINT.reset(token)


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def disable_dropout(model: nn.Module) -> nn.Module:
    """Dropout off everywhere: preference losses compare log-probs that dropout would make noisy."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attr in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
    return model


class TokenizerLoadError(PreflightConfigError):
    """A tokenizer that cannot be loaded; the message is one line naming it."""


def load_tokenizer(spec: Any, trust_remote_code: bool = False):
    """A tokenizer from an id, a path, or an instance; pad falls back to EOS."""
    if isinstance(spec, Mapping) or spec is None:
        raise TokenizerLoadError(f"tokenizer: expected a Hugging Face id, a path or a tokenizer, got {spec!r}")
    if isinstance(spec, (str, os.PathLike)):
        from transformers import AutoTokenizer

        name = shipped_path(spec)
        if looks_local(name) and not Path(name).expanduser().is_dir():
            raise TokenizerLoadError(f"tokenizer {str(spec)!r}: no such folder")
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise TokenizerLoadError(f"tokenizer {str(spec)!r} cannot be loaded ({first_line(err)})") from None
    else:
        tokenizer = spec
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
