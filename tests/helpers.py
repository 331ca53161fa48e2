"""Shared builders for module tests: tiny models, hand-made batches, a naive log-prob."""

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from preflight.datamodules import PreferenceCollator, TokenizedPair
from tests.conftest import TINY_MODEL


def tiny_causal_lm(seed=0, **overrides):
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(TINY_MODEL, **overrides))


def random_pairs(n=4, seed=0, vocab=384):
    g = torch.Generator().manual_seed(seed)
    rand = lambda lo, hi: int(torch.randint(lo, hi, (1,), generator=g))  # noqa: E731
    ids = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731
    return [TokenizedPair(i, [1] + ids(rand(2, 9)), ids(rand(1, 12)), ids(rand(1, 12))) for i in range(n)]


def batch_of(pairs, pad=0):
    return PreferenceCollator(pad)(pairs)


def naive_sequence_logps(model, prompt, completion):
    """One unpadded sequence; log p of each completion token from the logits, summed in float64."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    total = 0.0
    for k, token in enumerate(completion):
        total += torch.log_softmax(logits[len(prompt) + k - 1], -1)[token].item()
    return total
