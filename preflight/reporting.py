"""What the `preflight` command prints about a fit: the closing summary (`FitSummary`) and a progress bar that counts
steps (`StepProgressBar`). The command's own; users' callbacks are in `preflight.callbacks`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from .final_weights import SaveFinalWeights


class FitSummary(L.Callback):
    """After `fit`: the final validation metrics (with their step) and where checkpoints and logs went."""

    def __init__(self) -> None:
        self._validated_step: int | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated_step = trainer.global_step

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log_dir = trainer.log_dir if trainer.logger is not None else None  # a collective: every rank asks
        if not trainer.is_global_zero:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        lines = ["", f"preflight: fit finished at step {trainer.global_step}"]
        if metrics and self._validated_step is not None:
            values = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
            lines.append(f"  final validation (step {self._validated_step}): {values}")
        import os

        final = next((c.saved for c in trainer.callbacks if isinstance(c, SaveFinalWeights) and c.saved), None)
        if final is not None and os.path.exists(final[1]):
            lines.append(f"  checkpoint: {final[1]} (step {final[0]})")
        else:
            checkpoint = trainer.checkpoint_callback
            folder = getattr(checkpoint, "dirpath", None)
            if folder and os.path.isdir(folder) and any(os.scandir(folder)):
                lines.append(f"  checkpoints: {folder}")
        if log_dir:
            lines.append(f"  logs: {log_dir}")
        print("\n".join(lines), flush=True)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, with an epoch count that makes sense when a run is bounded by
    steps (Lightning prints ``Epoch 0/-2`` for ``max_epochs: -1``), and without the version number
    (``v_num``) among the metrics."""

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        """The logged values, without Lightning's ``v_num`` (the run's version, shown as ``v_num: 0.000``)."""
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        return metrics

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return f"Epoch {current_epoch}, max steps {trainer.max_steps}"
        if trainer.max_epochs not in (None, -1):
            return f"Epoch {current_epoch + 1}/{trainer.max_epochs}"
        return f"Epoch {current_epoch}"
