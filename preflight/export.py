"""Writing a trained module as a Hugging Face model folder (safetensors + tokenizer + config)."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from .modules import PreferenceModule, RewardModule
from .modules.models import is_peft

MODULE_KEY = "preflight_module"


def trained_model(module: L.LightningModule) -> torch.nn.Module:
    if isinstance(module, PreferenceModule):
        return module.policy
    if isinstance(module, RewardModule):
        return module.model
    raise TypeError(f"cannot export {type(module).__name__}: expected a PreferenceModule or RewardModule")


def export_module(module: L.LightningModule, out: str | Path, tokenizer: Any = None, merge_lora: bool = True) -> Path:
    """Save the module's model to `out` (replaced atomically); LoRA merged unless `merge_lora` is False."""
    out = Path(out)
    model = trained_model(module)
    if is_peft(model) and merge_lora:
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint as one dict, with weights_only=True; a sharded (FSDP2 / distributed) checkpoint
    folder is consolidated first."""
    path = Path(path)
    if not path.is_dir():
        return torch.load(path, map_location="cpu", weights_only=True)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        consolidated = Path(tmp) / "consolidated.pt"
        dcp_to_torch_save(path, consolidated)
        tensors = torch.load(consolidated, map_location="cpu", weights_only=True)
    meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
    return {**meta, "state_dict": tensors["state_dict"]}


def module_from_checkpoint(path: str | Path) -> tuple[L.LightningModule, dict]:
    """Rebuild the module a checkpoint was written by, with its weights."""
    checkpoint = load_checkpoint(path)
    class_path = checkpoint.get(MODULE_KEY)
    if class_path is None:
        raise ValueError(f"{path}: not a preflight checkpoint (no '{MODULE_KEY}' entry)")
    module_name, _, name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), name)
    module = cls(**checkpoint["hyper_parameters"])
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module, checkpoint


def export_checkpoint(path: str | Path, out: str | Path, merge_lora: bool = True, tokenizer: str | None = None) -> Path:
    module, checkpoint = module_from_checkpoint(path)
    spec = tokenizer or (checkpoint.get("datamodule_hyper_parameters") or {}).get("tokenizer")
    loaded = None
    if spec:
        from .datamodules import load_tokenizer

        loaded = load_tokenizer(spec)
    return export_module(module, out, loaded, merge_lora)


class HFExport(L.Callback):
    """At the end of `fit`, write the trained model (and the data module's tokenizer) to `dirpath`."""

    def __init__(self, dirpath: str = "export", merge_lora: bool = True) -> None:
        self.dirpath, self.merge_lora = dirpath, merge_lora

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            datamodule = getattr(trainer, "datamodule", None)
            export_module(pl_module, self.dirpath, getattr(datamodule, "tokenizer", None), self.merge_lora)
