"""Pairwise preference data: formats, tokenization, collation, samplers."""

from .collate import PreferenceCollator
from .errors import PreferenceDataError
from .preference import PreferenceDataModule
from .sampler import PreferenceBatchSampler
from .tokenization import TokenizedPair

__all__ = [
    "PreferenceBatchSampler",
    "PreferenceCollator",
    "PreferenceDataError",
    "PreferenceDataModule",
    "TokenizedPair",
]
