"""Writing a trained module as a Hugging Face model folder (safetensors + tokenizer + config)."""

from __future__ import annotations

import inspect
import sys
import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch

from . import __version__
from .checkpointing import read_checkpoint_file
from .export_target import check_export_target, staged_export
from .modules import PreferenceModule, PreflightModule, RewardModule
from .wrapped import is_peft

MODULE_KEY = "preflight_module"


def trained_model(module: L.LightningModule | torch.nn.Module) -> torch.nn.Module:
    """The model a module trains (a `PreferenceModule`'s policy, a `RewardModule`'s model), or a model itself."""
    if isinstance(module, PreferenceModule):
        return module.policy
    if isinstance(module, RewardModule):
        return module.model
    if not isinstance(module, L.LightningModule) and hasattr(module, "save_pretrained"):
        return module
    raise TypeError(f"cannot export {type(module).__name__}: expected a PreferenceModule, a RewardModule or a model")


def export_module(
    module: L.LightningModule | torch.nn.Module,
    out: str | Path,
    tokenizer: Any = None,
    merge_lora: bool = True,
    source: dict[str, Any] | None = None,
    protected: tuple[str | Path, ...] = (),
) -> Path:
    """Save the module's model to `out`, a folder that does not exist, is empty or holds an earlier export
    (`preflight.export_target`); LoRA merged unless `merge_lora` is False. `source` is recorded in the folder's mark
    (checkpoint, step); `protected` paths may not be replaced by the export."""
    out = check_export_target(out, protected)
    model = trained_model(module)
    if is_peft(model) and merge_lora:
        import copy

        model = copy.deepcopy(model).merge_and_unload()
    mark = {"written_by": f"preflight {__version__}", **(source or {})}
    with staged_export(out, mark) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return out


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint as one dict, with weights_only=True; a sharded (FSDP2 / distributed) checkpoint
    folder is consolidated first."""
    path = Path(path)
    if not path.is_dir():
        return read_checkpoint_file(path)
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    with tempfile.TemporaryDirectory() as tmp:
        consolidated = Path(tmp) / "consolidated.pt"
        dcp_to_torch_save(path, consolidated)
        tensors = torch.load(consolidated, map_location="cpu", weights_only=True)
    meta = torch.load(path / "meta.pt", map_location="cpu", weights_only=True)
    return {**meta, "state_dict": tensors["state_dict"]}


def module_classes() -> dict[str, type[PreflightModule]]:
    """preflight's module classes and every subclass already imported (by a package, or ``--imports``)."""
    found, todo = {}, [PreflightModule]
    while todo:
        cls = todo.pop()
        found[f"{cls.__module__}.{cls.__qualname__}"] = cls
        todo += cls.__subclasses__()
    del found[f"{PreflightModule.__module__}.{PreflightModule.__qualname__}"]
    return found


def _refuse_imports(value: Any, where: str) -> None:
    """A checkpoint's settings may name classes (``class_path``); only classes already imported are allowed,
    so that loading a checkpoint never imports (and runs) a module it names."""
    if isinstance(value, dict):
        class_path = value.get("class_path")
        if isinstance(class_path, str) and class_path.rpartition(".")[0] not in sys.modules:
            raise ValueError(
                f"{where}: refusing to import {class_path!r} named by the checkpoint "
                "(import it yourself, e.g. preflight export --imports MODULE)"
            )
        for key, item in value.items():
            _refuse_imports(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_imports(item, f"{where}[{i}]")


def module_from_checkpoint(path: str | Path, trust_remote_code: bool = False) -> tuple[L.LightningModule, dict]:
    """Rebuild the module a checkpoint was written by, with its weights.

    Only preflight's module classes (and subclasses already imported) are built; the checkpoint's
    hyperparameters are the constructor's arguments, except ``trust_remote_code``, which comes from the
    caller alone (a checkpoint never turns it on).
    """
    checkpoint = load_checkpoint(path)
    class_path = checkpoint.get(MODULE_KEY)
    if class_path is None:
        raise ValueError(f"{path}: not a preflight checkpoint (no '{MODULE_KEY}' entry)")
    cls = module_classes().get(class_path) if isinstance(class_path, str) else None
    if cls is None:
        raise ValueError(
            f"{path}: refusing to build {class_path!r}: not a preflight module class "
            "(a subclass of your own needs --imports MODULE)"
        )
    accepted = inspect.signature(cls.__init__).parameters
    hparams = {k: v for k, v in (checkpoint.get("hyper_parameters") or {}).items() if k in accepted and k != "self"}
    _refuse_imports(hparams, f"{path}: hyper_parameters")
    if "trust_remote_code" in accepted:
        hparams["trust_remote_code"] = trust_remote_code
    module = cls(**hparams)
    module.configure_model()
    module.load_state_dict(checkpoint["state_dict"])
    module.on_load_checkpoint(checkpoint)
    return module, checkpoint


def export_checkpoint(
    path: str | Path,
    out: str | Path,
    merge_lora: bool = True,
    tokenizer: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[Path, int]:
    """Write the model of a preflight checkpoint as a Hugging Face folder (see `module_from_checkpoint`); returns the
    folder and the checkpoint's step. The target is checked before the checkpoint is read."""
    check_export_target(out, (path,))
    module, checkpoint = module_from_checkpoint(path, trust_remote_code=trust_remote_code)
    spec = tokenizer or (checkpoint.get("datamodule_hyper_parameters") or {}).get("tokenizer")
    loaded = None
    if spec:
        from .pretrained import load_tokenizer

        loaded = load_tokenizer(spec, trust_remote_code=trust_remote_code)
    step = int(checkpoint.get("global_step") or 0)
    source = {"checkpoint": str(Path(path).absolute()), "step": step}
    return export_module(module, out, loaded, merge_lora, source=source, protected=(path,)), step


class HFExport(L.Callback):
    """At the end of `fit`, write the trained model (and the data module's tokenizer) to `dirpath`.

    The folder is checked when the fit starts, so a target that holds other files (or the run itself) is refused
    before any training; see `preflight.export_target` for what an export may replace.

    Args:
        dirpath: the folder to write: new, empty, or an earlier export.
        merge_lora: merge a LoRA adapter into the model (False: save the adapter alone).
    """

    def __init__(self, dirpath: str = "export", merge_lora: bool = True) -> None:
        self.dirpath, self.merge_lora = dirpath, merge_lora

    def _protected(self, trainer: L.Trainer) -> tuple[str, ...]:
        return (trainer.log_dir,) if trainer.log_dir else ()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            check_export_target(self.dirpath, self._protected(trainer))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        protected = self._protected(trainer)  # log_dir is a collective: every rank asks
        if trainer.is_global_zero:
            datamodule = getattr(trainer, "datamodule", None)
            export_module(
                pl_module,
                self.dirpath,
                getattr(datamodule, "tokenizer", None),
                self.merge_lora,
                source={"step": trainer.global_step},
                protected=protected,
            )
