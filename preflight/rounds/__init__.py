"""Iterative rounds (`preflight iterate`): sample from the current policy, score, pair, train, repeat."""

from .loop import run_rounds
from .samples import RoundError
from .settings import IterateSettings

__all__ = ["IterateSettings", "RoundError", "run_rounds"]
