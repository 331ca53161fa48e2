"""An error as the one line the command prints: the message that says what is wrong, with the config key
jsonargparse names, whatever layers of wrapping it arrived in."""

from __future__ import annotations

import re

from .errors import PreflightConfigError
from .modules import NonFiniteError


def one_line(err: BaseException) -> str:
    """The message that says what is wrong, on one line.

    jsonargparse wraps errors raised while building a class in "Does not validate against
    any of the Union subtypes ..."; the original error is in the exception chain.
    """
    chain, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        chain.append(err)
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)
    ours = [e for e in chain if isinstance(e, PreflightConfigError)]
    useful = ours[:1] or [
        e
        for e in chain
        if isinstance(e, (ValueError, OSError, TypeError, NonFiniteError)) and "Union subtypes" not in str(e)
    ]
    text = re.sub(r"\s+", " ", str(useful[-1] if useful else chain[0])).strip()
    nested = re.search(r"Errors: - (.*?) - Expected a <class 'NoneType'>", text)
    if nested:
        key = re.match(r'Parser key "([^"]+)"', text)
        text = (f"{key.group(1)}: " if key else "") + nested.group(1).replace("Problem with given class_path ", "")
    literal = re.fullmatch(r"Expected a typing\.Literal\[(.*)\]\. Got value: (.*)", text)
    if literal:
        choices = ", ".join(re.findall(r"'([^']*)'", literal.group(1)))
        text = f"expected one of {choices}; got {literal.group(2)!r}"
    key = parser_key(chain)
    if key and "." in key and not ours and key not in text:
        text = f"{key}: {text}"  # jsonargparse names the key (data.batch_size, not just model) in an outer error only
    return text or type(chain[0]).__name__


def parser_key(chain: list[BaseException]) -> str | None:
    """The config key jsonargparse names in an error of the chain (``Parser key "data.max_length":``), if any; the
    innermost such key is the most precise."""
    keys = [m.group(1) for e in chain if (m := re.match(r'Parser key "([^"]+)"', str(e)))]
    return keys[-1] if keys else None
