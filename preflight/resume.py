"""Refusing to resume (or validate) a checkpoint with a config that trains something else.

Lightning would load the weights of any checkpoint into any module of matching shapes; a DPO
config resuming an IPO run, or one model's weights loaded over another's source, trains on
silently. The settings that define what is trained must agree, unless the user passes
``--allow_changed_config true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L

from .checkpointing import read_checkpoint_file
from .errors import PreflightConfigError

DEFINING = ("model", "loss", "peft", "reference", "reference_model")


class CheckpointMismatchError(PreflightConfigError):
    """The checkpoint was written by a different module, model, loss or adapter setting."""


def checkpoint_metadata(path: str | Path) -> dict[str, Any]:
    """The checkpoint's entries other than tensors that matter here, read as plain data (weights_only)."""
    path = Path(path)
    meta = read_checkpoint_file(path / "meta.pt") if path.is_dir() else read_checkpoint_file(path, mmap=True)
    return {k: meta.get(k) for k in ("preflight_module", "hyper_parameters", "global_step", "loops")}


def completed_epochs(meta: dict[str, Any]) -> int:
    """The epochs a checkpoint's fit loop had completed."""
    progress = ((meta.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}
    return int(progress.get("current", {}).get("completed", 0))


def finished_by(meta: dict[str, Any], max_steps: int | None, max_epochs: int | None) -> str | None:
    """Which limit (``max_steps=N``, ``max_epochs=N``) a checkpoint has already reached, or None."""
    if max_steps not in (None, -1) and int(meta.get("global_step") or 0) >= max_steps:
        return f"max_steps={max_steps}"
    if max_epochs not in (None, -1) and completed_epochs(meta) >= max_epochs:
        return f"max_epochs={max_epochs}"
    return None


def check_checkpoint_matches(path: str | Path, module: L.LightningModule, meta: dict[str, Any] | None = None) -> None:
    meta = checkpoint_metadata(path) if meta is None else meta
    own_class = f"{type(module).__module__}.{type(module).__qualname__}"
    theirs = meta.get("preflight_module")
    if theirs is not None and theirs != own_class:
        raise CheckpointMismatchError(
            f"{path} was written by {theirs}, this config builds {own_class} "
            "(--allow_changed_config true to load it anyway)"
        )
    stored = meta.get("hyper_parameters") or {}
    for key in DEFINING:
        if key in stored and key in module.hparams:
            differences = _differences(key, _plain(stored[key]), _plain(module.hparams[key]))
            if differences:
                raise CheckpointMismatchError(
                    f"{path} was trained with {differences[0][0]}={differences[0][1]!r}, this config sets "
                    f"{differences[0][2]!r} (--allow_changed_config true to use it anyway)"
                )


def _differences(key: str, theirs: Any, ours: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, checkpoint value, config value) for each leaf that differs."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        found = []
        for sub in sorted(theirs.keys() | ours.keys(), key=lambda k: (k != "name", k)):
            found += _differences(f"{key}.{sub}", theirs.get(sub), ours.get(sub))
        return found
    return [] if theirs == ours else [(key, theirs, ours)]


def _plain(value: Any) -> Any:
    if hasattr(value, "items"):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
