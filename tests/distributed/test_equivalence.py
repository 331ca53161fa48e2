"""Same results whatever the number of processes or the accumulation (CPU, gloo, 2 processes).

Each configuration runs in its own process tree through `run_training.py`; rank 0 writes the
global train loss of every step and the final weights.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("run_training.py")
# 28 pairs at 8 a step: every 4th step has 4 pairs (uneven micro-batches); 6 steps cross into a reshuffled epoch
PAIRS, STEPS = "28", "6"


def run(tmp_path, name, *args, check=True):
    out = tmp_path / f"{name}.json"
    result = subprocess.run(
        [sys.executable, str(RUNNER), str(out), *args], capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(out.read_text())
    return result


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    return run(tmp_path_factory.mktemp("single"), "single", "--batch-size", "8", "--steps", STEPS, "--pairs", PAIRS)


def assert_same_training(a, b, tol=1e-4):
    assert len(a["losses"]) == len(b["losses"])
    for step, (x, y) in enumerate(zip(a["losses"], b["losses"]), start=1):
        assert abs(x - y) <= tol, f"step {step}: loss {x} vs {y}"
    assert a["parameters"].keys() == b["parameters"].keys()
    for name in a["parameters"]:
        diff = max(abs(x - y) for x, y in zip(a["parameters"][name], b["parameters"][name]))
        assert diff <= tol, f"{name} differs by {diff}"


def test_the_first_steps_actually_train(single):
    assert single["losses"][2] < single["losses"][0] - 0.1  # so equality below is not equality of nothing


@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_of_4_equal_one_of_8(single, tmp_path, strategy):
    two = run(
        tmp_path,
        strategy,
        "--strategy",
        strategy,
        "--devices",
        "2",
        "--batch-size",
        "4",
        "--steps",
        STEPS,
        "--pairs",
        PAIRS,
    )
    assert (
        two["logps_path"]["fused_lm_head"] and single["logps_path"]["fused_lm_head"]
    )  # FSDP2 too: inside the root's forward
    assert_same_training(single, two)


def test_a_precomputed_reference_shared_out_over_two_sharded_processes_trains_as_the_copy(single, tmp_path):
    """FSDP2, 2 processes: each computes half of the 28 rows' reference log-probs (no reference model in memory);
    the gathered table trains exactly as the frozen copy of one process does."""
    two = run(
        tmp_path, "pre", "--strategy", "fsdp2", "--devices", "2", "--batch-size", "4", "--steps", STEPS,
        "--pairs", PAIRS, "--reference", "precomputed",
    )  # fmt: skip
    assert two["reference_rows_computed"] == int(PAIRS) // 2
    assert len(two["reference_table"]) == int(PAIRS)
    assert_same_training(single, two)


def test_lists_over_two_processes_train_as_on_one(tmp_path):
    """11 prompts with 3 or 4 completions, all their pairs, 4 prompts a step: 2 DDP processes of 2 prompts train as
    1 process of 4 (each step's loss the mean over its pairs, however unevenly they fall on the processes)."""
    lists = ("--lists", "--steps", "4", "--pairs", "11")
    one = run(tmp_path, "lists1", "--batch-size", "4", *lists)
    two = run(tmp_path, "lists2", "--strategy", "ddp", "--devices", "2", "--batch-size", "2", *lists)
    assert one["losses"][3] < one["losses"][0] - 0.05
    assert_same_training(one, two)


def test_accumulating_4_batches_of_2_equals_batches_of_8(single, tmp_path):
    accumulated = run(tmp_path, "acc", "--batch-size", "2", "--accumulate", "4", "--steps", STEPS, "--pairs", PAIRS)
    assert_same_training(single, accumulated)


def test_generation_evaluation_under_ddp_gathers_every_prompt_once(tmp_path):
    """5 prompts over 2 processes (3 and 2, the short share padded and dropped): the same samples, rewards and
    log-ratios as one process, since sampling is seeded per prompt."""
    args = ["--batch-size", "4", "--steps", "2", "--pairs", "28", "--generate", "5"]
    one = run(tmp_path, "gen1", *args[2:], "--batch-size", "8")
    two = run(tmp_path, "gen2", "--strategy", "ddp", "--devices", "2", *args)
    assert [r["index"] for r in two["generations"]] == [0, 1, 2, 3, 4]
    for a, b in zip(one["generations"], two["generations"]):
        assert a["policy_completion"] == b["policy_completion"] and a["policy_reward"] == b["policy_reward"]
        assert abs(a["log_ratio"] - b["log_ratio"]) <= 1e-4
