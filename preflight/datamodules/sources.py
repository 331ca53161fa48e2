"""Reading raw rows from where preference data lives, each row with a human-readable location.

Supported: .jsonl, .json (an array of objects, or an object holding one), .parquet, .csv,
a Hugging Face datasets id (with `split` and `subset`), or an in-memory list of dicts.
Nothing is unpickled: JSON, Parquet and CSV are read as data only.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..shipped import shipped_path
from .errors import PreferenceDataError

FILE_TYPES = (".jsonl", ".json", ".parquet", ".csv")


@dataclass
class RawRow:
    location: str  # "train.jsonl, line 3"
    index: int  # 0-based position in the source
    value: Any  # the parsed row (a dict unless the source is malformed)


@dataclass
class Source:
    """Where a split comes from; `fingerprint()` keys the tokenization cache."""

    spec: Any
    split: str | None = None
    subset: str | None = None
    streaming: bool = False

    def __post_init__(self) -> None:
        self.written = self.spec  # as the user wrote it: the name printed for this split
        if isinstance(self.spec, (str, os.PathLike)):
            self.spec = shipped_path(self.spec)  # a relative assets/... path that is not here: the shipped copy

    @property
    def name(self) -> str:
        if isinstance(self.spec, (list, tuple)):
            return "in-memory data"
        if isinstance(self.written, (str, os.PathLike)):
            return str(self.written)
        return type(self.spec).__name__

    def kind(self) -> str:
        if isinstance(self.spec, (list, tuple)):
            return "list"
        if not isinstance(self.spec, (str, os.PathLike)):
            return "dataset"  # a datasets.Dataset instance
        path = Path(self.spec)
        suffix = path.suffix.lower()
        if path.is_dir():
            return "folder"  # a folder of data files, or one written by Dataset.save_to_disk
        if suffix in FILE_TYPES:
            if not path.is_file():
                raise PreferenceDataError(f"{self.spec}: file not found")
            return suffix
        if path.exists() and path.is_file():
            raise PreferenceDataError(
                f"{self.spec}: unknown file type {suffix or '(none)'!r}; expected one of {', '.join(FILE_TYPES)}"
            )
        if suffix and not looks_like_hub_id(str(self.spec)):
            raise PreferenceDataError(
                f"{self.spec}: unknown file type {suffix!r}; expected one of {', '.join(FILE_TYPES)}, "
                "or a Hugging Face dataset id"
            )
        return "hub"

    def fingerprint(self) -> str:
        kind = self.kind()
        h = hashlib.sha256(kind.encode())
        if kind == "list":
            h.update(json.dumps(list(self.spec), sort_keys=True, default=str).encode())
        elif kind == "dataset":
            h.update(str(getattr(self.spec, "_fingerprint", id(self.spec))).encode())
        elif kind == "hub":
            h.update(f"{self.spec}|{self.split}|{self.subset}|{self.streaming}".encode())
        elif kind == "folder":
            h.update(f"{self.split}|{self.subset}".encode())
            for file in sorted(p for p in Path(self.spec).rglob("*") if p.is_file()):
                h.update(str(file.relative_to(self.spec)).encode())
                h.update(str(file.stat().st_size).encode())
                h.update(str(file.stat().st_mtime_ns).encode())
        else:
            with open(self.spec, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        return h.hexdigest()

    def rows(self) -> Iterator[RawRow]:
        kind = self.kind()
        reader = {
            "list": self._list_rows,
            "dataset": self._dataset_rows,
            "hub": self._hub_rows,
            "folder": self._hub_rows,
            ".jsonl": self._jsonl_rows,
            ".json": self._json_rows,
            ".parquet": self._parquet_rows,
            ".csv": self._csv_rows,
        }[kind]
        yield from reader()

    def _list_rows(self) -> Iterator[RawRow]:
        for i, value in enumerate(self.spec):
            yield RawRow(f"{self.name}, row {i + 1}", i, value)

    def _jsonl_rows(self) -> Iterator[RawRow]:
        index = 0
        with open(self.spec, "rb") as f:  # decoded line by line, so a bad byte has a line number
            for line_no, raw in enumerate(f, start=1):
                location = f"{self.spec}, line {line_no}"
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")  # a byte-order mark is not data
                except UnicodeDecodeError as err:
                    yield RawRow(location, index, Malformed(_bad_utf8(err)))
                    index += 1
                    continue
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    value = Malformed(f"invalid JSON ({err.msg} at column {err.colno})")
                yield RawRow(location, index, value)
                index += 1

    def _json_rows(self) -> Iterator[RawRow]:
        raw = Path(self.spec).read_bytes()
        try:
            text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors, spreadsheets) is not data
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise PreferenceDataError(f"{self.spec}, line {line}: {_bad_utf8(err)}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise PreferenceDataError(f"{self.spec}, line {err.lineno}: invalid JSON ({err.msg})") from None
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise PreferenceDataError(f"{self.spec}: expected a JSON array of rows (or an object holding one)")
            data = lists[0]
        if not isinstance(data, list):
            raise PreferenceDataError(f"{self.spec}: expected a JSON array of rows, got {type(data).__name__}")
        for i, value in enumerate(data):
            yield RawRow(f"{self.spec}, row {i + 1}", i, value)

    def _parquet_rows(self) -> Iterator[RawRow]:
        import pyarrow.parquet as pq

        try:
            batches = pq.ParquetFile(self.spec).iter_batches(batch_size=4096)  # bounded memory, whatever the file
            i = 0
            for batch in batches:
                for value in batch.to_pylist():
                    yield RawRow(f"{self.spec}, row {i + 1}", i, value)
                    i += 1
        except (OSError, ValueError) as err:  # pyarrow's errors for corrupt files derive from these
            raise PreferenceDataError(f"{self.spec}: cannot read Parquet ({err})") from None

    def _csv_rows(self) -> Iterator[RawRow]:
        raw = Path(self.spec).read_bytes()
        try:
            raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            line = raw[: err.start].count(b"\n") + 1
            raise PreferenceDataError(f"{self.spec}, line {line}: {_bad_utf8(err)}") from None
        with open(self.spec, encoding="utf-8-sig", newline="") as f:  # a byte-order mark is not a header
            reader = csv.DictReader(f)
            for i, value in enumerate(reader):
                # line of the record's end: header is line 1
                yield RawRow(f"{self.spec}, line {reader.line_num}", i, value)

    def _hub_rows(self) -> Iterator[RawRow]:
        """A Hugging Face dataset id, or a local folder that `datasets` reads the same way (data files,
        or a folder written by ``save_to_disk``)."""
        import datasets

        split = self.split or "train"
        try:
            if Path(self.spec).is_dir() and (Path(self.spec) / "dataset_dict.json").is_file():
                ds = datasets.load_from_disk(str(self.spec))[split]
            elif Path(self.spec).is_dir() and (Path(self.spec) / "dataset_info.json").is_file():
                ds = datasets.load_from_disk(str(self.spec))
            else:
                ds = datasets.load_dataset(str(self.spec), self.subset, split=split, streaming=self.streaming)
        except Exception as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            what = "a folder" if Path(self.spec).is_dir() else "not a file"
            raise PreferenceDataError(
                f"{self.spec}: {what}, and loading it as a Hugging Face dataset failed ({first_line})"
            ) from None
        yield from self._dataset_rows(ds, name=f"{self.spec}[{split}]")

    def _dataset_rows(self, dataset: Any = None, name: str | None = None) -> Iterator[RawRow]:
        dataset = self.spec if dataset is None else dataset
        name = name or self.name
        for i, value in enumerate(dataset):
            yield RawRow(f"{name}, row {i + 1}", i, value)


def _bad_utf8(err: UnicodeDecodeError) -> str:
    """The problem, with the bad byte's column (1-based, in bytes) within its line."""
    data = err.object
    column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
    return f"not valid UTF-8 (byte 0x{data[err.start]:02x} at byte {column} of the line)"


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` (dots allowed in the name, as in ``allenai/llama-3.1-tulu-3-8b-preference-mixture``)."""
    return re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec) is not None and not spec.startswith(".")


class Malformed:
    """A row that could not be parsed; `problem` says why."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
