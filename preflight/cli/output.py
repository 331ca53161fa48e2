"""What the command prints besides the run: its version, errors as one line, preflight's warnings, and less noise
from other packages."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from ..messages import one_line  # noqa: F401  (the command's error line)

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
