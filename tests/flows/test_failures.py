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
        "rejected answer"
    )
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize(
    "override, message",
    [
        (["--model.loss", "{name: dpo, beta: .inf}"], "beta must be a finite number > 0, got inf"),
        (["--model.loss", "{name: ipo, beta: -1}"], "beta must be a finite number > 0, got -1"),
        (["--model.learning_rate", "-0.001"], "learning_rate must be a finite number >= 0, got -0.001"),
        (["--model.warmup_steps", "-5"], "warmup_steps must be >= 0, got -5"),
    ],
)
def test_settings_that_fail_inside_training_are_refused_before_it(preflight, workdir, override, message):
    result = preflight("fit", "--config", "configs/dpo.yaml", *override)
    assert result.code == 2 and result.preflight_lines()[-1] == f"preflight: error: {message}"
    assert not (workdir / "runs").exists()


def test_a_configuration_error_found_in_the_run_leaves_no_run_folder(preflight, workdir):
    """The fast-path decision needs the built model, so `shared_prompt: on` on an ALiBi model fails inside fit."""
    from transformers import AutoConfig

    AutoConfig.for_model("bloom", vocab_size=384, hidden_size=32, n_layer=2, n_head=4).save_pretrained(
        workdir / "bloom"
    )
    result = preflight(
        "fit", "--config", "configs/dpo.yaml", *QUICK, "--model.model", "bloom", "--model.shared_prompt", "on"
    )
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: shared_prompt: on is not exact for BloomForCausalLM: "
        "BloomForCausalLM uses ALiBi biases computed from the 2D mask"
    )
    assert not (workdir / "runs").exists()  # the run folder it had started is gone
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
    args = [
        PREFLIGHT,
        "fit",
        "--config",
        "configs/dpo.yaml",
        "--data.train",
        "assets/data/val.jsonl",
        "--data.batch_size",
        "2",
        "--trainer.max_steps",
        "100000",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.log_every_n_steps",
        "1",
    ]
    proc = subprocess.Popen(
        args,
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    metrics = workdir / "runs/dpo/version_0/metrics.csv"
    wait_for(metrics)  # training has started (metrics are flushed at log_every_n_steps)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    ckpt = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    lines = [line for line in err.splitlines() if line.startswith(("preflight: stopped", "preflight: error"))]
    step = torch.load(ckpt, weights_only=True)["global_step"]
    assert lines == [
        f"preflight: stopped by {signal.Signals(signum).name} at step {step}: saved {ckpt} "
        "(resume with --ckpt_path last)"
    ]
    assert step >= 1
    leftover = workdir / "runs/dpo/version_0/checkpoints/.last.ckpt.killed.tmp"
    leftover.write_bytes(b"half a checkpoint")
    os.utime(leftover, (0, 0))
    resumed = subprocess.run(
        args[:-4]
        + ["--trainer.max_steps", str(step + 2), "--ckpt_path", "last", "--trainer.enable_progress_bar", "false"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert torch.load(ckpt, weights_only=True)["global_step"] == step + 2
    assert not leftover.exists()  # the next save removed what the kill left


def chat(role, content):
    return {"role": role, "content": content}


BAD_ROWS = {
    "null_prompt": (
        {"prompt": None, "chosen": " yes", "rejected": " no"},
        "field 'prompt' is null (leave the field out for an implicit prompt)",
    ),
    "unknown_role": (
        {
            "prompt": [chat("customer", "Hi")],
            "chosen": [chat("assistant", "Hello!")],
            "rejected": [chat("assistant", "What.")],
        },
        "field 'prompt', message 1: unknown role 'customer' (expected one of system, developer, user, "
        "assistant, tool, ipython)",
    ),
    "missing_content": (
        {"prompt": [chat("user", "Hi")], "chosen": [{"role": "assistant"}], "rejected": [chat("assistant", "What.")]},
        "field 'chosen', message 1: 'content' is missing",
    ),
    "answer_inside_the_prompt": (
        {
            "prompt": [chat("user", "Hi"), chat("assistant", "Hello!")],
            "chosen": [chat("user", "Thanks")],
            "rejected": [chat("user", "Bye")],
        },
        "field 'chosen' starts with a 'user' message; the completion must be the assistant's turn",
    ),
    "implicit_prompt_ending_in_the_answer": (
        {
            "chosen": [chat("user", "Hi"), chat("assistant", "Hello!"), chat("user", "A")],
            "rejected": [chat("user", "Hi"), chat("assistant", "Hello!"), chat("user", "B")],
        },
        "field 'chosen' starts with a 'user' message; the completion must be the assistant's turn",
    ),
    "bad_margin": (
        {"prompt": "Hi", "chosen": " yes", "rejected": " no", "margin": "abc"},
        "field 'margin' must be a number, got 'abc'",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_wrong_row_is_reported_with_its_line_never_guessed(preflight, workdir, case):
    import json

    good = {"prompt": "Is it in stock?", "chosen": " Yes, happily.", "rejected": " Yes."}
    row, problem = BAD_ROWS[case]
    (workdir / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [good, row, good]))
    result = preflight("fit", "--config", "configs/dpo.yaml", "--data.train", "rows.jsonl")
    assert result.code == 2
    assert result.preflight_lines() == [f"preflight: error: rows.jsonl, line 2: {problem}"]
    assert not (workdir / "runs").exists()


def test_a_byte_that_is_not_utf8_is_located_and_skippable(preflight, workdir):
    """A byte-order mark (as Windows editors and spreadsheets save UTF-8) is not data: the first row is read."""
    good = b'{"prompt": "Is it in stock?", "chosen": " Yes, happily.", "rejected": " Yes."}\n'
    (workdir / "bytes.jsonl").write_bytes(
        b"\xef\xbb\xbf" + good + b'{"prompt": "caf\xe9", "chosen": " a", "rejected": " b"}\n' + good * 3
    )
    result = preflight("fit", "--config", "configs/dpo.yaml", "--data.train", "bytes.jsonl")
    assert result.code == 2
    where = "bytes.jsonl, line 2: not valid UTF-8 (byte 0xe9 at byte 16 of the line)"
    assert result.preflight_lines() == [f"preflight: error: {where}"]
    skipped = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        "--data.train",
        "bytes.jsonl",
        "--data.on_bad_rows",
        "skip",
        "--data.batch_size",
        "2",
    )
    assert skipped.code == 0
    assert (
        f"preflight: data: bytes.jsonl: 4 of 5 pairs kept, 1 bad rows skipped (first: {where})"
        in skipped.preflight_lines()
    )


@pytest.mark.parametrize(
    "override, message",
    [
        (["--data.tokenizer", "./no-tokenizer"], "tokenizer './no-tokenizer': no such folder"),
        (
            ["--model.model", "broken-model"],
            "broken-model/config.json, line 2: Expecting property name enclosed in double quotes: "
            "not a valid model config",
        ),
        (["--model.model", "someone/not-in-the-cache"], "model 'someone/not-in-the-cache' cannot be loaded ("),
        (["--data.train", "broken.json"], "broken.json, line 3: invalid JSON (Expecting ',' delimiter)"),
    ],
)
def test_a_missing_or_broken_input_is_one_line_naming_it(preflight, workdir, override, message):
    (workdir / "broken-model").mkdir()
    (workdir / "broken-model" / "config.json").write_text('{"model_type": "llama",\n')
    (workdir / "broken.json").write_text('[\n {"prompt": "a", "chosen": "b", "rejected": "c"}\n {"prompt": "x"}\n]\n')
    result = preflight("fit", "--config", "configs/dpo.yaml", *override)
    assert result.code == 2
    lines = result.preflight_lines()
    assert lines[-1].startswith(f"preflight: error: {message}") and "Traceback" not in result.err
    assert not (workdir / "runs").exists()


def test_a_truncated_checkpoint_is_one_line(preflight, workdir):
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    whole = (workdir / "runs/dpo/version_0/checkpoints/last.ckpt").read_bytes()
    (workdir / "cut.ckpt").write_bytes(whole[: len(whole) // 2])
    for args in (
        ["export", "cut.ckpt", "out"],
        ["validate", "--config", "configs/dpo.yaml", "--ckpt_path", "cut.ckpt"],
    ):
        result = preflight(*args)
        assert result.code == 2 and result.preflight_lines()[-1].startswith("preflight: error: cut.ckpt: cannot read")


def test_a_full_disk_during_a_save_names_the_path_and_keeps_the_previous_checkpoint(preflight, workdir, monkeypatch):
    import errno

    import preflight.checkpointing as checkpointing

    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    last = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    before = torch.load(last, weights_only=True)["global_step"]

    def no_space(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpointing.torch, "save", no_space)
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--ckpt_path", "last")
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        f"preflight: error: {last}: the checkpoint could not be written "
        "(No space left on device); the previous one is unchanged"
    )
    monkeypatch.undo()
    assert torch.load(last, weights_only=True)["global_step"] == before
    assert not list(last.parent.glob(".*.tmp"))


def cache_entries(root: Path, kind: str) -> list[Path]:
    return sorted((root / kind).glob("*.json"))


@pytest.mark.parametrize("damage", ["swapped", "emptied", "foreign", "truncated"])
def test_a_damaged_cache_entry_is_reported_and_rebuilt(preflight, workdir, tmp_path, monkeypatch, damage):
    import json

    import numpy as np

    from preflight.datamodules.store import checksum

    cache_root = tmp_path / "cache"
    monkeypatch.setenv("PREFLIGHT_CACHE", str(cache_root))
    args = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--data.val", "null"]
    assert preflight(*args).code == 0
    [entry] = [p for p in (cache_root / "tokenized").iterdir() if p.is_dir()]
    good = {name: (entry / name).read_bytes() for name in ("ids.bin", "pairs.npy", "margin.npy")}
    meta = json.loads((entry / "meta.json").read_text())
    if damage == "swapped":  # chosen and rejected exchanged in one pair: the inverse preference, were it used
        table = np.load(entry / "pairs.npy")
        start, chosen, rejected, end = table[0, 1:]
        ids = np.fromfile(entry / "ids.bin", dtype=np.int32)
        ids[chosen:end] = np.concatenate([ids[rejected:end], ids[chosen:rejected]])
        table[0, 3] = chosen + (end - rejected)
        ids.tofile(entry / "ids.bin")
        np.save(entry / "pairs.npy", table)
    elif damage == "emptied":  # even with a checksum that matches: a split without pairs is no cache
        np.save(entry / "pairs.npy", np.zeros((0, 5), dtype=np.int64))
        (entry / "meta.json").write_text(json.dumps({**meta, "checksum": checksum(entry)}))
    elif damage == "foreign":
        (entry / "meta.json").write_text(json.dumps({"pairs": "not a list"}))
    else:
        (entry / "ids.bin").write_bytes(good["ids.bin"][:100])
    result = preflight(*args)
    assert result.code == 0
    reasons = {
        "swapped": "does not match its checksum (changed or damaged)",
        "emptied": "holds no pairs",
        "foreign": "is not a preflight cache entry",
        "truncated": "does not match its checksum (changed or damaged)",
    }
    assert f"preflight: cache entry {entry} {reasons[damage]}: rebuilding it" in result.err
    assert {name: (entry / name).read_bytes() for name in good} == good  # rebuilt as it was


def test_damaged_precomputed_reference_values_are_rebuilt(preflight, workdir, tmp_path, monkeypatch):
    import json

    cache_root = tmp_path / "cache"
    monkeypatch.setenv("PREFLIGHT_CACHE", str(cache_root))
    args = ["fit", "--config", "configs/dpo.yaml", *QUICK, "--data.val", "null", "--model.reference", "precomputed"]
    assert preflight(*args).code == 0
    [entry] = cache_entries(cache_root, "reference")
    good = json.loads(entry.read_text())
    bad = json.loads(entry.read_text())
    bad["payload"]["logps"][0][0] += 5.0  # a wrong reference value
    entry.write_text(json.dumps(bad))
    result = preflight(*args, "--trainer.default_root_dir", tmp_path / "second")
    assert result.code == 0
    assert (
        f"preflight: cache entry {entry} does not match its checksum (changed or damaged): rebuilding it" in result.err
    )
    assert json.loads(entry.read_text())["payload"] == good["payload"]


@pytest.mark.parametrize(
    "sizes, message",
    [
        (
            '"tensor_parallel_size": 2',
            "trainer.strategy.tensor_parallel_size=2: preflight shards the model with FSDP2 over the data-parallel "
            "processes and has no tensor parallelism; leave tensor_parallel_size out (or 1)",
        ),
        (
            '"data_parallel_size": 1',
            "trainer.strategy.data_parallel_size=1: preflight shards over every process (2 here: num_nodes × devices); "
            "leave data_parallel_size out (or 2)",
        ),
    ],
)
def test_model_parallel_sizes_preflight_would_not_use_are_refused(preflight, workdir, sizes, message):
    strategy = '{"class_path": "lightning.pytorch.strategies.ModelParallelStrategy", "init_args": {%s}}' % sizes
    result = preflight(
        "fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.devices", "2", "--trainer.strategy", strategy
    )
    assert result.code == 2 and result.preflight_lines()[-1] == f"preflight: error: {message}"
    assert not (workdir / "runs").exists()
