"""Callbacks the `preflight` command adds to every fit; each also works with a plain `Trainer`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


class ValidateFinalWeights(L.Callback):
    """Validate after the last optimizer step when that step was not validated already, so the
    last validation of a fit is always that of the final weights.

    It asks Lightning to stop after the final batch (``trainer.should_stop``), which makes the
    training loop run its validation before stopping, as early stopping does.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.enable_validation:
            return
        loop = trainer.fit_loop
        steps_done = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        epochs_done = (
            trainer.max_epochs not in (None, -1)
            and trainer.current_epoch + 1 >= trainer.max_epochs
            and loop.epoch_loop.batch_progress.is_last_batch
        )
        if steps_done or epochs_done:
            trainer.should_stop = True


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
        checkpoint = trainer.checkpoint_callback
        if checkpoint is not None and getattr(checkpoint, "dirpath", None):
            lines.append(f"  checkpoints: {checkpoint.dirpath}")
        if log_dir:
            lines.append(f"  logs: {log_dir}")
        print("\n".join(lines), flush=True)


class StepProgressBar(RichProgressBar):
    """Lightning's rich progress bar, with an epoch count that makes sense when a run is bounded by
    steps (Lightning prints ``Epoch 0/-2`` for ``max_epochs: -1``)."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_steps is not None and trainer.max_steps > 0:
            return f"Epoch {current_epoch}, max steps {trainer.max_steps}"
        if trainer.max_epochs not in (None, -1):
            return f"Epoch {current_epoch + 1}/{trainer.max_epochs}"
        return f"Epoch {current_epoch}"
