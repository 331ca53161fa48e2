"""Tokenized pairs on disk, read back one pair at a time.

A split is a folder of three arrays and a description:

- ``ids.bin``: the int32 token ids of every pair, prompt then chosen then rejected;
- ``pairs.npy``: [N, 5] int64 per pair: its dataset row, and where its prompt, chosen and rejected
  ids start and where they end (offsets into ``ids.bin``, in tokens);
- ``margin.npy``: float64 per pair (NaN where the data has none);
- ``meta.json``: the settings it was made with, the report of its rows, and a SHA-256 of the arrays.

Pairs are read with ``os.pread``: the token ids stay in the kernel's page cache, not in this
process's resident memory, so memory does not grow with the dataset (the [N, 5] table, 40 bytes a
pair, is the part that does). The folder is written under a temporary name and renamed into place,
so a reader never sees half of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .tokenization import TokenizedPair

FILES = ("ids.bin", "pairs.npy", "margin.npy")


class PairStore:
    """Read access to a store folder (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self.table = np.load(self.folder / "pairs.npy")
        self.margin = np.load(self.folder / "margin.npy")
        self._fd = os.open(self.folder / "ids.bin", os.O_RDONLY)

    def __len__(self) -> int:
        return self.table.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict:  # DataLoader workers reopen the file
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def pair(self, position: int) -> TokenizedPair:
        row, start, chosen, rejected, end = (int(v) for v in self.table[position])
        ids = np.frombuffer(os.pread(self._fd, (end - start) * 4, start * 4), dtype=np.int32)
        margin = float(self.margin[position])
        return TokenizedPair(
            row,
            ids[: chosen - start].tolist(),
            ids[chosen - start : rejected - start].tolist(),
            ids[rejected - start :].tolist(),
            None if np.isnan(margin) else margin,
        )

    def lengths(self) -> np.ndarray:
        """Tokens of the longer row (prompt + completion) of each pair: what padding depends on."""
        t = self.table
        return (t[:, 2] - t[:, 1]) + np.maximum(t[:, 3] - t[:, 2], t[:, 4] - t[:, 3])


class PairStoreWriter:
    """Writes pairs in arrival order, in bounded memory; `finish` puts the folder in place."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.parent.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(dir=self.folder.parent, prefix=f".{self.folder.name}."))
        self._ids = open(self._staging / "ids.bin", "wb")
        self._rows: list[tuple[int, int, int, int, int]] = []
        self._margins: list[float] = []
        self._offset = 0

    def add(self, pairs: Iterable[TokenizedPair]) -> None:
        for p in pairs:
            start = self._offset
            ids = np.asarray(p.prompt_ids + p.chosen_ids + p.rejected_ids, dtype=np.int32)
            self._ids.write(ids.tobytes())
            chosen = start + len(p.prompt_ids)
            rejected = chosen + len(p.chosen_ids)
            self._offset = rejected + len(p.rejected_ids)
            self._rows.append((p.index, start, chosen, rejected, self._offset))
            self._margins.append(np.nan if p.margin is None else float(p.margin))

    def finish(self, meta: dict[str, Any]) -> PairStore:
        self._ids.close()
        np.save(self._staging / "pairs.npy", np.asarray(self._rows, dtype=np.int64).reshape(-1, 5))
        np.save(self._staging / "margin.npy", np.asarray(self._margins, dtype=np.float64))
        meta = {**meta, "checksum": checksum(self._staging)}
        (self._staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self._staging.rename(self.folder)
        return PairStore(self.folder)

    def abort(self) -> None:
        self._ids.close()
        shutil.rmtree(self._staging, ignore_errors=True)


def checksum(folder: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def store_problem(folder: Path, settings: dict[str, Any]) -> str | None:
    """What is wrong with a store folder made with `settings`, or None when it can be used as it is."""
    try:
        meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
        if not isinstance(meta, dict) or not {"settings", "checksum", "report"} <= meta.keys():
            return "is not a preflight cache entry"
        if meta["checksum"] != checksum(folder):
            return "does not match its checksum (changed or damaged)"
        if meta["settings"] != settings:
            return "was made with other settings"
        table = np.load(folder / "pairs.npy")
        n_ids = (folder / "ids.bin").stat().st_size // 4
    except (OSError, ValueError, UnicodeDecodeError) as err:
        return f"unreadable ({type(err).__name__})"
    if table.ndim != 2 or table.shape[1] != 5 or table.shape[0] == 0:
        return "holds no pairs"
    if meta["report"].get("kept") != table.shape[0]:
        return "holds a report that does not match its pairs"
    starts, chosen, rejected, ends = table[:, 1], table[:, 2], table[:, 3], table[:, 4]
    if not (
        (starts <= chosen).all()
        and (chosen < rejected).all()
        and (rejected < ends).all()
        and (starts[1:] == ends[:-1]).all()
        and starts[0] == 0
        and ends[-1] == n_ids
    ):
        return "holds a pair of the wrong shape"
    return None
