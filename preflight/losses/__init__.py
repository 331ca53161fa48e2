"""Preference losses and their registry.

from preflight.losses import register_loss, get_loss, available_losses
from preflight.losses import PreferenceLoss, LossInputs, LossOutput
"""

from .base import LossInputs, LossOutput, PreferenceLoss
from .registry import available_losses, build_loss, get_loss, loss_class, register_loss

# Importing the families registers the built-in losses.
from . import anchored, aot, bradley_terry, dpo, listwise, margin, reference_free, unpaired, weighted  # noqa: E402,F401

__all__ = [
    "LossInputs",
    "LossOutput",
    "PreferenceLoss",
    "available_losses",
    "build_loss",
    "get_loss",
    "loss_class",
    "register_loss",
]
