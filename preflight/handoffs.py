"""What a module and its callbacks may ask of the data they train on, named as a `Protocol` rather than reached for
through a data module's private attributes. `PreferenceDataModule` implements it; so may any data module of a user's
that wants ``reference: precomputed``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch.utils.data import DataLoader


@runtime_checkable
class ReferenceData(Protocol):
    """Data whose rows can be given precomputed reference log-probs (`preflight.reference.PrecomputedReference`).

    ``dataset(split)`` has ``__len__`` and ``fingerprint()`` (a digest of exactly its rows);
    ``ordered_dataloader`` yields the documented batches (`preflight.datamodules.collate`) of the given rows, in order,
    on this process alone; ``attach_reference_logps`` lets one value per row travel with the rows from then on.
    ``use_cache`` and ``cache_dir`` say whether and where computed tables may be kept on disk.
    """

    use_cache: bool
    cache_dir: Path

    def dataset(self, split: str) -> Any: ...

    def ordered_dataloader(
        self, split: str, batch_size: int | None = None, rows: Sequence[int] | None = None
    ) -> DataLoader: ...

    def attach_reference_logps(self, split: str, chosen: Sequence[float], rejected: Sequence[float]) -> None: ...
