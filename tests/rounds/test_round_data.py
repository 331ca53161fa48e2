"""What a round learns from: the stored log-probs against a naive recomputation, the pairs against a hand-written
rule, a resumed round's samples against an uninterrupted round's, and the prompts a round takes."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from preflight.datamodules import PreferenceDataModule
from preflight.datamodules.formats import ListExample
from preflight.datamodules.tokenization import tokenize_list
from preflight.generation.sampling import SeededSampler
from preflight.generation.scoring import Reward
from preflight.rewards import politeness
from preflight.rounds.loop import load_policy
from preflight.rounds.prompts import read_prompts, round_prompts
from preflight.rounds.samples import RoundError, SamplingContext, sample_round
from preflight.rounds.settings import IterateSettings
from tests.conftest import ROOT
from tests.helpers import naive_sequence_logps

PROMPTS = ROOT / "assets" / "data" / "val.jsonl"


@pytest.fixture(scope="module")
def sampling(tmp_path_factory):
    """The shipped tiny model (seeded random weights) saved as a policy folder, its `Policy` and a sampling context."""
    folder = tmp_path_factory.mktemp("policy")
    settings = IterateSettings(reward="preflight.rewards:politeness")
    data = PreferenceDataModule("assets/tokenizer")
    reward = Reward("preflight.rewards:politeness")
    reward.load()
    context = SamplingContext(data.tokenizer, reward, torch.device("cpu"), 24, 1.0, 1.0)
    policy = load_policy(settings, "assets/tiny-llama", context, initial=True)
    policy.model.save_pretrained(folder)
    return policy, context, folder


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_stored_logps_equal_a_naive_recomputation_under_the_sampling_policy(sampling, tmp_path):
    module, context, folder = sampling
    prompts = read_prompts(PROMPTS)
    stats = sample_round(module, context, prompts, [0, 1, 2, 3, 4], 1, 0, 4, 2, tmp_path)
    rows = rows_of(tmp_path / "completions.jsonl")
    assert stats["prompts"] == 5 and stats["samples"] == 20 and len(rows) == stats["lists"] >= 3
    naive_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    checked = 0
    for row in rows:
        item = tokenize_list(context.tokenizer, ListExample(0, "", row["prompt"], row["completions"], row["scores"]))
        assert len(row["logps"]) == len(row["completions"]) == len(row["scores"]) == len(row["counts"])
        for completion_ids, stored in zip(item.completion_ids, row["logps"]):
            expected = naive_sequence_logps(naive_model, item.prompt_ids, completion_ids)
            assert abs(stored - expected) <= 1e-4 * max(1.0, abs(expected)), (stored, expected)
            checked += 1
        assert len(set(row["completions"])) == len(row["completions"])  # distinct completions only
        assert row["scores"] == politeness([row["prompt"]] * len(row["completions"]), row["completions"])
    assert checked >= 8


def test_a_resumed_round_samples_only_what_is_missing_and_the_same_as_without_a_kill(sampling, tmp_path, monkeypatch):
    module, context, _ = sampling
    prompts = read_prompts(PROMPTS)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    sample_round(module, context, prompts, [0, 1, 2, 3], 2, 7, 3, 2, whole)
    written = (whole / "completions.jsonl").read_text().splitlines()
    resumed.mkdir()
    # a round killed after its first batch, its last line torn
    (resumed / "completions.partial.jsonl").write_text("\n".join(written[:2]) + "\n" + written[2][:40])
    sampled = []
    original = SeededSampler.many

    def counting(self, model, items, *args):
        sampled.extend(index for index, _ in items)
        return original(self, model, items, *args)

    monkeypatch.setattr(SeededSampler, "many", counting)
    sample_round(module, context, prompts, [0, 1, 2, 3], 2, 7, 3, 2, resumed)
    assert sampled == [2, 3]  # prompts 0 and 1 were kept; the torn row was sampled again
    assert (resumed / "completions.jsonl").read_text().splitlines() == written
    assert not (resumed / "completions.partial.jsonl").exists()


def test_pairs_of_a_round_file_are_the_best_against_the_worst_by_a_hand_written_rule(sampling, tmp_path):
    module, context, _ = sampling
    prompts = read_prompts(PROMPTS)
    sample_round(module, context, prompts, list(range(8)), 1, 3, 4, 4, tmp_path)
    rows = rows_of(tmp_path / "completions.jsonl")
    expected = []
    for row in rows:
        s = row["scores"]
        if max(s) > min(s):  # ties never form a pair
            best = next(k for k in range(len(s)) if s[k] == max(s))
            worst = next(k for k in range(len(s)) if s[k] == min(s))
            expected.append((row["prompt"], row["completions"][best], row["completions"][worst]))
    assert expected, "the sampled scores tie everywhere: no pair to check"
    data = PreferenceDataModule(
        "assets/tokenizer", train=str(tmp_path / "completions.jsonl"), pairs_from_lists="best_worst", use_cache=False
    )
    data.setup("fit")
    got = []
    for batch in data.train_dataloader():
        for chosen, rejected in batch["pairs"].tolist():
            text = lambda row: context.tokenizer.decode(  # noqa: E731
                batch["input_ids"][row][batch["completion_mask"][row].bool()], skip_special_tokens=True
            )
            prompt = context.tokenizer.decode(
                batch["input_ids"][chosen][: int(batch["prompt_lengths"][batch["list_index"][chosen]])],
                skip_special_tokens=True,
            )
            got.append((prompt, text(chosen), text(rejected)))
    norm = lambda triple: tuple(" ".join(t.split()) for t in triple)  # noqa: E731
    assert sorted(map(norm, got)) == sorted(map(norm, expected))


def test_a_non_finite_reward_names_the_round_prompt_and_completion(sampling, tmp_path):
    module, context, _ = sampling
    reward = Reward(lambda prompts, texts: [float("nan")] * len(texts))
    reward.load()
    bad = SamplingContext(context.tokenizer, reward, context.device, 8, 1.0, 1.0)
    with pytest.raises(RoundError, match=r"^round 3: the reward of prompt 5's completion 1 is not finite \(nan\)"):
        sample_round(module, bad, read_prompts(PROMPTS), [5], 3, 0, 2, 1, tmp_path)


def test_no_prompt_with_two_distinct_completions_is_refused(sampling, tmp_path):
    module, context, _ = sampling
    greedy = SamplingContext(context.tokenizer, context.reward, context.device, 4, 1e-6, 1.0)
    with pytest.raises(RoundError, match=r"^round 1: no prompt got 2 distinct completions out of 3 \(of 2 prompts\)"):
        sample_round(module, greedy, read_prompts(PROMPTS), [0, 1], 1, 0, 3, 2, tmp_path)


def test_prompts_come_from_prompt_pair_and_list_files_with_located_errors(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "Hi"}\n{"prompt": [{"role": "user", "content": "Yo"}]}\n')
    assert read_prompts(str(tmp_path / "p.jsonl")) == ["Hi", [{"role": "user", "content": "Yo"}]]
    pairs = read_prompts(str(PROMPTS))
    assert pairs[0] == json.loads(PROMPTS.read_text().splitlines()[0])["prompt"]
    lists = ROOT / "assets" / "data" / "lists_val.jsonl"
    assert read_prompts(str(lists))[1] == json.loads(lists.read_text().splitlines()[1])["prompt"]
    (tmp_path / "bad.jsonl").write_text('{"prompt": "Hi"}\n{"question": "no prompt"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl, line 2"):
        read_prompts(str(tmp_path / "bad.jsonl"))
    assert round_prompts(5, 1, None) == [0, 1, 2, 3, 4]
    assert round_prompts(5, 2, 2) == [2, 3] and round_prompts(5, 3, 2) == [4, 0]


def test_settings_refuse_what_cannot_run():
    ok = dict(reward="preflight.rewards:politeness")
    for bad, message in (
        (dict(samples_per_prompt=1), "samples_per_prompt must be at least 2"),
        (dict(reference="latest"), "reference must be initial or previous"),
        (dict(reward=None), "exactly one of reward"),
        (dict(fit={"trainer": {"devices": 2}}), "one device"),
    ):
        with pytest.raises(ValueError, match=message):
            IterateSettings(**{**ok, **bad}).check()


@pytest.mark.parametrize(
    "peft, rule, expected",
    [
        (None, "initial", ("copy", "rounds/0/policy")),
        (None, "previous", ("copy", "rounds/2/policy")),
        ({"r": 4}, "initial", ("copy", "rounds/0/policy")),  # the adapter-disabled model would be π_2, not π_0
        ({"r": 4}, "previous", ("adapter", None)),  # the adapter-disabled model is π_2 itself
    ],
)
def test_round_fit_config_sets_policy_reference_and_data(tmp_path, peft, rule, expected):
    from preflight.rounds.loop import fit_config

    user = {"model": {"init_args": {"model": "assets/tiny-llama", "reference": "adapter" if peft else "auto"}}}
    if peft:
        user["model"]["init_args"]["peft"] = peft
    settings = IterateSettings(fit=user, reward="x:y", reference=rule, pairs_from_lists="all")
    out = tmp_path
    config = fit_config(3, settings, out / "rounds/3", out / "rounds/2/policy", out / "rounds/0/policy")
    args = config["model"]["init_args"]
    assert config["model"]["class_path"] == "preflight.PreferenceModule"
    assert args["model"] == str(out / "rounds/2/policy")
    assert (args["reference"], args.get("reference_model")) == (
        expected[0],
        None if expected[1] is None else str(out / expected[1]),
    )
    assert config["data"]["train"] == str(out / "rounds/3/completions.jsonl")
    assert config["data"]["pairs_from_lists"] == "all"
    assert user["model"]["init_args"]["model"] == "assets/tiny-llama"  # the user's config is not changed
