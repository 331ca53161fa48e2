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

A split of **lists** (one prompt, K scored completions) is a folder of the same kind, its ``meta.json`` saying
``"kind": "lists"``: ``ids.bin`` (prompt then each completion), ``lists.npy`` [N, 5] int64 per list (its dataset
row, where its prompt starts and ends, its first completion's number and its K), ``ends.npy`` (where each
completion ends) and ``scores.npy`` (float64 per completion). `ListStore` reads it.
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

from .tokenization import TokenizedList, TokenizedPair

FILES = ("ids.bin", "pairs.npy", "margin.npy")
LIST_FILES = ("ids.bin", "lists.npy", "ends.npy", "scores.npy")


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


class ListStore:
    """Read access to a store folder of lists (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text(encoding="utf-8"))
        self.table = np.load(self.folder / "lists.npy")
        self.ends = np.load(self.folder / "ends.npy")
        self.scores = np.load(self.folder / "scores.npy")
        self._fd = os.open(self.folder / "ids.bin", os.O_RDONLY)

    def __len__(self) -> int:
        return self.table.shape[0]

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def item(self, position: int) -> TokenizedList:
        row, start, prompt_end, first, k = (int(v) for v in self.table[position])
        ends = self.ends[first : first + k]
        ids = np.frombuffer(os.pread(self._fd, (int(ends[-1]) - start) * 4, start * 4), dtype=np.int32)
        bounds = [prompt_end - start] + [int(e) - start for e in ends]
        completions = [ids[a:b].tolist() for a, b in zip(bounds, bounds[1:])]
        return TokenizedList(row, ids[: bounds[0]].tolist(), completions, self.scores[first : first + k].tolist())

    def lengths(self) -> np.ndarray:
        """Tokens of the longest row (prompt + completion) of each list: what padding depends on."""
        t, ends = self.table, self.ends
        starts = np.concatenate([[0], ends[:-1]])
        starts[t[:, 3]] = t[:, 2]  # a list's first completion starts where its prompt ends
        return (t[:, 2] - t[:, 1]) + np.maximum.reduceat(ends - starts, t[:, 3])

    def list_scores(self, position: int) -> list[float]:
        _, _, _, first, k = (int(v) for v in self.table[position])
        return self.scores[first : first + k].tolist()


class ListStoreWriter(PairStoreWriter):
    """Writes lists in arrival order; `finish` puts the folder in place."""

    def __init__(self, folder: str | Path) -> None:
        super().__init__(folder)
        self._ends: list[int] = []
        self._scores: list[float] = []

    def add(self, lists: Iterable[TokenizedList]) -> None:
        for item in lists:
            start = self._offset
            ids = np.asarray(item.prompt_ids + [t for c in item.completion_ids for t in c], dtype=np.int32)
            self._ids.write(ids.tobytes())
            prompt_end = start + len(item.prompt_ids)
            self._rows.append((item.index, start, prompt_end, len(self._ends), len(item.completion_ids)))
            end = prompt_end
            for completion in item.completion_ids:
                end += len(completion)
                self._ends.append(end)
            self._scores.extend(float(v) for v in item.scores)
            self._offset = end

    def finish(self, meta: dict[str, Any]) -> ListStore:
        self._ids.close()
        np.save(self._staging / "lists.npy", np.asarray(self._rows, dtype=np.int64).reshape(-1, 5))
        np.save(self._staging / "ends.npy", np.asarray(self._ends, dtype=np.int64))
        np.save(self._staging / "scores.npy", np.asarray(self._scores, dtype=np.float64))
        meta = {**meta, "kind": "lists", "checksum": checksum(self._staging, LIST_FILES)}
        (self._staging / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self._staging.rename(self.folder)
        return ListStore(self.folder)


def open_store(folder: Path) -> PairStore | ListStore:
    """The store in a folder, of pairs or of lists as its description says."""
    meta = json.loads((Path(folder) / "meta.json").read_text(encoding="utf-8"))
    return ListStore(folder) if meta.get("kind") == "lists" else PairStore(folder)


def checksum(folder: Path, files: tuple[str, ...] = FILES) -> str:
    h = hashlib.sha256()
    for name in files:
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
        lists = meta.get("kind") == "lists"
        if meta["checksum"] != checksum(folder, LIST_FILES if lists else FILES):
            return "does not match its checksum (changed or damaged)"
        if meta["settings"] != settings:
            return "was made with other settings"
        if lists:
            return _list_store_problem(folder, meta)
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


def _list_store_problem(folder: Path, meta: dict) -> str | None:
    table, ends = np.load(folder / "lists.npy"), np.load(folder / "ends.npy")
    n_ids = (folder / "ids.bin").stat().st_size // 4
    if table.ndim != 2 or table.shape[1] != 5 or table.shape[0] == 0:
        return "holds no lists"
    if meta["report"].get("kept") != table.shape[0]:
        return "holds a report that does not match its lists"
    starts, prompt_ends, first, k = table[:, 1], table[:, 2], table[:, 3], table[:, 4]
    fewest = 1 if meta["report"].get("kind") == "unpaired" else 2  # an unpaired row is a list of one completion
    if not (
        (k >= fewest).all() and (first[1:] == first[:-1] + k[:-1]).all() and first[0] == 0 and len(ends) == k.sum()
    ):
        return "holds a list of the wrong shape"
    last = ends[first + k - 1]
    if not ((starts <= prompt_ends).all() and (starts[1:] == last[:-1]).all() and starts[0] == 0 and last[-1] == n_ids):
        return "holds a list of the wrong shape"
    return None
