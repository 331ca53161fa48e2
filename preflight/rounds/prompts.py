"""The prompts `preflight iterate` samples: read from any file the data module reads, a row's ``prompt`` field (or
the prompt a pair implies), with the same located errors."""

from __future__ import annotations

from typing import Any

from ..datamodules.errors import PreferenceDataError
from ..datamodules.formats import column_names, is_list_row, parse_example, parse_list_example
from ..datamodules.sources import Source, Malformed


def read_prompts(spec: Any) -> list[Any]:
    """Every row's prompt (text or messages), in order: a prompt-only row (``{"prompt": ...}``), a list row or a
    pair (its explicit or implied prompt). A row without one is an error naming its file and line."""
    names = column_names(None)
    prompts = []
    for row in Source(spec).rows():
        value = row.value
        if isinstance(value, Malformed):
            raise PreferenceDataError(f"{row.location}: {value.problem}")
        if isinstance(value, dict) and "prompt" in value and "chosen" not in value and not is_list_row(value, names):
            prompt = value["prompt"]
            if not isinstance(prompt, (str, list)) or not prompt:
                raise PreferenceDataError(f"{row.location}: field 'prompt' must be a non-empty string or messages")
        elif is_list_row(value, names):
            prompt = parse_list_example(row, names).prompt
        elif isinstance(value, dict) and ("chosen" in value or "rejected" in value):
            prompt = parse_example(row, names).prompt
        else:
            fields = ", ".join(value) if isinstance(value, dict) else type(value).__name__
            raise PreferenceDataError(
                f"{row.location}: missing field 'prompt' (the row's fields: {fields}); a prompts file holds "
                '{"prompt": ...} rows, pairs or lists'
            )
        prompts.append(prompt)
    if not prompts:
        raise PreferenceDataError(f"{Source(spec).name}: no prompts")
    return prompts


def round_prompts(count: int, round_: int, per_round: int | None) -> list[int]:
    """The prompt indices round `round_` (from 1) samples: all `count`, or the round's block of `per_round`,
    wrapping around the set."""
    if per_round is None:
        return list(range(count))
    start = (round_ - 1) * per_round
    return [(start + k) % count for k in range(min(per_round, count))]
