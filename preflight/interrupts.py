"""Stopping a fit on SIGTERM or SIGINT with a resumable ``last.ckpt`` (`SaveOnInterrupt`), and where that file goes;
the `preflight` command adds it to every fit, and it works with a plain `Trainer` too."""

from __future__ import annotations

import lightning as L


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


class Interrupted(Exception):
    """A run stopped by SIGTERM or SIGINT after saving a resumable checkpoint (`path`)."""

    def __init__(self, signal_name: str, step: int, path: str | None) -> None:
        self.signal_name, self.step, self.path = signal_name, step, path
        saved = f"saved {path} (resume with --ckpt_path last)" if path else "nothing saved"
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
        raise Interrupted(local or "a signal on another process", trainer.global_step, save_last(trainer))

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Lightning stops a SIGTERM that arrives during validation with `SIGTERMException`, a `SystemExit`
        with status 0: save there too, and let the command turn it into `Interrupted`."""
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException) and trainer.state.fn is not None and trainer.state.fn.value == "fit":
            exception.preflight_interrupted = Interrupted("SIGTERM", trainer.global_step, save_last(trainer))
