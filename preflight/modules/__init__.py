"""The LightningModules: policy training with any preference loss, and reward models."""

from .base import NonFiniteError, PreflightModule
from .preference import PreferenceModule
from .reward import RewardModule

__all__ = ["NonFiniteError", "PreferenceModule", "PreflightModule", "RewardModule"]
