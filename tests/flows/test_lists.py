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


def best_of_k_by_hand(rewards_of, rows) -> float:
    """The share of lists whose best-scored completion's reward beats every other completion's (a tie: wrong)."""
    correct = 0
    for row in rows:
        rewards = rewards_of(row)
        top = max(row["scores"])
        best = max(r for r, s in zip(rewards, row["scores"]) if s == top)
        others = max(r for r, s in zip(rewards, row["scores"]) if s != top)
        correct += best > others
    return correct / len(rows)


def test_best_of_k_accuracy_of_a_dpo_policy_and_a_reward_model_equals_a_hand_count(preflight, workdir):
    """`preflight test` on a list file logs test/best_of_k_accuracy (RewardBench 2's best-of-4): for a DPO policy by its
    implicit reward log π_θ − log π_ref, for a reward model by its score; recomputed here from the checkpoints' own
    forwards, one sequence at a time."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from preflight.pretrained import load_model, load_tokenizer
    from tests.conftest import TINY_MODEL
    from tests.helpers import naive_sequence_logps

    rows = [json.loads(line) for line in open(ROOT / "assets/data/lists_val.jsonl")]
    fours = [r for r in rows if len(r["completions"]) == 4][:12]
    (workdir / "fours.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fours))
    tokenizer = load_tokenizer("assets/tokenizer")

    def ids(row, completion):
        prompt = tokenizer(row["prompt"])["input_ids"]
        full = tokenizer(row["prompt"] + completion + tokenizer.eos_token)["input_ids"]
        return prompt, full[len(prompt) :]

    def logged(run):
        metrics = list(csv.DictReader(open(workdir / "runs" / run / "version_0" / "metrics.csv")))
        return [float(r["test/best_of_k_accuracy"]) for r in metrics if r.get("test/best_of_k_accuracy")]

    assert preflight("fit", "--config", "configs/lists.yaml", *QUICK_LISTS, "--model.learning_rate", "0.01").code == 0
    test = ["--data.test", "fours.jsonl", "--ckpt_path", "last", "--trainer.enable_progress_bar", "false"]
    assert preflight("test", "--config", "configs/lists.yaml", *test).code == 0
    state = torch.load(workdir / "runs/lists/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    policy = load_model(str(TINY_MODEL), AutoModelForCausalLM)
    policy.load_state_dict({k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")})
    reference = load_model(str(TINY_MODEL), AutoModelForCausalLM)  # the seeded initial weights, as the copy held

    def implicit(row):
        return [
            naive_sequence_logps(policy, *ids(row, c)) - naive_sequence_logps(reference, *ids(row, c))
            for c in row["completions"]
        ]

    expected = best_of_k_by_hand(implicit, fours)
    assert logged("lists") == [pytest.approx(expected, abs=1e-6)]

    lists_val = ["--data.val", "assets/data/lists_val.jsonl", "--model.learning_rate", "0.01"]
    assert preflight("fit", "--config", "configs/reward_model.yaml", *QUICK_LISTS, *lists_val).code == 0
    assert preflight("test", "--config", "configs/reward_model.yaml", *test).code == 0
    state = torch.load(workdir / "runs/reward_model/version_0/checkpoints/last.ckpt", weights_only=True)["state_dict"]
    scorer = load_model(str(TINY_MODEL), AutoModelForSequenceClassification, num_labels=1).eval()
    scorer.load_state_dict({k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")})

    def scores(row):
        with torch.no_grad():
            return [
                scorer(input_ids=torch.tensor([sum(ids(row, c), [])])).logits[0, 0].item() for c in row["completions"]
            ]

    assert logged("reward_model") == [pytest.approx(best_of_k_by_hand(scores, fours), abs=1e-6)]


def test_a_reward_model_trains_on_whole_lists_with_plackett_luce_reward(preflight, workdir):
    lists = ["--data.train", "assets/data/lists_val.jsonl", "--data.val", "assets/data/lists_val.jsonl"]
    args = ["fit", "--config", "configs/reward_model.yaml", *lists, *QUICK_LISTS[2:], "--data.pairs_from_lists", "list"]
    result = preflight(*args, "--model.loss", "plackett_luce_reward")
    assert result.code == 0, result.err[-3000:]
    logged = validation(workdir, "reward_model")
    assert 0 <= logged["val/rewards/list_accuracies"] <= 1 and logged["val/loss"] > 0
    refused = preflight(*args, "--model.loss", "bradley_terry")
    assert refused.code == 2 and refused.preflight_lines()[-1] == (
        "preflight: error: loss 'bradley_terry' takes pairs, but the data gives whole lists "
        "(data.pairs_from_lists: list): choose a list-wise loss (plackett_luce_reward) or pairs_from_lists all, "
        "best_worst or consecutive"
    )
    policy = preflight("fit", "--config", "configs/lists.yaml", "--model.loss", "plackett_luce_reward")
    assert policy.code == 2 and policy.preflight_lines()[-1] == (
        "preflight: error: PreferenceModule trains a policy on log-probs; loss 'plackett_luce_reward' takes a reward "
        "model's scores (use RewardModule: --model.class_path preflight.RewardModule)"
    )
