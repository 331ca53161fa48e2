"""What a user sets about how completion log-probs are computed: one frozen dataclass, validated once."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Setting = Literal["auto", "on", "off"]


@dataclass(frozen=True)
class RowPacking:
    """How the units of a layout (a shared-prompt pair, or one sequence) are placed in rows.

    ``unit_per_row``: each unit its own row (the shared prompt without padding-free packing); ``one_row``: every
    unit of the micro-batch in one row; ``budget``: rows of at most ``tokens`` tokens, filled longest unit first
    into the emptiest row it fits, so rows come out of similar lengths (a unit longer than the budget gets its own).
    """

    kind: Literal["unit_per_row", "one_row", "budget"]
    tokens: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("unit_per_row", "one_row", "budget"):
            raise ValueError(f"row packing must be unit_per_row, one_row or budget; got {self.kind!r}")
        if (self.kind == "budget") != (self.tokens is not None):
            raise ValueError("a token budget goes with kind 'budget', and only with it")
        if self.tokens is not None and self.tokens < 1:
            raise ValueError(f"max_tokens_per_row must be a positive number of tokens or None, got {self.tokens}")

    @classmethod
    def unit_per_row(cls) -> RowPacking:
        return cls("unit_per_row")

    @classmethod
    def one_row(cls) -> RowPacking:
        return cls("one_row")

    @classmethod
    def budget(cls, tokens: int) -> RowPacking:
        return cls("budget", tokens)

    @classmethod
    def from_max_tokens(cls, max_tokens_per_row: int | None) -> RowPacking:
        """The module's ``max_tokens_per_row``: a budget, or None for one row."""
        return cls.one_row() if max_tokens_per_row is None else cls.budget(max_tokens_per_row)


@dataclass(frozen=True)
class LogpsSettings:
    """How `CompletionLogps` computes: which fast paths it may take, and their sizes.

    Args:
        fused_lm_head: ``auto`` (on where exact), ``on`` (or an error saying why not), ``off``.
        shared_prompt: idem, for one prompt computed once for its completions.
        padding_free: idem, for rows packed with several sequences.
        packing: how padding-free rows are filled (`RowPacking.one_row` or `RowPacking.budget`); flash kernels
            always take one row.
        dense_mask_max_length: the longest row a dense [L, L] mask is built for (None: no limit).
        lm_head_chunk_size: completion tokens per lm_head chunk (None: about 8M logits per chunk).
    """

    fused_lm_head: Setting = "auto"
    shared_prompt: Setting = "auto"
    padding_free: Setting = "auto"
    packing: RowPacking = field(default_factory=RowPacking.one_row)
    dense_mask_max_length: int | None = 4096
    lm_head_chunk_size: int | None = None

    def __post_init__(self) -> None:
        for name in ("fused_lm_head", "shared_prompt", "padding_free"):
            value = getattr(self, name)
            if value not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be auto, on or off; got {value!r}")
        if self.packing.kind == "unit_per_row":
            raise ValueError("padding-free packing fills rows: one_row or a budget")
