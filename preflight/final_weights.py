"""A fit that ends with its final weights on disk and validated: `SaveFinalWeights` and `ValidateFinalWeights`, which
the `preflight` command adds to every fit; each works with a plain `Trainer` too."""

from __future__ import annotations

import lightning as L

from .interrupts import save_last


def is_final_batch(trainer: L.Trainer) -> bool:
    """Whether the batch that just ended completed the fit: ``max_steps`` reached, or the last batch of the last
    epoch."""
    steps_done = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
    epochs_done = (
        trainer.max_epochs not in (None, -1)
        and trainer.current_epoch + 1 >= trainer.max_epochs
        and trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
    )
    return steps_done or epochs_done


class SaveFinalWeights(L.Callback):
    """Save ``last.ckpt`` at the final step of every fit, whatever the checkpoint callbacks' intervals, validation
    data or ``enable_checkpointing``: when a fit ends, what it trained is on disk, and ``--ckpt_path last`` resumes
    from there.

    The save happens after the batch that completes the fit (where Lightning's own step checkpoints are taken, so a
    resume continues exactly); a fit stopped otherwise (early stopping) is saved when training ends, once per step.
    """

    def __init__(self) -> None:
        #: (step, path) of the final checkpoint once written
        self.saved: tuple[int, str] | None = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if not trainer.sanity_checking and is_final_batch(trainer):
            self._save(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        if trainer.fast_dev_run or (self.saved is not None and self.saved[0] == trainer.global_step):
            return
        self.saved = (trainer.global_step, save_last(trainer))


class ValidateFinalWeights(L.Callback):
    """Validate after the last optimizer step when that step was not validated already, so the
    last validation of a fit is always that of the final weights.

    It asks Lightning to stop after the final batch (``trainer.should_stop``), which makes the
    training loop run its validation before stopping, as early stopping does.
    """

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if trainer.sanity_checking or trainer.fast_dev_run or not trainer.enable_validation:
            return
        if is_final_batch(trainer):
            trainer.should_stop = True
