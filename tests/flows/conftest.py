"""Running `preflight` as a user does: in a fresh working folder holding the shipped assets and configs."""

import os
from dataclasses import dataclass

import pytest

from preflight.cli import main
from tests.conftest import ROOT

# A short fit on the small shipped split: a few seconds, the same code path as the main job.
QUICK = [
    "--data.train",
    "assets/data/val.jsonl",
    "--data.batch_size",
    "4",
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def preflight_lines(self) -> list[str]:
        return [line for line in (self.out + self.err).splitlines() if line.startswith("preflight")]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def preflight(capsys, workdir):
    """`preflight ARGS...` in the working folder: (exit code, stdout, stderr)."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def no_files_written_under(path) -> bool:
    return not any(os.scandir(path)) if path.exists() else True
