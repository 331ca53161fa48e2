"""Lists of completions from the command: every `pairs_from_lists` mode and a list-wise loss fit; DPO over all pairs
of the lists trains as DPO on the exploded pairs; data a loss does not take is refused in one line."""

import csv
import itertools
import json

import pytest

from tests.conftest import ROOT
from tests.flows.test_padding_free import train_metrics

QUICK_LISTS = [
    "--data.train",
    "assets/data/lists_val.jsonl",
    "--trainer.max_steps",
    "2",
    "--trainer.limit_val_batches",
    "2",
    "--trainer.val_check_interval",
    "2",
    "--trainer.enable_progress_bar",
    "false",
]


def validation(workdir, run):
    rows = list(csv.DictReader(open(workdir / "runs" / run / "version_0" / "metrics.csv")))
    return {k: float(v) for r in rows for k, v in r.items() if k.startswith("val/") and v}


@pytest.mark.parametrize(
    "mode, loss", [("all", "dpo"), ("best_worst", "dpo"), ("consecutive", "ipo"), ("list", "plackett_luce")]
)
def test_fit_on_lists_in_each_mode(preflight, workdir, mode, loss):
    result = preflight(
        "fit", "--config", "configs/lists.yaml", *QUICK_LISTS, "--data.pairs_from_lists", mode, "--model.loss", loss
    )
    assert result.code == 0, result.err[-3000:]
    lines = result.preflight_lines()
    split = "assets/data/lists_val.jsonl (50 lists)"
    assert f"preflight: data: train {split}, val {split}" in lines
    paths = next(line for line in lines if line.startswith("preflight: log-probs: "))
    assert "fused lm_head on" in paths and "shared prompt on (full attention)" in paths
    logged = validation(workdir, "lists")  # the run is named for its config
    assert 0 <= logged["val/rewards/accuracies"] <= 1 and logged["val/loss"] > 0
    assert ("val/rewards/list_accuracies" in logged) == (mode == "list")


def test_dpo_over_all_pairs_of_lists_trains_as_dpo_on_the_exploded_pairs(preflight, workdir):
    """One batch holds the whole file: the same pairs in each step, so the losses of steps 1 and 2 (after one
    update) are equal: the list batch's pair mean and gradient are those of the exploded pairs."""
    rows = [json.loads(line) for line in open(ROOT / "assets/data/lists_val.jsonl")][:6]
    (workdir / "lists.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    exploded = [
        {"prompt": r["prompt"], "chosen": r["completions"][i], "rejected": r["completions"][j]}
        for r in rows
        for i, j in itertools.permutations(range(len(r["scores"])), 2)
        if r["scores"][i] > r["scores"][j]
    ]
    (workdir / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in exploded))
    common = ["--trainer.max_steps", "2", "--trainer.log_every_n_steps", "1", "--model.warmup_steps", "0"]
    as_lists = preflight(
        "fit", "--config", "configs/lists.yaml", *common, "--data.train", "lists.jsonl", "--data.val", "null",
        "--data.batch_size", "6", "--run_name", "lists",
    )  # fmt: skip
    as_pairs = preflight(
        "fit", "--config", "configs/lists.yaml", *common, "--data.train", "pairs.jsonl", "--data.val", "null",
        "--data.batch_size", str(len(exploded)), "--run_name", "pairs",
    )  # fmt: skip
    assert as_lists.code == 0 and as_pairs.code == 0, as_lists.err[-2000:] + as_pairs.err[-2000:]
    lists, pairs = train_metrics(workdir, "lists"), train_metrics(workdir, "pairs")
    assert sorted(lists) == sorted(pairs) == [1, 2]
    assert lists[2]["train/loss"] < lists[1]["train/loss"] - 1e-3  # it trained
    for step in (1, 2):
        for name in ("train/loss", "train/rewards/margins", "train/logps/chosen", "train/rewards/accuracies"):
            assert lists[step][name] == pytest.approx(pairs[step][name], rel=2e-5, abs=1e-5), (step, name)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--data.pairs_from_lists", "list", "--model.loss", "dpo"],
            "preflight: error: loss 'dpo' takes pairs, but the data gives whole lists (data.pairs_from_lists: list): "
            "choose a list-wise loss (infonca, lipo_lambda, plackett_luce, softmax_dpo) or pairs_from_lists all, "
            "best_worst or consecutive",
        ),
        (
            ["--data.train", "assets/data/val.jsonl", "--data.val", "null", "--model.loss", "infonca"],
            "preflight: error: loss 'infonca' takes whole lists, but the data gives pairs: train it on list data "
            "(prompt, completions, scores) with data.pairs_from_lists: list",
        ),
        (
            ["--model.reference", "precomputed"],
            "preflight: error: reference: precomputed keeps one value per pair; list and unpaired data need reference: "
            "copy or adapter",
        ),
    ],
)
def test_data_the_loss_does_not_take_is_refused_in_one_line(preflight, workdir, args, message):
    result = preflight("fit", "--config", "configs/lists.yaml", *QUICK_LISTS, *args)
    assert result.code == 2
    assert result.preflight_lines()[-1] == message
    assert "Traceback" not in result.err
