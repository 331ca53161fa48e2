"""Tokenizing many examples: batched calls to the tokenizer, over several processes.

The ids are those of `tokenization.tokenize_example` (one batched call of a fast tokenizer gives
the ids of separate calls), cut by `tokenization.truncate`. Chunks go to ``num_proc`` forked
workers in order and come back in order, so the store is the same whatever ``num_proc`` is.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from .formats import ListExample, PreferenceExample
from .tokenization import (
    TokenizedList,
    TokenizedPair,
    Truncation,
    common_prefix_length,
    tokenize_example,
    tokenize_list,
    truncate,
    truncate_list,
)

_WORKER_TOKENIZER = None  # set before the pool forks, so workers inherit it instead of unpickling it


@dataclass(frozen=True)
class Limits:
    max_length: int | None
    max_prompt_length: int | None
    truncation: Truncation


def tokenize_batch(
    tokenizer, examples: list[PreferenceExample] | list[ListExample], limits: Limits
) -> list[TokenizedPair | TokenizedList | None]:
    """Each example tokenized and truncated (None where a completion ends up empty); a chunk holds pairs or lists."""
    if examples and isinstance(examples[0], ListExample):
        return [
            truncate_list(tokenize_list(tokenizer, e), limits.max_length, limits.max_prompt_length, limits.truncation)
            for e in examples
        ]
    standard = [e for e in examples if not e.conversational]
    by_id: dict[int, TokenizedPair] = {}
    if standard:
        eos = tokenizer.eos_token or ""
        with_eos = lambda text: text if text.endswith(eos) else text + eos  # noqa: E731
        texts = (
            [e.prompt for e in standard]
            + [e.prompt + with_eos(e.chosen) for e in standard]
            + [e.prompt + with_eos(e.rejected) for e in standard]
        )
        ids = tokenizer(texts)["input_ids"]
        n = len(standard)
        for k, e in enumerate(standard):
            prompt, chosen, rejected = ids[k], ids[n + k], ids[2 * n + k]
            cut = min(common_prefix_length(prompt, chosen), common_prefix_length(prompt, rejected))
            by_id[id(e)] = TokenizedPair(e.index, prompt[:cut], chosen[cut:], rejected[cut:], e.margin)
    out = []
    for e in examples:
        pair = by_id.get(id(e)) or tokenize_example(tokenizer, e)
        out.append(truncate(pair, limits.max_length, limits.max_prompt_length, limits.truncation))
    return out


def _work(job: tuple[list[PreferenceExample], Limits]) -> list[TokenizedPair | None]:
    examples, limits = job
    return tokenize_batch(_WORKER_TOKENIZER, examples, limits)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def tokenize_chunks(
    tokenizer, chunks: Iterable[list[PreferenceExample]], limits: Limits, num_proc: int
) -> Iterator[list[TokenizedPair | None]]:
    """The tokenized chunks, in order; ``num_proc`` > 1 forks that many workers (where fork exists)."""
    global _WORKER_TOKENIZER
    if num_proc <= 1 or "fork" not in mp.get_all_start_methods():
        for chunk in chunks:
            yield tokenize_batch(tokenizer, chunk, limits)
        return
    _WORKER_TOKENIZER = tokenizer
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are the parallelism
    chunks = iter(chunks)
    try:
        with mp.get_context("fork").Pool(num_proc) as pool:
            while True:  # waves of a few chunks: bounded memory, and rows are parsed (and refused) here
                wave = [chunk for _, chunk in zip(range(2 * num_proc), chunks)]
                if not wave:
                    return
                yield from pool.map(_work, [(chunk, limits) for chunk in wave])
    finally:
        _WORKER_TOKENIZER = None
