"""Building the transformers models a module trains: from an id, a folder or an instance."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import PreflightConfigError

log = logging.getLogger("preflight.models")
WEIGHT_FILES = ("*.safetensors", "*.bin", "*.safetensors.index.json", "*.bin.index.json")
DROPOUT_ATTRIBUTES = ("attention_dropout", "hidden_dropout", "dropout", "attn_dropout", "resid_dropout")


class ModelLoadError(PreflightConfigError):
    """A model that cannot be loaded; the message is one line naming the model."""


def has_weights(folder: Path) -> bool:
    return any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES)


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def looks_local(name: str) -> bool:
    """A path rather than a Hub id ("owner/name"): it exists, starts like a path, or has more than one '/'."""
    return Path(name).exists() or name.startswith((".", "/", "~")) or name.count("/") > 1


def check_model_path(spec: str) -> None:
    """Fail early, with one line, on a local model folder that does not exist or whose config.json is broken."""
    folder = Path(spec).expanduser()
    if looks_local(spec) and not folder.is_dir():
        raise ModelLoadError(f"model {spec!r}: no such folder")
    config = folder / "config.json"
    if folder.is_dir() and config.is_file():
        import json

        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            where = f"line {err.lineno}: {err.msg}" if isinstance(err, json.JSONDecodeError) else "not UTF-8"
            raise ModelLoadError(f"{config}, {where}: not a valid model config") from None


def check_model_source(spec: str, trust_remote_code: bool = False) -> None:
    """Read the model's config now (a folder, the local cache, or the Hub when online), so that a model that
    cannot be had is reported before any run folder exists."""
    check_model_path(spec)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model {spec!r} cannot be loaded ({_first_line(err)})") from None


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
    local = Path(name)
    check_model_path(name)
    dtype_kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    if attn_implementation:
        dtype_kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code, **config_overrides)
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, 0.0)
        if local.is_dir() and not has_weights(local):
            log.info("model %s has no weights: building it from its config with seed %d", name, init_seed)
            with _seeded(init_seed):
                model = auto_class.from_config(config, trust_remote_code=trust_remote_code, **dtype_kwargs)
        else:
            model = auto_class.from_pretrained(name, config=config, trust_remote_code=trust_remote_code, **dtype_kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise ModelLoadError(f"model {name!r} cannot be loaded ({_first_line(err)})") from None
    return disable_dropout(model)


@contextlib.contextmanager
def _seeded(seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def model_source(model: nn.Module) -> str:
    """What the saved hyperparameters record for a model passed as an instance: where it was loaded from,
    or its class when it was built in memory (then pass the instance again to load a checkpoint)."""
    config = getattr(unwrap_peft(model), "config", None)
    return getattr(config, "_name_or_path", "") or f"<{type(unwrap_peft(model)).__name__} instance>"


def disable_dropout(model: nn.Module) -> nn.Module:
    """Dropout off everywhere: preference losses compare log-probs that dropout would make noisy."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for attr in DROPOUT_ATTRIBUTES:
            if isinstance(getattr(module, attr, None), float):
                setattr(module, attr, 0.0)
    return model


def apply_lora(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Wrap `model` with a LoRA adapter; `settings` are `peft.LoraConfig` fields."""
    from peft import LoraConfig, get_peft_model

    settings = {"task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": "all-linear", **settings}
    try:
        config = LoraConfig(**settings)
    except TypeError as err:
        raise ModelLoadError(f"peft: {_first_line(err)}") from None
    return get_peft_model(model, config)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (adapters stay injected in its layers)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def shard_fsdp2(model: nn.Module, mesh) -> nn.Module:
    """FSDP2: `fully_shard` each decoder layer (the model's `_no_split_modules` classes), the input embedding
    and the lm_head when they are untied (each a unit of its own, so that each is gathered only while it is
    used: together in the root unit they would be gathered whole for the whole step, a cost that grows with
    the vocabulary), then the root."""
    from torch.distributed.fsdp import fully_shard

    lm = unwrap_peft(model)
    layer_classes = set(getattr(lm, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ModelLoadError(f"{type(model).__name__}: no decoder-layer classes (_no_split_modules) to shard")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    for unit in untied_vocabulary_modules(lm):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def untied_vocabulary_modules(lm: nn.Module) -> list[nn.Module]:
    """The input embedding and the lm_head when they share no parameter (tied, they must stay in one unit)."""
    embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if embedding is None or head is None:
        return []
    if {id(p) for p in embedding.parameters()} & {id(p) for p in head.parameters()}:
        return []
    return [embedding, head]


def is_fsdp2_unit(model: nn.Module) -> bool:
    """A module that FSDP2's `fully_shard` made a unit (the root or any inner one)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def inside_forward(root: nn.Module, function, *args, **kwargs):
    """``function(*args, **kwargs)`` run as `root`'s forward, so the hooks a sharding strategy put on that
    module (FSDP2: gather its own parameters, such as the lm_head's weight, before; re-shard and reduce their
    gradients after) wrap it as they wrap the module's own forward."""
    original = root.forward

    def redirected(*_args, **_kwargs):
        root.forward = original  # a nested call of the real forward stays the real one
        return function(*_args, **_kwargs)

    root.forward = redirected
    try:
        return root(*args, **kwargs)
    finally:
        root.forward = original
