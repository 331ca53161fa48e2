"""Recognising and checking one preference row: standard, implicit-prompt or conversational.

- standard: ``prompt``, ``chosen``, ``rejected`` are strings;
- implicit prompt: only ``chosen`` and ``rejected``; the prompt is their longest common
  prefix (characters for strings, whole messages for conversations), as TRL's ``extract_prompt``;
- conversational: lists of ``{role, content}`` messages, rendered by the chat template.

An optional ``margin`` (a number) is passed through for reward models.

A **list** row holds one prompt and K ≥ 2 scored completions: ``prompt``, ``completions`` (strings, or
message lists), ``scores`` (finite numbers, ties allowed). A data name with a dot reads a key of each element
of a list: ``columns: {completions.response: completions, completions.overall_score: scores}`` reads
UltraFeedback's ``completions: [{response, overall_score, ...}]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .errors import PreferenceDataError
from .sources import RawRow, Malformed

FIELDS = ("prompt", "chosen", "rejected", "margin", "completions", "scores", "completion", "label")
Messages = list[dict[str, str]]


@dataclass
class PreferenceExample:
    index: int
    location: str
    prompt: str | Messages
    chosen: str | Messages
    rejected: str | Messages
    margin: float | None = None

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


@dataclass
class ListExample:
    """One prompt and its scored completions (K ≥ 2)."""

    index: int
    location: str
    prompt: str | Messages
    completions: list[str | Messages]
    scores: list[float]

    @property
    def conversational(self) -> bool:
        return isinstance(self.completions[0], list)


def is_list_row(value: Any, names: dict[str, str]) -> bool:
    """Whether a raw row holds a list of completions (its ``completions`` column, or that column's list)."""
    return isinstance(value, Mapping) and row_names(value, names)["completions"].split(".")[0] in value


def is_unpaired_row(value: Any, names: dict[str, str]) -> bool:
    """Whether a raw row holds one labelled completion (its ``completion`` and ``label`` columns)."""
    names = row_names(value, names)
    return isinstance(value, Mapping) and names["completion"] in value and names["label"] in value


def row_names(value: Any, names: dict[str, str]) -> dict[str, str]:
    """`names` for one row: a field that ``data.columns`` renames, in a row that has no column of that name but has
    the field under its own name, is read under its own name (a shipped validation file beside a renamed train file
    works with one ``columns`` setting)."""
    if not isinstance(value, Mapping):
        return names
    out = dict(names)
    for field, key in names.items():
        outer = key.split(".")[0]
        if key != field and outer not in value and field in value:
            out[field] = field
    return out


def missing_field(where: str, key: str, value: Mapping, names: dict[str, str]) -> PreferenceDataError:
    """The error for a row without a field: which it lacks, the fields it has, and how to map them."""
    renamed = {data: ours for ours, data in names.items() if data != ours}
    mapping = (
        f"data.columns maps {', '.join(f'{d!r} to {o!r}' for d, o in renamed.items())}"
        if renamed
        else "name yours with data.columns, e.g. {your_column: " + key + "}"
    )
    fields = ", ".join(map(str, value)) or "none"
    return PreferenceDataError(f"{where}: missing field {key!r} (the row's fields: {fields}; {mapping})")


def column_names(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Our field name → the name in the data. ``columns`` maps data names to ours: {question: prompt}."""
    mapping = {f: f for f in FIELDS}
    for data_name, ours in (columns or {}).items():
        if ours not in FIELDS:
            raise PreferenceDataError(
                f"columns: {data_name!r} maps to {ours!r}, which is not one of {', '.join(FIELDS)}"
            )
        mapping[ours] = data_name
    return mapping


def parse_example(row: RawRow, names: dict[str, str]) -> PreferenceExample:
    """Check one raw row and return it normalized; raise `PreferenceDataError` naming where and what."""
    where = row.location
    if isinstance(row.value, Malformed):
        raise PreferenceDataError(f"{where}: {row.value.problem}")
    if not isinstance(row.value, Mapping):
        raise PreferenceDataError(
            f"{where}: expected an object with prompt/chosen/rejected, got {type(row.value).__name__}"
        )
    value = row.value
    names = row_names(value, names)

    def get(field: str, required: bool) -> Any:
        key = names[field]
        if key not in value:
            if required:
                raise missing_field(where, key, value, names)
            return None
        item = value[key]
        if item is None and required:
            raise PreferenceDataError(f"{where}: field {key!r} is null")
        return item

    chosen, rejected = get("chosen", True), get("rejected", True)
    prompt = get("prompt", False)
    if prompt is None and names["prompt"] in value:
        raise PreferenceDataError(
            f"{where}: field {names['prompt']!r} is null (leave the field out for an implicit prompt)"
        )
    for field, item in (("chosen", chosen), ("rejected", rejected)) + (
        (("prompt", prompt),) if prompt is not None else ()
    ):
        _check_text_or_messages(item, f"{where}: field {names[field]!r}")
    kinds = {isinstance(x, list) for x in (chosen, rejected) + ((prompt,) if prompt is not None else ())}
    if len(kinds) > 1:
        raise PreferenceDataError(f"{where}: mixes strings and message lists across prompt/chosen/rejected")
    if prompt is None:
        prompt, chosen, rejected = extract_prompt(chosen, rejected)
    if isinstance(chosen, list):
        _check_turns(prompt, chosen, rejected, where, names)
    margin = get("margin", False)
    if margin is not None:
        if isinstance(margin, bool) or not isinstance(margin, (int, float, str)):
            raise PreferenceDataError(
                f"{where}: field {names['margin']!r} must be a number, got {type(margin).__name__}"
            )
        try:
            margin = float(margin)
        except ValueError:
            raise PreferenceDataError(f"{where}: field {names['margin']!r} must be a number, got {margin!r}") from None
        if not math.isfinite(margin):
            raise PreferenceDataError(f"{where}: field {names['margin']!r} is not finite ({margin})")
        margin = as_float32(margin, f"{where}: field {names['margin']!r}")
    return PreferenceExample(row.index, where, prompt, chosen, rejected, margin)


FLOAT32_MAX = float(np.finfo(np.float32).max)


def as_float32(value: float, where: str) -> float:
    """`value` as the float32 the batch and the loss hold (so preference and ties are decided on what the loss sees),
    or a `PreferenceDataError` when float32 cannot hold it."""
    if abs(value) > FLOAT32_MAX:
        raise PreferenceDataError(
            f"{where} ({value:g}) is beyond float32's range (±{FLOAT32_MAX:.4g}), which the loss computes in"
        )
    return float(np.float32(value))


def _refuse_repeated_completions(completions: list, scores: list[float], where: str) -> None:
    """The same completion listed twice with two scores would be a pair of itself and contradictory pairs."""
    first: dict[str, int] = {}
    for k, completion in enumerate(completions):
        key = completion if isinstance(completion, str) else repr(completion)
        j = first.setdefault(key, k)
        if j != k and scores[j] != scores[k]:
            raise PreferenceDataError(
                f"{where}: completion {k + 1} repeats completion {j + 1} with another score "
                f"({scores[k]:g} against {scores[j]:g})"
            )


def _check_text_or_messages(item: Any, where: str) -> None:
    if isinstance(item, str):
        return
    if not isinstance(item, list):
        raise PreferenceDataError(
            f"{where} must be a string or a list of {{role, content}} messages, got {type(item).__name__}"
        )
    for i, message in enumerate(item, start=1):
        if not isinstance(message, Mapping):
            raise PreferenceDataError(f"{where}, message {i}: expected {{role, content}}, got {type(message).__name__}")
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                problem = "missing" if message.get(key) is None else f"not a string ({type(message[key]).__name__})"
                raise PreferenceDataError(f"{where}, message {i}: {key!r} is {problem}")


ROLES = ("system", "developer", "user", "assistant", "tool", "ipython")


def _check_turns(prompt: Messages, chosen: Messages, rejected: Messages, where: str, names: dict[str, str]) -> None:
    """A conversational pair: the prompt ends before the assistant answers; each completion is the assistant's turn."""
    for field, messages in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
        for i, message in enumerate(messages, start=1):
            if message["role"] not in ROLES:
                raise PreferenceDataError(
                    f"{where}: field {names[field]!r}, message {i}: unknown role "
                    f"{message['role']!r} (expected one of {', '.join(ROLES)})"
                )
    for field, messages in (("chosen", chosen), ("rejected", rejected)):
        if not messages:
            raise PreferenceDataError(f"{where}: field {names[field]!r} has no message after the prompt")
        if messages[0]["role"] != "assistant":
            raise PreferenceDataError(
                f"{where}: field {names[field]!r} starts with a {messages[0]['role']!r} message; "
                "the completion must be the assistant's turn"
            )
    if prompt and prompt[-1]["role"] == "assistant":
        raise PreferenceDataError(
            f"{where}: the prompt ends with an assistant message; chosen and rejected must be the "
            "assistant's answer to it, not follow it"
        )


def extract_prompt(chosen: str | Messages, rejected: str | Messages) -> tuple[Any, Any, Any]:
    """Split the longest common prefix off two completions: (prompt, chosen rest, rejected rest).

    Strings: character prefix; a space just before the divergence goes to the completions.
    Messages: whole messages in common.
    """
    n = min(len(chosen), len(rejected))
    idx = next((i for i in range(n) if chosen[i] != rejected[i]), n)
    if isinstance(chosen, str) and 0 < idx and chosen[idx - 1] == " ":
        idx -= 1
    return chosen[:idx], chosen[idx:], rejected[idx:]


def _dotted(value: Mapping, key: str, where: str) -> Any:
    """``value[key]``, or for ``list.inner`` the ``inner`` key of each element of ``value[list]``."""
    if "." not in key or key in value:
        return value.get(key)
    outer, inner = key.split(".", 1)
    items = value.get(outer)
    if items is None:
        return None
    if not isinstance(items, list):
        raise PreferenceDataError(f"{where}: field {outer!r} must be a list, got {type(items).__name__}")
    for i, item in enumerate(items, start=1):
        if not isinstance(item, Mapping) or inner not in item:
            raise PreferenceDataError(f"{where}: field {outer!r}, element {i} has no key {inner!r}")
    return [item[inner] for item in items]


def parse_list_example(row: RawRow, names: dict[str, str]) -> ListExample:
    """Check one list row (prompt, completions, scores) and return it normalized, or raise naming where and what."""
    where = row.location
    if isinstance(row.value, Malformed):
        raise PreferenceDataError(f"{where}: {row.value.problem}")
    value = row.value
    names = row_names(value, names)
    prompt = _dotted(value, names["prompt"], where)
    completions = _dotted(value, names["completions"], where)
    scores = _dotted(value, names["scores"], where)
    for field, item in (("prompt", prompt), ("completions", completions), ("scores", scores)):
        if item is None:
            if names[field].split(".")[0] not in value:
                raise missing_field(where, names[field], value, names)
            raise PreferenceDataError(f"{where}: field {names[field]!r} is null")
    _check_text_or_messages(prompt, f"{where}: field {names['prompt']!r}")
    if not isinstance(completions, list) or len(completions) < 2:
        count = len(completions) if isinstance(completions, list) else type(completions).__name__
        raise PreferenceDataError(f"{where}: field {names['completions']!r} needs at least 2 completions, got {count}")
    for k, completion in enumerate(completions, start=1):
        _check_text_or_messages(completion, f"{where}: field {names['completions']!r}, completion {k}")
    if {isinstance(c, list) for c in completions} | {isinstance(prompt, list)} != {isinstance(prompt, list)}:
        raise PreferenceDataError(f"{where}: mixes strings and message lists across prompt/completions")
    if not isinstance(scores, list) or len(scores) != len(completions):
        count = len(scores) if isinstance(scores, list) else type(scores).__name__
        raise PreferenceDataError(
            f"{where}: field {names['scores']!r} holds {count} scores for {len(completions)} completions"
        )
    checked = []
    for k, score in enumerate(scores, start=1):
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise PreferenceDataError(f"{where}: field {names['scores']!r}, score {k} is not a number ({score!r})")
        if not math.isfinite(score):
            raise PreferenceDataError(f"{where}: field {names['scores']!r}, score {k} is not finite ({score})")
        checked.append(as_float32(score, f"{where}: field {names['scores']!r}, score {k}"))
    _refuse_repeated_completions(completions, checked, f"{where}: field {names['completions']!r}")
    if isinstance(prompt, list):
        as_pair = {**names, "chosen": names["completions"], "rejected": names["completions"]}
        for k, completion in enumerate(completions, start=1):
            _check_turns(prompt, completion, completion, f"{where}, completion {k}", as_pair)
    return ListExample(row.index, where, prompt, completions, checked)


def parse_unpaired_example(row: RawRow, names: dict[str, str]) -> ListExample:
    """Check one unpaired row (prompt, completion, label) and return it as a list of one completion whose score is
    1.0 (desirable, ``label: true``) or 0.0 (undesirable); raise naming where and what."""
    where = row.location
    if isinstance(row.value, Malformed):
        raise PreferenceDataError(f"{where}: {row.value.problem}")
    value = row.value
    names = row_names(value, names)
    prompt, completion, label = (value.get(names[f]) for f in ("prompt", "completion", "label"))
    for field, item in (("prompt", prompt), ("completion", completion), ("label", label)):
        if item is None:
            if names[field] not in value:
                raise missing_field(where, names[field], value, names)
            raise PreferenceDataError(f"{where}: field {names[field]!r} is null")
    _check_text_or_messages(prompt, f"{where}: field {names['prompt']!r}")
    _check_text_or_messages(completion, f"{where}: field {names['completion']!r}")
    if isinstance(prompt, list) != isinstance(completion, list):
        raise PreferenceDataError(f"{where}: mixes a string and a message list across prompt and completion")
    if not isinstance(label, bool):
        raise PreferenceDataError(f"{where}: field {names['label']!r} must be true or false, got {label!r}")
    if isinstance(prompt, list):
        as_pair = {**names, "chosen": names["completion"], "rejected": names["completion"]}
        _check_turns(prompt, completion, completion, where, as_pair)
    return ListExample(row.index, where, prompt, [completion], [1.0 if label else 0.0])


def unpaired_from_pair(example: PreferenceExample) -> tuple[ListExample, ListExample]:
    """A pair as two unpaired rows, as TRL's ``unpair_preference_dataset``: chosen desirable, rejected undesirable
    (indices 2i and 2i + 1 of pair i)."""
    index, where = 2 * example.index, example.location
    return (
        ListExample(index, where, example.prompt, [example.chosen], [1.0]),
        ListExample(index + 1, where, example.prompt, [example.rejected], [0.0]),
    )
