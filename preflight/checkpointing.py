"""Checkpoints that a kill cannot corrupt.

`AtomicCheckpointIO` writes each checkpoint to a temporary file in the target folder,
flushes it to disk, then renames it over the target: a process killed mid-save leaves the
previous `last.ckpt` intact (a rename within one file system is atomic on POSIX); the temporary
file such a kill leaves is removed by the next successful save of the same checkpoint.
The `preflight` command uses it unless the config sets its own plugins; with a plain
`Trainer`, pass ``plugins=[AtomicCheckpointIO()]``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .errors import PreflightConfigError


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options, got {storage_options!r}")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        started = os.stat(tmp).st_mtime_ns
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes it private; give it the usual mode
            os.replace(tmp, target)
        except (OSError, RuntimeError) as err:  # a full disk, a lost mount: the previous checkpoint is untouched
            Path(tmp).unlink(missing_ok=True)
            if isinstance(err, RuntimeError) and not _is_write_failure(err):
                raise
            raise CheckpointWriteError(
                f"{target}: the checkpoint could not be written ({_write_problem(err, target)}); "
                "the previous one is unchanged"
            ) from None
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _remove_stale_temporaries(target, started)


def _is_write_failure(err: RuntimeError) -> bool:
    """torch's zip writer reports a failed write (a full disk, a file size limit) as a RuntimeError."""
    text = str(err)
    return "inline_container" in text or "PytorchStreamWriter" in text or "file write failed" in text


def _write_problem(err: BaseException, target: Path) -> str:
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    import shutil

    free = shutil.disk_usage(target.parent).free
    return f"the write failed with {free / 2**20:.1f} MiB free on its disk"


class CheckpointWriteError(PreflightConfigError):
    """A checkpoint that could not be written (no space, no permission); the message names its path."""


def _remove_stale_temporaries(target: Path, before_ns: int) -> None:
    """Temporary files of saves of `target` that a kill interrupted (older than this save): nothing will finish them."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        try:
            if stale.stat().st_mtime_ns < before_ns:
                stale.unlink()
        except FileNotFoundError:
            pass


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class CheckpointReadError(PreflightConfigError):
    """A checkpoint file that cannot be read (truncated, or not a checkpoint); the message names its path."""


def read_checkpoint_file(path: str | Path, **load_kwargs: Any) -> dict:
    """`torch.load` of a checkpoint file as plain data (``weights_only=True``), or a one-line error naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, **load_kwargs)
    except Exception as err:  # truncated or foreign files raise several types (zip, unpickler, EOF)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise CheckpointReadError(f"{path}: cannot read the checkpoint ({first})") from None
