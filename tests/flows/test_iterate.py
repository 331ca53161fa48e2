"""`preflight iterate` as a user runs it: the shipped config with the shipped politeness reward, a reward model that
`preflight fit --config configs/reward_model.yaml` trained, a SIGKILL mid-round and the run again, one-line
refusals."""

import csv
import pytest
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
import yaml
from transformers import AutoModelForCausalLM

from preflight.datamodules.tokenization import prompt_token_ids
from preflight.pretrained import load_tokenizer
from tests.conftest import ROOT
from tests.flows.conftest import QUICK
from tests.helpers import naive_sequence_logps

SMALL = ["--prompts_per_round", "6", "--samples_per_prompt", "3", "--eval_prompts", "4", "--max_new_tokens", "12"]


def metrics(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_shipped_config_runs_rounds_prints_a_line_each_and_resumes_as_done(preflight, workdir):
    args = ["iterate", "--config", "configs/iterative_dpo.yaml", "--prompts_per_round", "16", *SMALL[2:]]
    first = preflight(*args)
    assert first.code == 0, first.err[-3000:]
    out = workdir / "runs" / "iterative_dpo"
    rows = metrics(out / "metrics.csv")
    assert [int(r["round"]) for r in rows] == [1, 2]
    lines = [line for line in first.preflight_lines() if line.startswith("preflight: iterate: round ")]
    assert len(lines) == 4, lines  # per round: its samples, then its policy's evaluation
    for row in rows:
        assert int(row["samples"]) == 16 * 3 and int(row["prompts"]) == 16
        line = next(x for x in lines if x.startswith(f"preflight: iterate: round {row['round']}/2: "))
        assert f"win rate against round 0 {float(row['win_rate']):.3f}" in line
        assert f"KL to the initial policy {float(row['kl']):.3f}" in line
    # round 2 trained π_1 against π_0, on round 2's lists
    fit = yaml.safe_load((out / "rounds/2/fit.yaml").read_text())
    assert fit["model"]["init_args"]["model"] == str((out / "rounds/1/policy").absolute())
    assert fit["model"]["init_args"]["reference_model"] == str((out / "rounds/0/policy").absolute())
    assert fit["data"]["train"] == str((out / "rounds/2/completions.jsonl").absolute())
    # the KL and win rate, recomputed here: naive log-probs of π_2's evaluation samples under π_2 and π_0
    tokenizer = load_tokenizer("assets/tokenizer")
    policy, initial = (
        AutoModelForCausalLM.from_pretrained(out / f"rounds/{r}/policy", dtype=torch.float32).eval() for r in (2, 0)
    )
    samples, base = read_jsonl(out / "rounds/2/eval.jsonl"), read_jsonl(out / "rounds/0/eval.jsonl")
    prompts = [json.loads(line)["prompt"] for line in (ROOT / "assets/data/train.jsonl").read_text().splitlines()]
    ratios = []
    for row in samples:
        assert row["prompt_ids"] == prompt_token_ids(tokenizer, prompts[row["index"]])
        ratios.append(
            naive_sequence_logps(policy, row["prompt_ids"], row["completion_ids"])
            - naive_sequence_logps(initial, row["prompt_ids"], row["completion_ids"])
        )
    assert abs(sum(ratios) / len(ratios) - float(rows[1]["kl"])) < 1e-4
    wins = [
        1.0 if a["reward"] > b["reward"] else 0.5 if a["reward"] == b["reward"] else 0.0 for a, b in zip(samples, base)
    ]
    assert abs(sum(wins) / len(wins) - float(rows[1]["win_rate"])) < 1e-9

    again = preflight(*args)
    assert again.code == 0, again.err[-2000:]
    lines = again.preflight_lines()
    assert sum("(done before)" in line for line in lines) == 2 and not any("sampled" in line for line in lines)
    assert metrics(out / "metrics.csv") == rows


def small_config(workdir: Path, name: str, **over) -> Path:
    config = {
        "rounds": 2,
        "out": f"runs/{name}",
        "prompts": "assets/data/val.jsonl",
        "prompts_per_round": 8,
        "samples_per_prompt": 3,
        "eval_prompts": 3,
        "max_new_tokens": 12,
        "reward": "tests.helpers:length_reward",
        "checkpoint_every_n_steps": 1,
        "fit": {
            "seed_everything": 0,
            "model": {
                "class_path": "preflight.PreferenceModule",
                "init_args": {
                    "model": "assets/tiny-llama",
                    "loss": {"name": "dpo", "beta": 0.1},
                    "learning_rate": 1e-3,
                },
            },
            "data": {"tokenizer": "assets/tokenizer", "batch_size": 2, "max_length": 128},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_epochs": 1,
                "enable_progress_bar": False,
                "enable_model_summary": False,
                "log_every_n_steps": 1,
            },
        },
        **over,
    }
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_a_run_killed_mid_round_resumes_at_its_step_and_ends_as_an_uninterrupted_run(preflight, workdir):
    whole = preflight("iterate", "--config", small_config(workdir, "whole"))
    assert whole.code == 0, whole.err[-3000:]
    config = small_config(workdir, "killed")
    killing = yaml.safe_load(config.read_text())
    killing["fit"]["trainer"]["callbacks"] = [{"class_path": "tests.helpers.KillAt", "init_args": {"step": 2}}]
    (workdir / "killing.yaml").write_text(yaml.safe_dump(killing))
    killed = subprocess.run(
        [str(Path(sys.executable).parent / "preflight"), "iterate", "--config", "killing.yaml"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert killed.returncode == -9, killed.stderr[-2000:]
    out = workdir / "runs" / "killed"
    assert (out / "rounds/1/completions.jsonl").is_file() and not (out / "rounds/1/policy").exists()
    samples = (out / "rounds/1/completions.jsonl").read_text()

    resumed = preflight("iterate", "--config", config)
    assert resumed.code == 0, resumed.err[-3000:]
    lines = resumed.preflight_lines()
    # killed at the end of step 2, before that step's checkpoint (KillAt runs before the round's ModelCheckpoint)
    assert f"preflight: resuming {out.absolute() / 'rounds/1/checkpoints/last.ckpt'} (step 1)" in lines, lines
    assert not any(line.startswith("preflight: iterate: round 1: sampled") for line in lines)  # not sampled again
    assert (out / "rounds/1/completions.jsonl").read_text() == samples
    assert (out / "rounds/1/completions.jsonl").read_text() == (
        workdir / "runs/whole/rounds/1/completions.jsonl"
    ).read_text()
    for r in (1, 2):
        a, b = (
            AutoModelForCausalLM.from_pretrained(workdir / f"runs/{name}/rounds/{r}/policy").state_dict()
            for name in ("whole", "killed")
        )
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6, f"round {r}"
    assert metrics(out / "metrics.csv")[1]["steps"] == metrics(workdir / "runs/whole/metrics.csv")[1]["steps"]


def test_a_reward_model_trained_by_the_shipped_config_scores_the_rounds(preflight, workdir):
    assert preflight("fit", "--config", "configs/reward_model.yaml", *QUICK).code == 0
    config = small_config(workdir, "rm", rounds=1, reward=None, reward_model="runs/reward_model")
    run = preflight("iterate", "--config", config)
    assert run.code == 0, run.err[-3000:]
    from preflight.export import module_from_checkpoint
    from preflight.runs import latest_checkpoint

    reward_model, _ = module_from_checkpoint(latest_checkpoint(workdir / "runs/reward_model"))
    tokenizer = load_tokenizer("assets/tokenizer")
    row = read_jsonl(workdir / "runs/rm/rounds/1/completions.jsonl")[0]
    for completion, stored in zip(row["completions"], row["scores"]):
        ids = tokenizer(row["prompt"] + completion + tokenizer.eos_token)["input_ids"]
        with torch.no_grad():  # one unpadded sequence: the score at its last token
            expected = reward_model.model(input_ids=torch.tensor([ids])).logits[0, 0].item()
        assert abs(stored - expected) < 1e-4, (stored, expected)


def test_refusals_are_one_line_with_exit_2(preflight, workdir):
    bad_reward = preflight(
        "iterate", "--config", small_config(workdir, "nan", rounds=1, reward="tests.helpers:nan_reward")
    )
    assert bad_reward.code == 2
    assert (
        bad_reward.err.strip()
        .splitlines()[-1]
        .startswith("preflight: error: round 1: the reward of prompt 0's completion 2 is not finite (nan)")
    ), bad_reward.err
    bad_setting = preflight("iterate", "--config", small_config(workdir, "one", samples_per_prompt=1))
    assert bad_setting.code == 2
    assert bad_setting.err.strip() == "preflight: error: samples_per_prompt must be at least 2, got 1"
    assert not (workdir / "runs" / "one").exists()


def test_lora_rounds_with_the_previous_policy_as_reference(preflight, workdir):
    """A LoRA policy: each round trains a fresh adapter on the merged previous policy, whose adapter-disabled model
    is the reference (`reference: previous`); the exported policies are merged folders."""
    config = small_config(workdir, "lora", reference="previous", eval_prompts=0)
    lora = yaml.safe_load(config.read_text())
    lora["fit"]["model"]["init_args"]["peft"] = {"r": 4, "lora_alpha": 8, "target_modules": "all-linear"}
    config.write_text(yaml.safe_dump(lora))
    run = preflight("iterate", "--config", config)
    assert run.code == 0, run.err[-3000:]
    out = workdir / "runs/lora"
    fit = yaml.safe_load((out / "rounds/2/fit.yaml").read_text())["model"]["init_args"]
    assert fit["reference"] == "adapter" and "reference_model" not in fit
    assert "reference: " not in next(line for line in run.preflight_lines() if line.startswith("preflight: log-probs"))
    for r in (1, 2):
        assert not (out / f"rounds/{r}/policy/adapter_config.json").exists()
        assert (out / f"rounds/{r}/policy/model.safetensors").is_file()
    first, second = (AutoModelForCausalLM.from_pretrained(out / f"rounds/{r}/policy").state_dict() for r in (1, 2))
    assert max((first[k] - second[k]).abs().max().item() for k in first) > 0  # round 2 trained on


PREFLIGHT = str(Path(sys.executable).parent / "preflight")


def run_iterate(workdir, config) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PREFLIGHT, "iterate", "--config", str(config)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "PREFLIGHT_TEST_KILL": "1"},
    )


def test_a_rerun_resumes_only_what_it_would_have_produced(preflight, workdir):
    """Killed mid-way through round 1's sampling, then rerun: another samples_per_prompt, reward or initial model is
    refused in one line naming the key and the round, leaving the sampled rows as they were; the same settings
    resume and finish."""
    import shutil

    shutil.copytree(ROOT / "assets/tiny-llama", workdir / "model")
    over = {"rounds": 1, "eval_prompts": 0, "sample_batch": 2}
    killing = small_config(workdir, "k", reward="tests.helpers:length_reward_killed_on_third_call", **over)
    config = yaml.safe_load(killing.read_text())
    config["fit"]["model"]["init_args"]["model"] = "model"
    killing.write_text(yaml.safe_dump(config))
    assert run_iterate(workdir, killing).returncode == -9  # SIGKILL at the third prompt's reward (the second batch)
    partial = workdir / "runs/k/rounds/1/completions.partial.jsonl"
    kept = partial.read_text()
    assert len(kept.splitlines()) == 2  # the first batch of two prompts was written before the kill
    cases = {
        "samples_per_prompt": (
            {"samples_per_prompt": 4},
            "round 1 was run with samples_per_prompt=3, this config gives 4",
        ),
        "reward": (
            {"reward": "tests.helpers:negative_length_reward"},
            "round 1 was run with reward='tests.helpers:length_reward_killed_on_third_call', this config gives "
            "'tests.helpers:negative_length_reward'",
        ),
        "prompts": ({"prompts": "assets/data/train.jsonl"}, "round 1 was run with prompts_content="),
        "temperature": ({"temperature": 0.7}, "round 1 was run with temperature=1.0, this config gives 0.7"),
    }
    for name, (change, message) in cases.items():
        path = workdir / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**config, **change}))
        result = preflight("iterate", "--config", path)
        assert result.code == 2, name
        (line,) = result.preflight_lines()
        assert line.startswith(f"preflight: error: runs/k: {message}"), line
        assert line.endswith(
            "a rerun resumes only what it would have produced (to start over, remove runs/k or give another --out)"
        )
        assert partial.read_text() == kept  # nothing sampled, nothing rescored
    config_json = workdir / "model/config.json"
    config_json.write_text(config_json.read_text().replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    changed = workdir / "same.yaml"
    changed.write_text(yaml.safe_dump(config))
    result = preflight("iterate", "--config", changed)
    assert result.code == 2 and "round 0 was run with initial_model_content=" in result.err
    config_json.write_text(config_json.read_text().replace('"rms_norm_eps": 1e-05', '"rms_norm_eps": 1e-06'))
    resumed = preflight("iterate", "--config", changed)  # no PREFLIGHT_TEST_KILL here: it scores as length_reward
    assert resumed.code == 0, resumed.err[-3000:]
    rows = read_jsonl(workdir / "runs/k/rounds/1/completions.jsonl")
    assert [r["prompt_index"] for r in rows][:2] == [json.loads(x)["prompt_index"] for x in kept.splitlines()]
    assert len(rows) > 2


def test_a_fit_override_that_cannot_apply_is_refused_before_sampling(preflight, workdir):
    config = small_config(workdir, "o", rounds=1)
    result = preflight("iterate", "--config", config, "--fit.trainer.max_stepz", "3")
    assert result.code == 2
    assert result.preflight_lines() == [
        "preflight: error: fit: Subcommand 'fit' does not accept option 'trainer.max_stepz' "
        "(did you mean 'trainer.max_steps'?)"
    ]
    assert not (workdir / "runs" / "o").exists()


@pytest.mark.parametrize(
    "reward, problem",
    [
        ("reward_returning_none", "returned None, not a list of 3 numbers (one per completion)"),
        ("reward_returning_a_scalar", "returned float 1.0, not a list of 3 numbers (one per completion)"),
        ("reward_returning_strings", "score 1 is str 'good', not a number"),
        ("reward_returning_bools", "score 1 is bool True, not a number"),
        (
            "reward_that_raises",
            "raised KeyError: 'score' (PREFLIGHT_DEBUG=1 shows its traceback)",
        ),
    ],
)
def test_a_reward_that_misbehaves_ends_in_one_line_naming_it_the_round_and_the_prompt(
    preflight, workdir, reward, problem
):
    config = small_config(workdir, "r", rounds=1, reward=f"tests.helpers:{reward}", eval_prompts=0)
    result = preflight("iterate", "--config", config)
    assert result.code == 2
    (line,) = [x for x in result.err.splitlines() if x.startswith("preflight: error")]
    separator = " " if problem.startswith(("returned", "raised")) else ": "
    assert line == f"preflight: error: reward 'tests.helpers:{reward}' (round 1, prompt 0){separator}{problem}"
    assert "Traceback" not in result.err


def test_a_rounds_fit_holds_no_model_but_the_policy_and_its_reference(preflight, workdir):
    """The sampling policy (and the evaluation's initial policy) are freed before the round's fit: the fit sees the
    policy and the reference copy, two models of the tiny Llama's embedding size, and no other."""
    config = small_config(workdir, "m", rounds=1, eval_prompts=2)
    loaded = yaml.safe_load(config.read_text())
    count = workdir / "live.txt"
    loaded["fit"]["trainer"]["callbacks"] = [
        {"class_path": "tests.helpers.LiveModels", "init_args": {"path": str(count), "size": 384 * 64}}
    ]
    config.write_text(yaml.safe_dump(loaded))
    result = preflight("iterate", "--config", config)
    assert result.code == 0, result.err[-3000:]
    assert count.read_text() == "2"


def test_a_round_that_produced_nothing_takes_the_new_settings(preflight, workdir):
    """A reward that raised at the first prompt left a record but no rows: the rerun with another reward runs."""
    failed = preflight(
        "iterate", "--config", small_config(workdir, "f", rounds=1, reward="tests.helpers:reward_that_raises")
    )
    assert failed.code == 2
    fixed = preflight("iterate", "--config", small_config(workdir, "f", rounds=1))
    assert fixed.code == 0, fixed.err[-3000:]
    assert (
        json.loads((workdir / "runs/f/rounds/1/settings.json").read_text())["reward"] == "tests.helpers:length_reward"
    )
