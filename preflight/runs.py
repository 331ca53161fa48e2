"""Where a run writes, and finding it again.

Every run of the command gets its own folder ``{root}/{run name}/version_N`` holding its
``config.yaml``, ``hparams.yaml``, ``metrics.csv`` and ``checkpoints/``. ``--ckpt_path last``
means the most recently written ``last.ckpt`` of any version of the run, and a run resumed (or
validated) from a checkpoint keeps logging into that checkpoint's version folder.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Iterable

from lightning.fabric.loggers.csv_logs import _ExperimentWriter
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

VERSION = re.compile(r"version_(\d+)$")


def checkpoint_files(run_dir: str | Path, folders: Iterable[str | Path] = ()) -> list[Path]:
    """Every ``last*.ckpt`` (a file, or a sharded folder) of every version of a run and of the other
    checkpoint `folders` (a `ModelCheckpoint`'s ``dirpath``), oldest first."""
    found = [p for p in Path(run_dir).glob("version_*/checkpoints/last*.ckpt") if VERSION.match(p.parent.parent.name)]
    for folder in folders:
        found += Path(folder).glob("last*.ckpt")
    return sorted(set(found), key=lambda p: p.stat().st_mtime_ns)


def latest_checkpoint(run_dir: str | Path, folders: Iterable[str | Path] = ()) -> Path | None:
    """The most recently written ``last*.ckpt`` of a run folder and of the other checkpoint `folders`, or None:
    Lightning's meaning of ``--ckpt_path last`` (the newest ``last`` of the checkpoint callbacks), with every
    version of the run counted as one of them."""
    found = checkpoint_files(run_dir, folders)
    return found[-1] if found else None


def run_location(checkpoint: str | Path) -> tuple[Path, str, int] | None:
    """(root, run name, version) of a checkpoint inside ``{root}/{name}/version_N/checkpoints/``."""
    path = Path(checkpoint).absolute()
    if path.parent.name != "checkpoints":
        return None
    match = VERSION.match(path.parent.parent.name)
    if not match:
        return None
    run_dir = path.parent.parent.parent
    return run_dir.parent, run_dir.name, int(match.group(1))


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint from what a user names: a file, a sharded checkpoint folder, or a run folder
    (its newest ``last.ckpt``)."""
    path = Path(spec)
    if path.is_dir() and not _is_sharded_checkpoint(path):
        newest = latest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(f"{spec}: no version_*/checkpoints/last.ckpt in this run folder")
        return newest
    if not path.exists():
        raise FileNotFoundError(f"{spec}: checkpoint not found")
    return path


def _is_sharded_checkpoint(path: Path) -> bool:
    return (path / "meta.pt").is_file() or (path / ".metadata").is_file()


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` (Lightning's writer deletes it) and appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(header)


class RunLogger(CSVLogger):
    """Lightning's `CSVLogger`, except that a run continued in its own version folder (a resume,
    a validation of one of its checkpoints) appends to its ``metrics.csv`` instead of replacing it.

    Args:
        save_dir: the root of all runs.
        name: the run's name (a folder under `save_dir`).
        version: the version to log into; None for the next free one.
    """

    def __init__(self, save_dir: str, name: str, version: int | None = None) -> None:
        super().__init__(save_dir=save_dir, name=name, version=version)
        #: the step every row is written at (set for `validate`/`test` of a checkpoint: the checkpoint's step)
        self.step_override: int | None = None
        self.step_shift = 0

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Lightning's rows, at the optimizer step whose weights they measured. During a fit Lightning hands train and
        validation metrics over with the count of steps completed before the one being logged (0 for the first
        step); ``step_shift`` (1, set by the command for a fit) makes them 1-based, as TRL counts and as
        ``fit finished at step N`` prints. ``step_override`` writes every row at one step (a checkpoint's
        validation: the checkpoint's step)."""
        if step is not None:
            step += self.step_shift
        self.log_metrics_at(metrics, step)

    def log_metrics_at(self, metrics: dict[str, float], step: int | None) -> None:
        """Rows already at the step of the weights they measured (`GenerationEval` logs at ``global_step``)."""
        if self.step_override is not None:
            step = self.step_override
        super().log_metrics(metrics, step)

    @property
    def experiment(self) -> _ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
