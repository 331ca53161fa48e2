"""Turning a `PreferenceExample` into token ids: the prompt once, each completion after it.

Standard format, as TRL's DPOTrainer (>= 1.0) tokenizes, so the ids match it:
EOS text is appended to each completion unless it already ends with it; the prompt and
prompt+completion are tokenized whole (BOS as the tokenizer adds it), and the completion
starts where the tokenized prompt and prompt+completion diverge (usually right after the
prompt; earlier when tokens merge across the boundary).

Conversational format: the chat template renders the prompt messages with the
generation prompt, and prompt+completion messages in full; the template closes each
turn, so no extra EOS is added (TRL does the same).

Truncation (preflight's own, applied before collation): the prompt first, to
``max_prompt_length`` keeping its end (``keep_end``, next to the answer) or its start
(``keep_start``); then each completion to what ``max_length`` leaves. A pair with an
empty completion after that is dropped and counted.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Literal

from .formats import ListExample, PreferenceExample

Truncation = Literal["keep_end", "keep_start"]


@dataclass
class TokenizedPair:
    index: int
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    margin: float | None = None
    #: (chosen, rejected) reference log-probs, when precomputed; not part of the cache.
    reference_logps: tuple[float, float] | None = None
    #: pairs of the optimizer step this row is drawn for (`sampler.StepRow`); not part of the cache.
    step_pairs: int | None = None

    def to_json(self) -> list:
        return [self.index, self.prompt_ids, self.chosen_ids, self.rejected_ids, self.margin]

    @classmethod
    def from_json(cls, row: list) -> "TokenizedPair":
        return cls(*row)

    @property
    def length(self) -> int:
        """Tokens in the longer of the two rows (prompt + completion): what padding depends on."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


@dataclass
class TokenizedList:
    """One prompt's ids and the ids of its K scored completions (each tokenized after the prompt, as a pair's)."""

    index: int
    prompt_ids: list[int]
    completion_ids: list[list[int]]
    scores: list[float]
    #: units of the optimizer step this row is drawn for (`sampler.StepRow`); not part of the cache.
    step_pairs: int | None = None

    @property
    def length(self) -> int:
        """Tokens of the longest row (prompt + completion): what padding depends on."""
        return len(self.prompt_ids) + max(len(c) for c in self.completion_ids)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _ids(encoded) -> list[int]:
    if hasattr(encoded, "keys") and "input_ids" in encoded:
        encoded = encoded["input_ids"]
    return list(encoded)


def prompt_token_ids(tokenizer, prompt) -> list[int]:
    """A prompt's ids as generation takes them: the text tokenized, or the messages rendered by the chat template
    with the generation prompt (where a completion begins)."""
    if isinstance(prompt, list):
        return _ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=True))
    return _ids(tokenizer(prompt))


def tokenize_example(tokenizer, example: PreferenceExample) -> TokenizedPair:
    if example.conversational:
        render = lambda messages, gen: _ids(  # noqa: E731
            tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen, return_dict=True)
        )
        prompt_ids = render(example.prompt, True)
        full_chosen = render(example.prompt + example.chosen, False)
        full_rejected = render(example.prompt + example.rejected, False)
    else:
        eos = tokenizer.eos_token or ""
        with_eos = lambda text: text if text.endswith(eos) else text + eos  # noqa: E731
        prompt_ids = _ids(tokenizer(example.prompt))
        full_chosen = _ids(tokenizer(example.prompt + with_eos(example.chosen)))
        full_rejected = _ids(tokenizer(example.prompt + with_eos(example.rejected)))
    n = min(common_prefix_length(prompt_ids, full_chosen), common_prefix_length(prompt_ids, full_rejected))
    return TokenizedPair(example.index, prompt_ids[:n], full_chosen[n:], full_rejected[n:], example.margin)


def tokenize_list(tokenizer, example: ListExample) -> TokenizedList:
    """The prompt once and each completion after it, by the same rules as `tokenize_example`."""
    if example.conversational:
        render = lambda messages, gen: _ids(  # noqa: E731
            tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=gen, return_dict=True)
        )
        prompt_ids = render(example.prompt, True)
        full = [render(example.prompt + c, False) for c in example.completions]
    else:
        eos = tokenizer.eos_token or ""
        texts = [example.prompt] + [example.prompt + (c if c.endswith(eos) else c + eos) for c in example.completions]
        prompt_ids, *full = _ids(tokenizer(texts))
    n = min(common_prefix_length(prompt_ids, f) for f in full)
    return TokenizedList(example.index, prompt_ids[:n], [f[n:] for f in full], list(example.scores))


def truncate_list(
    item: TokenizedList, max_length: int | None, max_prompt_length: int | None, truncation: Truncation
) -> TokenizedList | None:
    """The list cut to the limits as `truncate` cuts a pair, or None when a completion would be empty."""
    prompt = item.prompt_ids
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:] if truncation == "keep_end" else prompt[:max_prompt_length]
    completions = item.completion_ids
    if max_length is not None:
        room = max_length - len(prompt)
        if room <= 0:
            return None
        completions = [c[:room] for c in completions]
    if not all(completions):
        return None
    return TokenizedList(item.index, prompt, completions, item.scores)


def truncate(
    pair: TokenizedPair, max_length: int | None, max_prompt_length: int | None, truncation: Truncation
) -> TokenizedPair | None:
    """The pair cut to the limits, or None when a completion would be empty."""
    prompt = pair.prompt_ids
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        prompt = prompt[-max_prompt_length:] if truncation == "keep_end" else prompt[:max_prompt_length]
    chosen, rejected = pair.chosen_ids, pair.rejected_ids
    if max_length is not None:
        room = max_length - len(prompt)
        if room <= 0:
            return None
        chosen, rejected = chosen[:room], rejected[:room]
    if not chosen or not rejected:
        return None
    return TokenizedPair(pair.index, prompt, chosen, rejected, pair.margin)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of everything about a tokenizer that changes the ids it produces."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(str(getattr(tokenizer, "chat_template", None)).encode())
    h.update(json.dumps([tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]).encode())
    return h.hexdigest()
