"""Where a run writes and how `--ckpt_path last` finds it, as a user meets it from the command."""

import csv
import json
from pathlib import Path

import torch

from tests.conftest import ROOT
from tests.flows.conftest import QUICK


def metrics_rows(version_dir: Path) -> list[dict]:
    return list(csv.DictReader(open(version_dir / "metrics.csv")))


def test_a_test_run_writes_nothing_into_the_checkout(preflight, tmp_path):
    before = sorted(p.name for p in ROOT.iterdir())
    result = preflight(
        "fit",
        "--config",
        ROOT / "configs" / "dpo.yaml",
        "--trainer.fast_dev_run",
        "1",
        "--trainer.default_root_dir",
        tmp_path / "elsewhere",
    )
    assert result.code == 0
    assert sorted(p.name for p in ROOT.iterdir()) == before
    assert not (tmp_path / "runs").exists()


def test_each_run_gets_its_own_version_and_last_resolves_to_the_newest(preflight, workdir):
    first = preflight("fit", "--config", "configs/dpo.yaml", *QUICK)
    second = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3")
    assert first.code == second.code == 0
    versions = sorted(p.name for p in (workdir / "runs" / "dpo").iterdir())
    assert versions == ["version_0", "version_1"]
    assert not list((workdir / "runs" / "dpo").glob("version_*/checkpoints/last-v*.ckpt"))
    step = lambda v: torch.load(workdir / "runs/dpo" / v / "checkpoints/last.ckpt", weights_only=True)["global_step"]  # noqa: E731
    assert (step("version_0"), step("version_1")) == (2, 3)
    # validate "last" is the newest run (3 steps), and logs into that run's own folder
    result = preflight(
        "validate",
        "--config",
        "configs/dpo.yaml",
        "--data.val",
        "assets/data/val.jsonl",
        "--ckpt_path",
        "last",
        "--trainer.limit_val_batches",
        "2",
    )
    assert result.code == 0
    assert sorted(p.name for p in (workdir / "runs" / "dpo").iterdir()) == ["version_0", "version_1"]
    assert (workdir / "runs/dpo/version_1/validate_config.yaml").is_file()
    rows = metrics_rows(workdir / "runs/dpo/version_1")
    assert any(r.get("train/loss") for r in rows) and rows[-1]["val/loss"]  # fit's rows kept, validation appended


def test_resume_continues_in_the_same_folder_and_metrics_file(preflight, workdir):
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.log_every_n_steps", "1").code == 0
    result = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.max_steps",
        "4",
        "--ckpt_path",
        "last",
    )
    assert result.code == 0
    assert [p.name for p in (workdir / "runs" / "dpo").iterdir()] == ["version_0"]
    steps = [int(r["step"]) for r in metrics_rows(workdir / "runs/dpo/version_0") if r.get("train/loss")]
    assert steps == [1, 2, 3, 4]  # one metrics file for the whole run, at the steps the run prints
    assert sorted(p.name for p in (workdir / "runs/dpo/version_0/checkpoints").iterdir()) == ["last.ckpt"]


def test_folders_are_named_for_the_config_and_a_different_loss_is_refused_on_resume(preflight, workdir):
    """An override (another loss) stays in the config's folder, where --ckpt_path last finds it whatever the loss."""
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.loss", "ipo").code == 0
    assert (workdir / "runs" / "dpo" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    assert not (workdir / "runs" / "ipo").exists()
    ipo_ckpt = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    result = preflight(
        "fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--ckpt_path", ipo_ckpt
    )
    assert result.code == 2
    assert result.preflight_lines() == [
        "preflight: data: train assets/data/val.jsonl (200 pairs), val assets/data/val.jsonl (200 pairs)",
        f"preflight: error: {ipo_ckpt} was trained with loss.name='ipo', this config sets 'dpo' "
        "(--allow_changed_config true to use it anyway)",
    ]
    assert torch.load(ipo_ckpt, weights_only=True)["global_step"] == 2  # untouched
    allowed = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        "--trainer.max_steps",
        "3",
        "--ckpt_path",
        ipo_ckpt,
        "--allow_changed_config",
        "true",
    )
    assert allowed.code == 0


def test_your_own_small_dataset_works_with_the_shipped_config(preflight, workdir):
    rows = [json.loads(line) for line in open(ROOT / "assets/data/train.jsonl")][:120]
    (workdir / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 120 pairs at batch 16 are 8 batches an epoch, fewer than the config's val_check_interval (50)
    result = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        "--data.train",
        "mine.jsonl",
        "--trainer.max_steps",
        "9",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    )
    assert result.code == 0, result.err[-2000:]
    lines = result.preflight_lines()
    assert lines[0] == "preflight: data: train mine.jsonl (120 pairs), val assets/data/val.jsonl (200 pairs)"
    assert "preflight: fit finished at step 9" in lines


def test_fit_ends_with_a_validation_of_the_final_weights(preflight, workdir):
    result = preflight(
        "fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1"
    )
    assert result.code == 0
    summary = [line for line in result.out.splitlines() if "final validation" in line]
    assert len(summary) == 1 and summary[0].strip().startswith("final validation (step 3): ")
    rows = metrics_rows(workdir / "runs/dpo/version_0")
    val = [r for r in rows if r.get("val/loss")]
    assert [int(r["step"]) for r in val] == [0, 3]  # the baseline, then the final weights at the printed step
    printed = dict(item.split("=") for item in summary[0].split(": ", 1)[1].split(", "))
    assert abs(float(printed["val/loss"]) - float(val[-1]["val/loss"])) < 1e-3


def test_trust_remote_code_alone_is_one_setting(preflight, workdir):
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.trust_remote_code", "true")
    assert result.code == 0, result.err[-2000:]
    hparams = (workdir / "runs/dpo/version_0/hparams.yaml").read_text()
    assert "trust_remote_code: true" in hparams


def killed_at_step(step: int, workdir: Path, *args: str, **env: str) -> None:
    """`preflight ARGS` in its own process, SIGKILLed at the end of optimizer step `step` (tests.helpers.KillAt)."""
    import os
    import subprocess
    import sys

    killed = subprocess.run(
        [
            str(Path(sys.executable).parent / "preflight"),
            *args,
            "--trainer.callbacks+=tests.helpers.KillAt",
            f"--trainer.callbacks.step={step}",
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},  # tests.helpers importable
    )
    assert killed.returncode == -9, killed.stderr[-2000:]


def test_last_is_the_newest_checkpoint_of_every_checkpoint_callback(preflight, workdir):
    """The issue's reproduction: a finished run, then a run with the user's own `ModelCheckpoint` killed with
    SIGKILL, then ``--ckpt_path last`` resumes the killed run's checkpoint (not the finished run's), saying so;
    once that run has reached max_steps, ``last`` says there is nothing to train and trains nothing."""
    common = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "6"]
    own = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.every_n_train_steps=2",
        "--trainer.callbacks.save_last=true",
        "--trainer.callbacks.dirpath=ckpt",
    ]
    assert preflight(*common).code == 0
    killed_at_step(5, workdir, *common, *own)
    assert torch.load(workdir / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 4

    resumed = preflight(*common, *own, "--ckpt_path", "last")
    assert resumed.code == 0, resumed.err[-2000:]
    assert f"preflight: resuming {workdir / 'ckpt' / 'last.ckpt'} (step 4)" in resumed.preflight_lines()
    assert "preflight: fit finished at step 6" in resumed.preflight_lines()
    versions = sorted(p.name for p in (workdir / "runs" / "dpo").iterdir())
    trained = {int(r["step"]) for r in metrics_rows(workdir / "runs" / "dpo" / versions[-1]) if r.get("train/loss")}
    assert trained and min(trained) >= 4  # it trained steps 5 and 6, not from 0

    again = preflight(*common, *own, "--ckpt_path", "last")
    assert again.code == 0, again.err[-2000:]
    lines = again.preflight_lines()
    assert any(
        line.startswith("preflight: ") and "already reached max_steps=6 (step 6): nothing to train" in line
        for line in lines
    ), lines
    assert not any("fit finished" in line or "resuming" in line for line in lines)
    assert sorted(p.name for p in (workdir / "runs" / "dpo").iterdir()) == versions  # no new run folder


def test_temporary_stores_go_with_their_run_even_a_killed_one(preflight, workdir, monkeypatch):
    """``use_cache: false`` tokenizes into a temporary folder: a run removes its own at the end (teardown), and the
    folder of a run killed with SIGKILL is removed by the next run's start."""
    import tempfile

    scratch = workdir / "tmp"
    scratch.mkdir()
    common = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--data.use_cache", "false"]
    killed_at_step(1, workdir, *common, TMPDIR=str(scratch))
    left = sorted(p.name for p in scratch.glob("preflight-split-*"))
    assert len(left) == 2  # the train and val stores of the killed run
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert preflight(*common).code == 0
    assert not list(scratch.glob("preflight-split-*"))  # the killed run's and this run's own
