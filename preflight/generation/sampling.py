"""Completions sampled from a causal LM for token-id prompts, each prompt seeded by its own index."""

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


@dataclass(frozen=True)
class SeededSampler:
    """transformers' ``generate``, one prompt at a time, seeded by (``seed``, prompt index): the same completion
    from the same weights whatever the process, the batch or the step. Samples from π itself (no top-k/top-p).

    Args:
        max_new_tokens: the most tokens sampled per completion (sampling also stops at the EOS token).
        temperature: the sampling temperature.
        seed: the seed prompt i's sample is drawn with is derived from it and i.
        synced: sharded weights (FSDP2): every process runs the same number of forwards.
    """

    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    synced: bool = False

    def __call__(
        self, model: nn.Module, prompts: list[Prompt], eos_token_id: int, pad_token_id: int
    ) -> list[list[int]]:
        return [self.one(model, index, ids, eos_token_id, pad_token_id) for index, ids in prompts]

    def one(self, model: nn.Module, index: int, prompt: list[int], eos: int, pad: int) -> list[int]:
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
                top_p=1.0,
                max_new_tokens=self.max_new_tokens,
                eos_token_id=eos,
                pad_token_id=pad,
                synced_gpus=self.synced,
            )
        return out[0, len(prompt) :].tolist()


def share_of(prompts: list[Prompt], world: int, rank: int) -> list[Prompt]:
    """This process's prompts: its equal block of them (`reference.shard`), so every process samples as many."""
    from ..reference import shard

    return [prompts[i] for i in shard(len(prompts), world, rank)]
