"""Failures as the user meets them: settings that would train the wrong thing, the error boundary,
and SIGTERM/SIGINT during a fit."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.flows.conftest import QUICK

PREFLIGHT = str(Path(sys.executable).parent / "preflight")


@pytest.mark.parametrize("loss", ["dpo", "sigmoid_norm", "aot", "aot_unpaired", "simpo", "cpo", "robust"])
def test_label_smoothing_that_prefers_the_rejected_answer_is_refused(preflight, workdir, loss):
    result = preflight("fit", "--config", "configs/dpo.yaml", "--model.loss", f"{{name: {loss}, label_smoothing: 0.7}}")
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: label_smoothing must be in [0, 0.5), got 0.7: at 0.5 and above the loss prefers the "
        "rejected answer")
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize("override, message", [
    (["--model.loss", "{name: dpo, beta: .inf}"], "beta must be a finite number > 0, got inf"),
    (["--model.loss", "{name: ipo, beta: -1}"], "beta must be a finite number > 0, got -1"),
    (["--model.learning_rate", "-0.001"], "learning_rate must be a finite number >= 0, got -0.001"),
    (["--model.warmup_steps", "-5"], "warmup_steps must be >= 0, got -5"),
])
def test_settings_that_fail_inside_training_are_refused_before_it(preflight, workdir, override, message):
    result = preflight("fit", "--config", "configs/dpo.yaml", *override)
    assert result.code == 2 and result.preflight_lines()[-1] == f"preflight: error: {message}"
    assert not (workdir / "runs").exists()


def test_a_configuration_error_found_in_the_run_leaves_no_run_folder(preflight, workdir):
    """The fast-path decision needs the built model, so `shared_prompt: on` on an ALiBi model fails inside fit."""
    from transformers import AutoConfig

    AutoConfig.for_model("bloom", vocab_size=384, hidden_size=32, n_layer=2, n_head=4).save_pretrained(workdir / "bloom")
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.model", "bloom",
                       "--model.shared_prompt", "on")
    assert result.code == 2
    assert result.preflight_lines()[-1] == ("preflight: error: shared_prompt: on is not exact for BloomForCausalLM: "
                                            "BloomForCausalLM uses ALiBi biases computed from the 2D mask")
    assert list((workdir / "runs" / "dpo").iterdir()) == []  # the version folder it had started is gone
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.model", "bloom").code == 0  # auto: off


def test_an_unexpected_error_in_training_keeps_its_traceback(workdir, monkeypatch):
    from preflight.cli import main
    from preflight.modules.preference import PreferenceModule

    def broken(self, batch):
        raise ValueError("a bug in a training step, not a setting")

    monkeypatch.setattr(PreferenceModule, "compute_loss", broken)
    with pytest.raises(ValueError, match="a bug in a training step"):
        main(["fit", "--config", "configs/dpo.yaml", *QUICK])


def wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_a_signal_saves_a_resumable_checkpoint_and_exits_non_zero(workdir, signum, code):
    (workdir / "stale").mkdir()
    args = [PREFLIGHT, "fit", "--config", "configs/dpo.yaml", "--data.train", "assets/data/val.jsonl",
            "--data.batch_size", "2", "--trainer.max_steps", "100000", "--trainer.enable_progress_bar", "false",
            "--trainer.log_every_n_steps", "1"]
    proc = subprocess.Popen(args, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    metrics = workdir / "runs/dpo/version_0/metrics.csv"
    wait_for(metrics)  # training has started (metrics are flushed at log_every_n_steps)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    ckpt = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    lines = [line for line in err.splitlines() if line.startswith("preflight:")]
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert lines == [f"preflight: stopped by {signal.Signals(signum).name} at step {step}: saved {ckpt} "
                     "(resume with --ckpt_path last)"]
    assert step >= 1
    leftover = workdir / "runs/dpo/version_0/checkpoints/.last.ckpt.killed.tmp"
    leftover.write_bytes(b"half a checkpoint")
    os.utime(leftover, (0, 0))
    resumed = subprocess.run(args[:-4] + ["--trainer.max_steps", str(step + 2), "--ckpt_path", "last",
                                          "--trainer.enable_progress_bar", "false"],
                             cwd=workdir, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(ckpt, weights_only=True)["global_step"] == step + 2
    assert not leftover.exists()  # the next save removed what the kill left
