"""What a new user sees on the first day, through the command: a generation example whose reward rises from a
step-0 baseline, logs with TRL's learning_rate and grad_norm at the steps the run prints, a checkpoint's validation
at the checkpoint's step, and no misleading lines."""

import csv
import json

import pytest

from tests.flows.conftest import QUICK


def rows(path):
    return list(csv.DictReader(open(path)))


def value(row, key):
    return float(row[key]) if row.get(key) else None


def test_the_generation_example_shows_the_reward_of_what_the_policy_writes_rising(preflight, workdir):
    result = preflight("fit", "--config", "configs/dpo_generate.yaml", "--trainer.enable_progress_bar", "false")
    assert result.code == 0, result.err[-3000:]
    generation = {
        int(r["step"]): r for r in rows(workdir / "runs/dpo_generate/version_0/metrics.csv") if r.get("val/gen/reward")
    }
    assert sorted(generation) == [0, 25, 50, 75, 100, 125, 150]  # the baseline, then every 25 steps
    baseline, last = generation[0], generation[150]
    assert value(baseline, "val/gen/kl") == pytest.approx(0.0, abs=1e-6)  # the policy is still the reference
    assert value(last, "val/gen/reward") > value(baseline, "val/gen/reward") + 0.5
    assert value(last, "val/gen/win_rate") > 0.6
    samples = rows(workdir / "runs/dpo_generate/version_0/generations.csv")
    polite = [s for s in samples if int(s["step"]) == 150 and float(s["policy_reward"]) > 0]
    assert len(polite) >= 8  # the shipped writer writes replies the rule can score, not noise


def test_logs_are_at_the_steps_the_run_prints_with_learning_rate_and_grad_norm(preflight, workdir):
    norms = workdir / "norms.jsonl"
    result = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        "--trainer.max_steps",
        "4",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.val_check_interval",
        "2",
        "--trainer.callbacks+=tests.helpers.GradNorms",
        f"--trainer.callbacks.path={norms}",
    )
    assert result.code == 0, result.err[-3000:]
    assert "preflight: fit finished at step 4" in result.preflight_lines()
    logged = rows(workdir / "runs/dpo/version_0/metrics.csv")
    train = {int(r["step"]): r for r in logged if r.get("train/loss")}
    val = [int(r["step"]) for r in logged if r.get("val/loss")]
    assert sorted(train) == [1, 2, 3, 4] and val[0] == 0 and 2 in val and max(val) == 4  # baseline, then 2 and 4
    # the schedule of configs/dpo.yaml: linear warm-up from 0 over 10 steps to 1e-3; step k applies (k − 1)/10 of it
    for k, row in train.items():
        assert value(row, "train/learning_rate") == pytest.approx(1e-3 * (k - 1) / 10, rel=1e-6, abs=1e-12)
    expected = {r["step"]: r["grad_norm"] for r in map(json.loads, norms.read_text().splitlines())}
    for k, row in train.items():
        assert value(row, "train/grad_norm") == pytest.approx(expected[k], rel=1e-5)
    assert "has no weights: building it from its config" in result.err + result.out  # a fresh model: said once


def test_a_checkpoints_validation_is_logged_at_the_checkpoints_step_without_the_random_init_line(preflight, workdir):
    fit = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3")
    assert fit.code == 0, fit.err[-3000:]
    checked = preflight(
        "validate", "--config", "configs/dpo.yaml", "--ckpt_path", "last", "--trainer.limit_val_batches", "2"
    )
    assert checked.code == 0, checked.err[-3000:]
    assert "has no weights" not in checked.err + checked.out  # the checkpoint's weights, not random ones
    last = rows(workdir / "runs/dpo/version_0/metrics.csv")[-1]
    assert int(last["step"]) == 3 and last.get("val/loss")


def test_the_progress_bar_shows_no_version_number(preflight, workdir):
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK[:-2], "--trainer.max_steps", "2")
    assert result.code == 0, result.err[-3000:]
    assert "train/loss" in result.out + result.err  # the bar was drawn, with its metrics
    assert "v_num" not in result.out + result.err


@pytest.mark.parametrize(
    "args, line",
    [
        (
            ["--model.model", "assets/tiny-lama"],
            "preflight: error: model 'assets/tiny-lama': no such folder (did you mean 'assets/tiny-llama'?)",
        ),
        (
            ["--data.batch_sise", "3"],
            "preflight: error: unrecognized arguments: --data.batch_sise 3 (did you mean 'data.batch_size'?)",
        ),
        (
            ["--config", "typo.yaml"],
            "preflight: error: Problem with given class_path 'preflight.PreferenceModule': Option 'lerning_rate' is "
            "not accepted (did you mean 'learning_rate'?)",
        ),
        (
            ["--config", "trainr.yaml"],
            "preflight: error: Subcommand 'fit' does not accept option 'trainr.max_steps' (did you mean "
            "'trainer.max_steps'?)",
        ),
        (
            ["--data.train", "columns.jsonl"],
            "preflight: error: columns.jsonl, line 1: missing field 'chosen' (the row's fields: question, good, bad; "
            "name yours with data.columns, e.g. {your_column: chosen})",
        ),
    ],
)
def test_mistakes_are_one_line_naming_the_fix(preflight, workdir, args, line):
    (workdir / "typo.yaml").write_text("model:\n  init_args:\n    lerning_rate: 0.1\n")
    (workdir / "trainr.yaml").write_text("trainr:\n  max_steps: 3\n")
    (workdir / "columns.jsonl").write_text('{"question": "Q: hi?\\nA:", "good": " thanks", "bad": " ugh"}\n')
    result = preflight("fit", "--config", "configs/dpo.yaml", *args)
    assert result.code == 2 and result.preflight_lines() == [line], result.err[-2000:]
    assert not (workdir / "runs").exists()


def test_data_columns_apply_to_the_files_that_use_those_names(preflight, workdir):
    """A renamed training file beside the shipped validation file: one columns setting serves both."""
    (workdir / "columns.jsonl").write_text('{"question": "Q: hi?\\nA:", "good": " thanks", "bad": " ugh"}\n' * 4)
    result = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK[2:],
        "--data.train",
        "columns.jsonl",
        "--data.columns",
        "{question: prompt, good: chosen, bad: rejected}",
    )
    assert result.code == 0, result.err[-2000:]
    assert "preflight: data: train columns.jsonl (4 pairs), val assets/data/val.jsonl (200 pairs)" in (
        result.preflight_lines()
    )


def test_fit_help_lists_every_option_of_the_module(preflight, workdir):
    import inspect

    from preflight.modules import PreferenceModule

    result = preflight("fit", "--help")
    assert result.code == 0
    assert "--trainer.max_steps" in result.out and "--data.batch_size" in result.out
    for name in inspect.signature(PreferenceModule.__init__).parameters:
        if name != "self":
            assert f"--model.{name} " in result.out, name
    assert "a Hugging Face id or local path of a causal LM" in result.out  # each option with its Args: text
