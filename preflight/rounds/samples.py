"""One round's data: N completions per prompt sampled from the current policy, scored, and written as a list file
(``completions.jsonl``: prompt, completions, scores, the sampling policy's log-probs), resumably.

Sampling goes through `preflight.policy.Policy.sample` (one prompt's N completions in one batch, seeded by the round
and the prompt), scoring through `generation.scoring.Reward`, and the log-probs through `Policy.logps` on the data
module's tokenization of the written texts, as K-segment rows: the
stored value of a completion is Σ_t log π(y_t | x, y_<t) of exactly the ids a fit on the file trains on (before
``max_length`` truncation), whatever engine sampled it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..datamodules.collate import ListCollator
from ..datamodules.formats import ListExample
from ..datamodules.tokenization import prompt_token_ids, tokenize_list
from ..errors import PreflightConfigError
from ..generation.scoring import completions_as_groups
from ..policy import Policy


class RoundError(PreflightConfigError):
    """A round that cannot train on what it sampled: a reward that is not finite, no prompt with two distinct
    completions."""


@dataclass
class SamplingContext:
    """What every sampling pass of a run shares.

    Args:
        tokenizer: the data module's tokenizer (its chat template applied).
        reward: the loaded `generation.scoring.Reward`.
        device: where the models sample.
        max_new_tokens: the most tokens per completion.
        temperature: the sampling temperature.
        top_p: nucleus sampling's mass.
    """

    tokenizer: Any
    reward: Any
    device: torch.device
    max_new_tokens: int
    temperature: float
    top_p: float

    @property
    def eos(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def pad(self) -> int:
        return self.tokenizer.pad_token_id

    def sampling(self, seed: int) -> dict[str, Any]:
        """`Policy.sample`'s settings for one sampling pass seeded by `seed`."""
        return {
            "seed": seed,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
        }

    def text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def round_seed(seed: int, round_: int) -> int:
    """The sampler seed of a round (prompt i's samples then use it and i: `SeededSampler`)."""
    return seed * 10_007 + round_


def as_completion(prompt: Any, text: str) -> Any:
    """A sampled text as a list row's completion: the text, or the assistant's turn after a conversational prompt."""
    return [{"role": "assistant", "content": text}] if isinstance(prompt, list) else text


def prompt_text(context: SamplingContext, prompt: Any) -> str:
    """What a reward function reads as the prompt: the text, or the rendered messages decoded."""
    return prompt if isinstance(prompt, str) else context.text(prompt_token_ids(context.tokenizer, prompt))


def score(
    context: SamplingContext,
    prompt_ids: list[list[int]],
    prompts: list[str],
    completions: list[list[int]],
    texts: list[str],
    where: str = "",
) -> list[float]:
    """The reward of each completion (`Reward`: the function on the texts, or the reward model on the ids, each
    completion a group of one after its prompt); `where` names the round and prompt in a bad reward's error."""
    batch = ListCollator(context.pad, mode="list")(completions_as_groups(prompt_ids, completions, context.eos))
    return context.reward(batch, prompts, texts, where)


def sample_lists(
    policy: Policy,
    context: SamplingContext,
    prompts: list[Any],
    indices: list[int],
    round_: int,
    seed: int,
    n: int,
    where: str,
) -> list[dict]:
    """For each prompt index: n completions from `policy`, their distinct texts with how often each was drawn
    (``counts``), their rewards (``scores``) and, where there are at least two, their log-probs. The reward model and
    the log-probs read the ids the data module makes of the written row (EOS appended), so the file scores and
    trains the same sequences."""
    ids = [prompt_token_ids(context.tokenizer, prompts[i]) for i in indices]
    drawn = policy.sample(ids, n, indices=indices, **context.sampling(round_seed(seed, round_)))
    rows, items = [], []
    for i, completions in zip(indices, drawn):
        prompt = prompts[i]
        texts = [context.text(c) for c in completions]
        distinct = list(dict.fromkeys(texts))
        written = [as_completion(prompt, text) for text in distinct]
        item = tokenize_list(context.tokenizer, ListExample(i, where, prompt, written, [0.0] * len(written)))
        K = len(distinct)
        rewards = score(
            context,
            [item.prompt_ids] * K,
            [prompt_text(context, prompt)] * K,
            item.completion_ids,
            distinct,
            f"{where}, prompt {i}",
        )
        for text, value in zip(distinct, rewards):
            if not math.isfinite(value):
                k = texts.index(text)
                raise RoundError(
                    f"{where}: the reward of prompt {i}'s completion {k + 1} is not finite ({value}): {text!r}"
                )
        row = {"prompt_index": i, "prompt": prompt, "completions": written, "scores": [float(v) for v in rewards]}
        row["counts"] = [texts.count(text) for text in distinct]
        rows.append(row)
        items.append(item)
    listed = [(row, item) for row, item in zip(rows, items) if len(row["completions"]) >= 2]
    if listed:
        for (row, _), logps in zip(listed, policy.logps([item for _, item in listed])):
            row["logps"] = logps
    return rows


def read_done(path: Path) -> list[dict]:
    """The rows a killed round already wrote (a torn last line is dropped)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def sample_round(
    policy: Policy,
    context: SamplingContext,
    prompts: list[Any],
    indices: list[int],
    round_: int,
    seed: int,
    n: int,
    batch: int,
    folder: Path,
) -> dict:
    """Sample, score and write round `round_`'s lists into ``folder/completions.jsonl`` (prompts whose samples are
    already in ``completions.partial.jsonl`` are not sampled again); returns the round's sample statistics."""
    final, partial = folder / "completions.jsonl", folder / "completions.partial.jsonl"
    folder.mkdir(parents=True, exist_ok=True)
    done = read_done(partial)
    with open(partial, "w", encoding="utf-8") as f:  # rewritten without a torn line, then appended to
        f.writelines(json.dumps(row) + "\n" for row in done)
    seen = {row["prompt_index"] for row in done}
    todo = [i for i in indices if i not in seen]
    for start in range(0, len(todo), batch):
        rows = sample_lists(policy, context, prompts, todo[start : start + batch], round_, seed, n, f"round {round_}")
        with open(partial, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
            f.flush()
            os.fsync(f.fileno())
        done += rows
    listed = [row for row in done if len(row["completions"]) >= 2]
    if not listed:
        raise RoundError(
            f"round {round_}: no prompt got 2 distinct completions out of {n} (of {len(done)} prompts): nothing to "
            "pair; raise temperature or max_new_tokens"
        )
    if not any(max(row["scores"]) > min(row["scores"]) for row in listed):
        raise RoundError(
            f"round {round_}: the reward scored every prompt's completions alike (of {len(listed)} prompts with 2 or "
            "more distinct completions): nothing to pair"
        )
    staging = final.with_suffix(".jsonl.tmp")
    staging.write_text("".join(json.dumps(row) + "\n" for row in listed), encoding="utf-8")
    staging.replace(final)
    partial.unlink()
    drawn = sum(sum(row["counts"]) for row in done)
    total = sum(s * c for row in done for s, c in zip(row["scores"], row["counts"]))
    return {
        "prompts": len(done),
        "samples": drawn,
        "sample_reward": total / max(drawn, 1),
        "lists": len(listed),
        "single": len(done) - len(listed),
    }


@torch.no_grad()
def sample_eval(policy: Policy, context: SamplingContext, prompts: list[Any], count: int, seed: int) -> list[dict]:
    """One completion from `policy` for each of the first `count` prompts (the same seed for every policy): prompt
    ids, completion ids (with their EOS), text, reward and log-prob under the policy."""
    indices = list(range(min(count, len(prompts))))
    ids = [prompt_token_ids(context.tokenizer, prompts[i]) for i in indices]
    completions = [c[0] for c in policy.sample(ids, 1, indices=indices, **context.sampling(seed))]
    texts = [context.text(c) for c in completions]
    rewards = score(
        context, ids, [prompt_text(context, prompts[i]) for i in indices], completions, texts, "evaluation prompts"
    )
    logps = sequence_logps(policy, context, ids, completions)
    return [
        {"index": i, "prompt_ids": p, "completion_ids": c, "text": t, "reward": float(r), "logp": lp}
        for i, p, c, t, r, lp in zip(indices, ids, completions, texts, rewards, logps)
    ]


def sequence_logps(policy: Policy, context: SamplingContext, prompt_ids, completions) -> list[float]:
    """log π(y|x) of each sampled completion's own ids (with its EOS), each a group of one, as `GenerationEval`
    estimates KL."""
    groups = completions_as_groups(prompt_ids, completions, context.eos)
    return [values[0] for values in policy.logps(groups)]
