"""Pairwise preference data: formats, tokenization, collation, samplers."""

from .collate import ListCollator, PreferenceCollator, list_grid, pair_rows, row_lengths
from .errors import PreferenceDataError
from .preference import PreferenceDataModule
from .sampler import PreferenceBatchSampler
from .lists import pairs_from_scores
from .tokenization import TokenizedList, TokenizedPair

__all__ = [
    "ListCollator",
    "TokenizedList",
    "list_grid",
    "pair_rows",
    "pairs_from_scores",
    "row_lengths",
    "PreferenceBatchSampler",
    "PreferenceCollator",
    "PreferenceDataError",
    "PreferenceDataModule",
    "TokenizedPair",
]
