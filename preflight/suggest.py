"""Did-you-mean for a mistyped config key or option of ``preflight fit | validate | test``: the closest key the command
takes, read from the signatures LightningCLI builds its options from (the Trainer, the data module, the module)."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re

from lightning import Trainer

from .datamodules import PreferenceDataModule

TOP_LEVEL = ("seed_everything", "model", "data", "trainer", "ckpt_path", "run_name", "imports", "config")
UNKNOWN_KEY = (
    re.compile(r"unrecognized arguments: --([\w.]+)"),
    re.compile(r"does not accept option '([\w.]+)'"),
    re.compile(r"Key '([\w.]+)' is not expected"),
)
UNKNOWN_INIT_ARG = re.compile(r"given class_path '([\w.]+)':\s*(?:- )?Option '(\w+)' is not accepted")


def parameters(cls: type) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def known_keys() -> list[str]:
    """Every dotted key a training command takes (the module's under both ``model.`` and ``model.init_args.``)."""
    from .modules import PreferenceModule, RewardModule

    keys = list(TOP_LEVEL)
    keys += [f"trainer.{name}" for name in parameters(Trainer)]
    keys += [f"data.{name}" for name in parameters(PreferenceDataModule)]
    for module in (PreferenceModule, RewardModule):
        for name in parameters(module):
            keys += [f"model.{name}", f"model.init_args.{name}"]
    return list(dict.fromkeys(keys))


def did_you_mean(message: str) -> str:
    """`` (did you mean 'X'?)`` for the closest known key to the one an error names, or ''."""
    match = UNKNOWN_INIT_ARG.search(message)
    if match:
        module, _, name = match.group(1).rpartition(".")
        try:
            candidates = parameters(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError, ValueError):
            return ""
        close = difflib.get_close_matches(match.group(2), candidates, n=1, cutoff=0.6)
        return f" (did you mean {close[0]!r}?)" if close else ""
    for pattern in UNKNOWN_KEY:
        match = pattern.search(message)
        if match:
            close = difflib.get_close_matches(match.group(1), known_keys(), n=1, cutoff=0.75)
            return f" (did you mean {close[0]!r}?)" if close else ""
    return ""
