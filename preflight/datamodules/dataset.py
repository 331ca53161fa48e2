"""The rows of one split (`PairDataset`: pairs, lists or unpaired rows, read from the store) and what happened to
them on the way (`SplitReport`)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from torch.utils.data import Dataset

from .errors import PreferenceDataError
from .lists import ListMode, units_of
from .store import ListStore, PairStore
from .sampler import StepRow
from .tokenization import TokenizedPair


@dataclass
class SplitReport:
    """What happened to the rows of one split."""

    source: str
    kind: str = "pairs"  # or "lists"
    rows: int = 0
    kept: int = 0
    bad: int = 0
    identical: int = 0
    truncated_away: int = 0
    #: rows whose completions truncation made identical (a pair, or a list's two differently-scored completions)
    same_after_truncation: int = 0
    first_problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        kind = "unpaired rows" if self.kind == "unpaired" else self.kind
        parts = [f"{self.source}: {self.kept} of {self.rows} {kind} kept"]
        if self.bad:
            parts.append(f"{self.bad} bad rows skipped (first: {'; '.join(self.first_problems)})")
        if self.identical:
            same = "with all scores tied" if self.kind == "lists" else "with chosen identical to rejected"
            parts.append(f"{self.identical} {same} dropped")
        if self.truncated_away:
            parts.append(f"{self.truncated_away} dropped because a completion was empty after truncation")
        if self.same_after_truncation:
            what = "two differently-scored completions" if self.kind == "lists" else "chosen and rejected"
            parts.append(f"{self.same_after_truncation} dropped because {what} were identical after truncation")
        return ", ".join(parts)


class PairDataset(Dataset):
    """The pairs of one split: read from a `PairStore` on disk (optionally a selection of its pairs), or held
    in a list; or the lists of a split of lists, read from a `ListStore` (``kind`` says which). Precomputed
    reference log-probs travel beside pairs (`attach_reference`)."""

    def __init__(
        self, pairs: "list[TokenizedPair] | PairStore | ListStore", positions: np.ndarray | None = None
    ) -> None:
        self._store = pairs if isinstance(pairs, (PairStore, ListStore)) else None
        self._list = None if self._store is not None else list(pairs)
        size = len(self._store) if self._store is not None else len(self._list)
        self._positions = np.arange(size) if positions is None else np.asarray(positions)
        self._reference: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, i: int | StepRow) -> TokenizedPair:
        step_pairs = i.step_pairs if isinstance(i, StepRow) else None
        i = i.index if isinstance(i, StepRow) else i
        position = int(self._positions[i])
        if isinstance(self._store, ListStore):  # lists, and unpaired rows (lists of one)
            item = self._store.item(position)
            return item if step_pairs is None else dataclasses.replace(item, step_pairs=step_pairs)
        pair = self._store.pair(position) if self._store is not None else self._list[position]
        if self._reference is not None:
            pair = dataclasses.replace(
                pair, reference_logps=(float(self._reference[i, 0]), float(self._reference[i, 1]))
            )
        return pair if step_pairs is None else dataclasses.replace(pair, step_pairs=step_pairs)

    @property
    def kind(self) -> str:
        """``pairs``, ``lists`` or ``unpaired`` (labelled single completions, stored as lists of one)."""
        if isinstance(self._store, ListStore):
            return self._store.meta.get("report", {}).get("kind", "lists")
        return "pairs"

    def label_counts(self) -> tuple[int, int]:
        """(desirable, undesirable) rows of an unpaired split."""
        desirable = sum(self._store.list_scores(int(p))[0] > 0.5 for p in self._positions)
        return desirable, len(self) - desirable

    def units(self, mode: ListMode) -> list[int]:
        """What each row counts for in an optimizer step: 1 a pair or an unpaired row; a list its pairs under `mode`
        (1 for ``list``)."""
        if self.kind in ("pairs", "unpaired"):
            return [1] * len(self)
        return [units_of(self._store.list_scores(int(p)), mode) for p in self._positions]

    @property
    def pairs(self) -> "_Pairs":
        """The pairs as a read-only sequence (read from disk on access)."""
        return _Pairs(self)

    @property
    def lengths(self) -> list[int]:
        if self._store is not None:
            return self._store.lengths()[self._positions].tolist()
        return [self._list[int(p)].length for p in self._positions]

    def fingerprint(self) -> str:
        """A digest of exactly these pairs: the store's checksum and the selection, or the pairs themselves."""
        h = hashlib.sha256()
        if self._store is not None:
            h.update(self._store.meta["checksum"].encode())
            h.update(np.ascontiguousarray(self._positions, dtype=np.int64).tobytes())
        else:
            for position in self._positions:
                h.update(json.dumps(self._list[int(position)].to_json()).encode())
        return h.hexdigest()

    def select(self, indices: Sequence[int]) -> "PairDataset":
        """The pairs at these indices of this dataset (sharing its store)."""
        source = self._store if self._store is not None else self._list
        return PairDataset(source, self._positions[np.asarray(indices, dtype=np.int64)])

    def attach_reference(self, chosen: Sequence[float], rejected: Sequence[float]) -> None:
        if self.kind == "lists":
            raise PreferenceDataError("precomputed reference log-probs are kept for pairs, not for lists")
        self._reference = np.stack([np.asarray(chosen, dtype=np.float64), np.asarray(rejected, dtype=np.float64)], 1)


class _Pairs(Sequence):
    def __init__(self, dataset: PairDataset) -> None:
        self._dataset = dataset

    def __len__(self) -> int:
        return len(self._dataset)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self._dataset[j] for j in range(*i.indices(len(self)))]
        return self._dataset[i if i >= 0 else len(self) + i]
