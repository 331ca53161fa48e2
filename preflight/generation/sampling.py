"""Completions sampled from a causal LM for token-id prompts, each prompt seeded by its own index.

Two small interfaces, so another engine (vLLM, SGLang) can stand in for transformers' ``generate`` later:
`Sampler` (one completion per prompt, for `GenerationEval`) and `ListSampler` (n completions per prompt, for the
rounds of `preflight iterate`). Both take token-id prompts and give token ids; the log-probs that training and the
KL estimates use are then computed by preflight's own engine (`preflight.logps`) on the data module's tokenization,
so they are exact whatever engine sampled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

Prompt = tuple[int, list[int]]  # (index in the prompt set, token ids)


class Sampler(Protocol):
    """What generation needs of a sampler: prompts in, the completions' token ids out, one per prompt."""

    def __call__(
        self, model: nn.Module, prompts: list[Prompt], eos_token_id: int, pad_token_id: int
    ) -> list[list[int]]: ...


class ListSampler(Protocol):
    """What the rounds of `preflight iterate` need of a sampler: prompts in, ``n`` completions' token ids out per
    prompt (in the prompts' order)."""

    def many(
        self, model: nn.Module, prompts: list[Prompt], n: int, eos_token_id: int, pad_token_id: int
    ) -> list[list[list[int]]]: ...


@dataclass(frozen=True)
class SeededSampler:
    """transformers' ``generate``, one prompt at a time (its ``n`` completions in one batch), seeded by (``seed``,
    prompt index): the same completions from the same weights whatever the process, the batch or the step. Samples
    from π itself by default (no top-k, top-p 1).

    Args:
        max_new_tokens: the most tokens sampled per completion (sampling also stops at the EOS token).
        temperature: the sampling temperature.
        seed: the seed prompt i's samples are drawn with is derived from it and i.
        synced: sharded weights (FSDP2): every process runs the same number of forwards.
        top_p: nucleus sampling's probability mass (1.0: the whole distribution).
    """

    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    synced: bool = False
    top_p: float = 1.0

    def __call__(
        self, model: nn.Module, prompts: list[Prompt], eos_token_id: int, pad_token_id: int
    ) -> list[list[int]]:
        return [self.one(model, index, ids, eos_token_id, pad_token_id) for index, ids in prompts]

    def many(
        self, model: nn.Module, prompts: list[Prompt], n: int, eos_token_id: int, pad_token_id: int
    ) -> list[list[list[int]]]:
        return [self.one(model, index, ids, eos_token_id, pad_token_id, n) for index, ids in prompts]

    def one(self, model: nn.Module, index: int, prompt: list[int], eos: int, pad: int, n: int | None = None):
        """Prompt `index`'s completion (token ids, up to and with its EOS token); with `n`, a list of `n` of them."""
        device = next(model.parameters()).device
        ids = torch.tensor([prompt], device=device)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed * 1_000_003 + index)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=self.temperature,
                top_k=0,
                top_p=self.top_p,
                max_new_tokens=self.max_new_tokens,
                num_return_sequences=n or 1,
                eos_token_id=eos,
                pad_token_id=pad,
                synced_gpus=self.synced,
            )
        completions = [until_eos(row[len(prompt) :].tolist(), eos) for row in out]
        return completions if n is not None else completions[0]


def until_eos(ids: list[int], eos: int) -> list[int]:
    """A sampled completion up to its EOS token (kept), without what follows (the padding of shorter rows)."""
    return ids[: ids.index(eos) + 1] if eos in ids else ids


def share_of(prompts: list[Prompt], world: int, rank: int) -> list[Prompt]:
    """This process's prompts: its equal block of them (`reference.shard`), so every process samples as many."""
    from ..reference import shard

    return [prompts[i] for i in shard(len(prompts), world, rank)]
