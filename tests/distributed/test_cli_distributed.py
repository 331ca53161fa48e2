"""`preflight fit` with 2 CPU processes from the shell: the README's FSDP2 command, and the logged metrics of
DDP and gradient accumulation."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PREFLIGHT = str(Path(sys.executable).parent / "preflight")


def readme_fsdp2_command() -> list[str]:
    """The README's FSDP2 command, as written there."""
    from tests.test_readme import commands, readme_blocks

    (command,) = [
        c
        for block in readme_blocks()
        if block.lang == "bash"
        for c in commands(block.body)
        if "ModelParallelStrategy" in " ".join(c)
    ]
    return command


@pytest.fixture
def busy_cores():
    """Every core kept busy by another process for the test's length, as on a shared CI machine or a node that a
    scheduler fills (benchmarks/exit_under_load.py repeats this 20 times per command)."""
    import multiprocessing as mp

    spinners = [mp.get_context("spawn").Process(target=_spin, daemon=True) for _ in range(os.cpu_count() or 2)]
    for spinner in spinners:
        spinner.start()
    yield
    for spinner in spinners:
        spinner.terminate()


def _spin() -> None:
    while True:
        pass


def test_the_readme_fsdp2_fit_trains_as_one_process_and_exports(tmp_path, busy_cores):
    """The README's FSDP2 command (with the suite's short-run arguments) on busy cores, where it must still exit 0:
    data-parallel over both processes, so its logged losses and its weights equal one process's with the same
    global batch; then `preflight export` of its sharded checkpoint."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.test_readme import SHORT

    (tmp_path / "assets").symlink_to(ROOT / "assets")
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    command = readme_fsdp2_command()
    assert command[:2] == ["preflight", "fit"]
    logged = [*SHORT, "--trainer.log_every_n_steps", "1"]
    result = subprocess.run(
        [PREFLIGHT, *command[1:], *logged], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("preflight: fit finished") == 1  # the summary comes from rank 0 alone
    assert "val/rewards/accuracies" in result.stdout
    checkpoint = tmp_path / "runs" / "dpo" / "version_0" / "checkpoints" / "last.ckpt"
    assert checkpoint.is_dir()  # a sharded folder: export consolidates it into one Hugging Face folder
    exported = subprocess.run(
        [PREFLIGHT, "export", "runs/dpo", "out"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert_export_holds_the_sharded_weights(checkpoint, tmp_path / "out")

    one = subprocess.run(
        # the same global batch: 2 processes × data.batch_size 16 (batch_size is per process, as in Lightning and TRL)
        [PREFLIGHT, "fit", "--config", "configs/dpo.yaml", *logged, "--data.batch_size", "32"]
        + ["--trainer.default_root_dir", "one"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert one.returncode == 0, one.stderr[-3000:]
    sharded, single = logged_metrics(tmp_path / "runs/dpo"), logged_metrics(tmp_path / "one/dpo")
    assert sorted(sharded) == sorted(single) and len(single) >= 4  # step 0 (baseline) to 3
    assert single[3]["val/loss"] < single[0]["val/loss"] - 1e-3  # it trained, so equal weights can fail to be equal
    for step, values in single.items():
        for key in ("train/loss", "train/grad_norm", "val/loss"):
            if key in values:  # the gradient norm too: each process's gradient is that of the whole step
                assert abs(sharded[step][key] - values[key]) < 1e-5 * max(1, abs(values[key])), (step, key)
    assert (
        subprocess.run(
            [PREFLIGHT, "export", "one/dpo", "one-out"], cwd=tmp_path, capture_output=True, timeout=300
        ).returncode
        == 0
    )
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "one-out").state_dict()
    ours = AutoModelForCausalLM.from_pretrained(tmp_path / "out").state_dict()
    for name, tensor in theirs.items():
        assert torch.allclose(ours[name], tensor, atol=1e-5), name


def logged_metrics(run_dir) -> dict[int, dict[str, float]]:
    """Every row of a run's metrics.csv, by step: {step: {metric: value}}."""
    import csv

    rows: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(open(run_dir / "version_0" / "metrics.csv")):
        rows.setdefault(int(row["step"]), {}).update({k: float(v) for k, v in row.items() if v and k != "step"})
    return rows


def assert_export_holds_the_sharded_weights(checkpoint, out):
    import torch
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out).state_dict()
    keys = {f"state_dict.policy.{name}" for name in exported}
    # read the shards directly by key, without preflight's consolidation
    stored = _load_state_dict_from_keys(keys, storage_reader=FileSystemReader(str(checkpoint)))
    stored = {k.removeprefix("policy."): v for k, v in stored["state_dict"].items()}
    tied = {"lm_head.weight"} - stored.keys()
    assert set(exported) - tied == set(stored)
    for name, tensor in stored.items():
        assert torch.equal(exported[name], tensor), name


def logged_train_metrics(run_dir):
    import csv

    rows = list(csv.DictReader(open(run_dir / "version_0" / "metrics.csv")))
    return {
        int(r["step"]): {k: float(v) for k, v in r.items() if k.startswith("train/") and v}
        for r in rows
        if r.get("train/loss")
    }


def test_logged_train_metrics_are_those_of_the_whole_step(tmp_path, monkeypatch):
    """The per-step train/ values: all processes and all micro-batches of the step, whatever the layout."""
    from preflight.cli import main

    (tmp_path / "assets").symlink_to(ROOT / "assets")
    monkeypatch.chdir(tmp_path)
    common = [
        "fit",
        "--config",
        str(ROOT / "configs" / "dpo.yaml"),
        "--data.train",
        "assets/data/val.jsonl",
        "--trainer.max_steps",
        "3",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.limit_val_batches",
        "1",
        "--model.learning_rate",
        "0.01",
        "--trainer.enable_progress_bar",
        "false",
    ]
    layouts = {
        "one": ["--data.batch_size", "8"],
        "two": ["--data.batch_size", "4", "--trainer.devices", "2", "--trainer.strategy", "ddp"],
        "accumulated": ["--data.batch_size", "4", "--trainer.accumulate_grad_batches", "2"],
    }
    logged, seen = {}, {}
    for name, args in layouts.items():
        seen_file = tmp_path / f"{name}-seen.jsonl"
        command = [
            *common,
            *args,
            "--trainer.default_root_dir",
            str(tmp_path / name),
            "--trainer.callbacks+=tests.helpers.SeenTrainMetrics",
            f"--trainer.callbacks.path={seen_file}",
        ]
        if "--trainer.devices" in args:  # Lightning relaunches the command once per process
            result = subprocess.run(
                [PREFLIGHT, *command],
                capture_output=True,
                text=True,
                timeout=600,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )  # tests.helpers importable
            assert result.returncode == 0, result.stderr[-3000:]
        else:  # one process: in this one, as the command runs it (no second interpreter start)
            try:
                main(command)
            except SystemExit as exit_:
                assert exit_.code in (0, None), f"{name}: exit {exit_.code}"
        logged[name] = logged_train_metrics(tmp_path / name / "dpo")
        seen[name] = [json.loads(line) for line in seen_file.read_text().splitlines()]
    assert sorted(logged["one"]) == [1, 2, 3]  # the step after which each was measured, as the run prints it
    for name in ("two", "accumulated"):
        assert logged[name].keys() == logged["one"].keys()
        for step, values in logged["one"].items():
            assert values.keys() == logged[name][step].keys()
            for key, value in values.items():
                assert abs(value - logged[name][step][key]) <= 1e-4 * max(1.0, abs(value)), (name, step, key)
    # a user's callback sees each step's own values in on_train_batch_end, from the first step on
    for name in layouts:
        assert [s["global_step"] for s in seen[name]] == [1, 2, 3]
        for record in seen[name]:
            assert record["seen"] == pytest.approx(logged[name][record["global_step"]], rel=1e-6), name


def test_fsdp2_by_name_is_data_parallel_over_every_process():
    """``--trainer.strategy fsdp2`` (Lightning's registry): a mesh of 2 data-parallel processes by 1, where Lightning's
    own ModelParallelStrategy defaults to 1 by 2 on one node."""
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy

    import preflight.strategies  # noqa: F401  registers fsdp2, as the command does

    trainer = L.Trainer(strategy="fsdp2", accelerator="cpu", devices=2, logger=False, enable_checkpointing=False)
    strategy = trainer.strategy
    assert type(strategy).__name__ == "FSDP2Strategy" and isinstance(strategy, ModelParallelStrategy)
    strategy.check_sizes()
    assert (strategy._data_parallel_size, strategy._tensor_parallel_size) == (2, 1)
