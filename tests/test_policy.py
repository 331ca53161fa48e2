"""`Policy`: a model for sampling, scoring and export, without a training module."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from preflight.datamodules.collate import ListCollator
from preflight.datamodules.tokenization import TokenizedList
from preflight.policy import Policy
from tests.conftest import TINY_MODEL, TOKENIZER
from tests.helpers import naive_sequence_logps


@pytest.fixture(scope="module")
def policy():
    return Policy.load(str(TINY_MODEL), str(TOKENIZER))


def prompts(policy):
    texts = [
        "Customer: Is the lamp in stock?\nAssistant:",
        "Customer: Hi!\nAssistant:",
        "Customer: Thanks.\nAssistant:",
    ]
    return [policy.tokenizer(t)["input_ids"] for t in texts]


def test_logps_of_groups_equal_a_naive_forward_per_completion(policy):
    ids = prompts(policy)
    samples = policy.sample(ids, 3, seed=5, max_new_tokens=10)
    groups = [TokenizedList(i, p, c, [0.0] * len(c)) for i, (p, c) in enumerate(zip(ids, samples))]
    got = policy.logps(groups)
    for group, values in zip(groups, got):
        assert len(values) == len(group.completion_ids)
        for completion, value in zip(group.completion_ids, values):
            assert value == pytest.approx(naive_sequence_logps(policy.model, group.prompt_ids, completion), abs=1e-4)
    # a completion alone, as a group of one, is the same value, computed in one row
    alone = policy.logps([TokenizedList(0, ids[0], [samples[0][1]], [0.0])])
    assert alone[0][0] == pytest.approx(got[0][1], abs=1e-4)


def test_a_group_of_one_is_one_row():
    """Single samples (a KL estimate, a reward model's score) take one row each, not a pair's two."""
    batch = ListCollator(0, mode="list")([TokenizedList(i, [1, 2], [[3, 4]], [0.0]) for i in range(5)])
    assert batch["input_ids"].shape[0] == 5


def test_samples_are_seeded_by_prompt_index_whatever_the_order(policy):
    ids = prompts(policy)
    forward = policy.sample(ids, 2, seed=1, max_new_tokens=8)
    backward = policy.sample(ids[::-1], 2, seed=1, max_new_tokens=8, indices=[2, 1, 0])
    assert forward == backward[::-1]
    assert policy.sample(ids, 2, seed=2, max_new_tokens=8) != forward  # the seed matters, so equality can fail
    for completions in forward:
        for completion in completions:
            assert len(completion) <= 8 and (policy.tokenizer.eos_token_id not in completion[:-1])


def test_export_writes_a_marked_folder_with_the_same_logits(policy, tmp_path):
    out = policy.export(tmp_path / "out")
    assert json.loads((out / "preflight_export.json").read_text())["written_by"].startswith("preflight ")
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([prompts(policy)[0]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).logits, policy.model(input_ids=ids).logits, atol=1e-6)
    assert (out / "tokenizer.json").is_file()
