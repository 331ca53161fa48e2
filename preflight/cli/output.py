"""What the command prints besides the run: its version, errors as one line, preflight's warnings, and less noise
from other packages."""

from __future__ import annotations

import logging
import os
import re
import sys
import warnings

from ..errors import PreflightConfigError
from ..modules import NonFiniteError

EXIT_CONFIG_ERROR, EXIT_FAILED = 2, 1
EXIT_SIGNAL = {"SIGINT": 130, "SIGTERM": 143}


def version_line() -> str:
    """``preflight X.Y.Z (distribution preflight-lightning)``: the installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    from .. import DISTRIBUTION, __version__

    try:
        installed = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a checkout that was never installed
        installed = __version__
    return f"preflight {installed} (distribution {DISTRIBUTION}: pip install {DISTRIBUTION})"


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


class OneLineToStderr(logging.Handler):
    """preflight's own warnings, as the lines they are, on whatever `sys.stderr` is now."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        print(message if message.startswith("preflight") else f"preflight: {message}", file=sys.stderr, flush=True)


def show_preflight_warnings() -> None:
    logger = logging.getLogger("preflight")
    if not any(isinstance(h, OneLineToStderr) for h in logger.handlers):
        logger.addHandler(OneLineToStderr(level=logging.INFO))
        logger.setLevel(logging.INFO)
        logger.propagate = False


def quiet_third_party() -> None:
    """The command's output is about the run: no product tips, no other packages' deprecation notices
    (``PREFLIGHT_DEBUG=1`` or any ``-W`` option shows everything)."""
    if os.environ.get("PREFLIGHT_DEBUG") or sys.warnoptions:
        return
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    warnings.filterwarnings("ignore", message=r".*is deprecated.*")
    # a resumed or validated run writes into its own version folder on purpose
    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        lambda record: "💡 Tip" not in str(record.getMessage())
    )
