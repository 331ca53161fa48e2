"""Callbacks the `preflight` command adds to every fit; each also works with a plain `Trainer`."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar


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


def last_checkpoint_path(trainer: L.Trainer) -> str:
    """Where the fit's ``last.ckpt`` goes: the checkpoint callback's folder, else the run's ``checkpoints/`` (every
    process asks: the log folder is agreed on collectively)."""
    import os

    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        return os.path.join(checkpoint.dirpath, f"{checkpoint.CHECKPOINT_NAME_LAST}{checkpoint.FILE_EXTENSION}")
    return os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints", "last.ckpt")


def save_last(trainer: L.Trainer) -> str:
    """Save a resumable ``last.ckpt`` now (a collective: every process calls it) and return its path."""
    path = last_checkpoint_path(trainer)
    if trainer.checkpoint_callback is not None:
        trainer.checkpoint_callback.last_model_path = path  # recorded, so a resume replaces this file, not last-v1
    trainer.save_checkpoint(path, weights_only=False)  # resumable: optimizer and loop state too
    return path


class SaveFinalWeights(L.Callback):
    """Save ``last.ckpt`` at the final step of every fit, whatever the checkpoint callbacks' intervals, validation
    data or ``enable_checkpointing``: when a fit ends, what it trained is on disk, and ``--ckpt_path last`` resumes
    from there.

    The save happens after the batch that completes the fit (where Lightning's own step checkpoints are taken, so a
    resume continues exactly); a fit stopped otherwise (early stopping) is saved when training ends. It is skipped
    when a checkpoint callback already saved ``last`` at this step.
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


class Interrupted(Exception):
    """A run stopped by SIGTERM or SIGINT after saving a resumable checkpoint (`path`)."""

    def __init__(self, signal_name: str, step: int, path: str | None) -> None:
        self.signal_name, self.step, self.path = signal_name, step, path
        saved = f"saved {path} (resume with --ckpt_path last)" if path else "no checkpoint callback: nothing saved"
        super().__init__(f"stopped by {signal_name} at step {step}: {saved}")


class SaveOnInterrupt(L.Callback):
    """SIGTERM (a cluster's preemption) or SIGINT (Ctrl-C): finish the current batch, save ``last.ckpt``
    where the checkpoint callback keeps it, and stop with `Interrupted`; a second SIGINT stops at once.

    The decision is taken on every process together. Lightning notices SIGTERM itself
    (``trainer.received_sigterm``); SIGINT is caught by the handler `install` sets up.
    """

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous = None
        self._previous_sigterm = None

    def install(self) -> None:
        """Catch SIGINT, and SIGTERM too: Lightning watches SIGTERM only while one of its loops runs (a fit's
        baseline validation ends and restores the handlers before the fit sets them again), and composes its own
        handler with this one."""
        import signal

        def on_sigint(signum, frame):
            self.requested = "SIGINT"
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)  # a second Ctrl-C stops at once

        def on_sigterm(signum, frame):
            self.requested = self.requested or "SIGTERM"

        self._previous = signal.signal(signal.SIGINT, on_sigint)
        self._previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)

    def uninstall(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._previous_sigterm is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
            self._previous_sigterm = None

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        local = self.requested or ("SIGTERM" if trainer.received_sigterm else None)
        if not trainer.strategy.reduce_boolean_decision(local is not None, all=False):
            return
        raise Interrupted(local or "a signal on another process", trainer.global_step, self._save(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Lightning stops a SIGTERM that arrives during validation with `SIGTERMException`, a `SystemExit`
        with status 0: save there too, and let the command turn it into `Interrupted`."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn is not None and trainer.state.fn.value == "fit":
            exception.preflight_interrupted = Interrupted("SIGTERM", trainer.global_step, self._save(trainer))

    @staticmethod
    def _save(trainer: L.Trainer) -> str | None:
        return save_last(trainer)
