"""The splits of a `PreferenceDataModule`: read from their sources, checked, tokenized into the cache (one process
per machine) and reported in the data line."""

from __future__ import annotations

import atexit
import itertools
import logging
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from . import cache
from .dataset import PairDataset, SplitReport
from .errors import PreferenceDataError
from .formats import (
    ListExample,
    PreferenceExample,
    column_names,
    is_list_row,
    is_unpaired_row,
    parse_example,
    parse_list_example,
    parse_unpaired_example,
    unpaired_from_pair,
)
from .parallel import Limits, available_cores, tokenize_chunks
from .lists import has_preference, same_after_truncation
from .store import ListStoreWriter, PairStoreWriter, open_store, store_problem
from .scratch import new_scratch_folder
from .sources import Source
from .tokenization import tokenizer_fingerprint


log = logging.getLogger("preflight.data")

MAX_REPORTED = 5
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
ALL_SPLITS = ("train", "val", "test")
CHUNK = 2000  # examples a worker tokenizes at a time


class SplitStores:
    """The data module's splits: each read once from its source (or the cache), with its report."""

    def prepare_splits(self, stage: str | None = None) -> None:
        """`prepare_data` for the splits of `stage` (every split for None)."""
        if not self.use_cache:
            return
        for split in STAGE_SPLITS.get(stage, ALL_SPLITS):
            source = None if split in self.datasets else self._source(split)  # already read: in the cache
            if source is not None:
                self._prepare(source)

    def dataset(self, split: str) -> PairDataset | None:
        """The tokenized split ('train', 'val' or 'test'), built (or read from the cache) on first use."""
        if split in self.datasets:
            return self.datasets[split]
        if split == "val" and self.val_spec is None and self.val_fraction > 0:
            self._carve_validation()
            return self.datasets.get("val")
        source = self._source(split)
        if source is None:
            return None
        self.datasets[split], self.reports[split] = self._prepare(source)
        return self.datasets[split]

    def _source(self, split: str) -> Source | None:
        """Where the split's rows come from (None: no such split; a carved validation split comes from train)."""
        if split == "val" and self.val_spec is None:
            return None
        spec = {"train": self.train_spec, "val": self.val_spec, "test": self.test_spec}[split]
        if spec is None:
            return None
        hub_split = {"train": self.split, "val": self.val_split, "test": self.test_split}[split]
        return Source(spec, hub_split, self.subset, self.streaming)

    def describe(self, stage: str | None = None) -> str:
        """One line naming the sources and sizes of the splits a stage uses (printed by the command)."""
        parts = []
        for split in STAGE_SPLITS.get(stage, ALL_SPLITS):
            dataset = self.dataset(split)
            if dataset is None:
                parts.append(f"{split}: none")
                continue
            report = self.reports.get(split)
            if report is None:  # carved out of train
                source = f"{self.val_fraction:g} of {self.reports['train'].source}"
            else:
                source = report.source
            if dataset.kind == "unpaired":
                desirable, undesirable = dataset.label_counts()
                size = f"{len(dataset)} unpaired: {desirable} desirable, {undesirable} undesirable"
            else:
                size = f"{len(dataset)} {dataset.kind}"
            parts.append(f"{split} {source} ({size})")
        return ", ".join(parts)

    def problem_reports(self, stage: str | None = None) -> list[str]:
        """One line per split of the stage that lost rows (bad, identical, truncated away), with the first locations."""
        reports = [self.reports[s] for s in STAGE_SPLITS.get(stage, ALL_SPLITS) if s in self.reports]
        return [r.summary() for r in reports if r.bad or r.identical or r.truncated_away or r.same_after_truncation]

    def _carve_validation(self) -> None:
        train = self.dataset("train")
        n_val = max(1, int(round(len(train) * self.val_fraction)))  # rows: pairs, or lists
        if n_val >= len(train):
            raise PreferenceDataError(f"val_fraction={self.val_fraction} leaves no training pairs out of {len(train)}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.seed)).tolist()
        val_ids, train_ids = sorted(order[:n_val]), sorted(order[n_val:])
        self.datasets["val"] = train.select(val_ids)
        self.datasets["train"] = train.select(train_ids)

    def _settings(self) -> dict:
        return {
            "max_length": self.max_length,
            "max_prompt_length": self.max_prompt_length,
            "truncation": self.truncation,
            "columns": self.columns,
            "on_bad_rows": self.on_bad_rows,
            "drop_identical": self.drop_identical,
            "max_row_chars": self.max_row_chars,
            "unpair": self.unpair,
        }

    def _prepare(self, source: Source) -> tuple[PairDataset, SplitReport]:
        """The split's store: from the cache when a verified entry exists, else tokenized into it. A file lock
        makes the processes of one machine tokenize once: the first builds, the others wait and read it."""
        settings = cache.plain(
            dict(source=source.fingerprint(), tokenizer=tokenizer_fingerprint(self.tokenizer), **self._settings())
        )
        if not self.use_cache:
            scratch = new_scratch_folder()
            self._scratch_folders.append(scratch)
            atexit.register(shutil.rmtree, scratch, True)  # a process that never reaches teardown
            return self._tokenize_source(source, scratch / "store", settings)
        folder = self.cache_dir / cache.cache_key(**settings)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock"):
            if folder.exists():
                problem = store_problem(folder, settings)
                if problem is None:
                    store = open_store(folder)
                    return PairDataset(store), SplitReport(**store.meta["report"])
                cache.report_rebuild(folder, problem)
            return self._tokenize_source(source, folder, settings)

    def _examples(self, source: Source, report: SplitReport) -> Iterator[PreferenceExample | ListExample]:
        """The usable examples of the source, in order; bad and identical rows counted (or raised). The split's
        first row says whether it holds pairs, lists or unpaired rows; a row of another kind is a bad row. With
        ``unpair``, each pair becomes two unpaired rows."""
        names = column_names(self.columns)
        kind = None
        for row in source.rows():
            report.rows += 1
            try:
                row_kind = (
                    "unpaired"
                    if is_unpaired_row(row.value, names)
                    else "lists"
                    if is_list_row(row.value, names)
                    else "pairs"
                )
                kind = kind or row_kind
                if row_kind != kind:
                    raise PreferenceDataError(
                        f"{row.location}: a row of {row_kind} in a split of {kind} (its first row holds {kind})"
                    )
                parse = {"unpaired": parse_unpaired_example, "lists": parse_list_example, "pairs": parse_example}
                example = parse[kind](row, names)
                self._check_size(example)
            except PreferenceDataError as err:
                if self.on_bad_rows == "error":
                    raise
                report.bad += 1
                if len(report.first_problems) < MAX_REPORTED:
                    report.first_problems.append(str(err))
                continue
            report.kind = "unpaired" if kind == "pairs" and self.unpair else kind
            if kind == "lists":
                if not has_preference(example.scores):
                    report.identical += 1  # all tied: no pair, no ranking
                    continue
            elif kind == "pairs" and self.drop_identical and example.chosen == example.rejected:
                report.identical += 1
                continue
            if kind == "pairs" and self.unpair:
                report.rows += 1  # the pair's rows: its chosen and its rejected
                yield from unpaired_from_pair(example)
                continue
            yield example

    def _tokenize_source(self, source: Source, folder: Path, settings: dict) -> tuple[PairDataset, SplitReport]:
        report = SplitReport(source.name)
        started, processes = time.perf_counter(), self.num_proc or available_cores()
        examples = self._examples(source, report)
        chunks = iter(lambda: list(itertools.islice(examples, CHUNK)), [])
        limits = Limits(self.max_length, self.max_prompt_length, self.truncation)
        chunks = iter(chunks)
        first = next(chunks, [])
        chunks = itertools.chain([first], chunks) if first else iter(())
        writer = ListStoreWriter(folder) if first and isinstance(first[0], ListExample) else PairStoreWriter(folder)
        try:
            for tokenized in tokenize_chunks(self.tokenizer, chunks, limits, processes):
                kept = [p for p in tokenized if p is not None]
                report.truncated_away += len(tokenized) - len(kept)
                if self.drop_identical:
                    teaching = [p for p in kept if not same_after_truncation(p)]
                    report.same_after_truncation += len(kept) - len(teaching)
                    kept = teaching
                report.kept += len(kept)
                writer.add(kept)
            if report.rows == 0:
                raise PreferenceDataError(f"{source.name}: the dataset is empty (no rows)")
            if not report.kept:
                raise PreferenceDataError(f"{source.name}: no usable {report.kind} ({report.summary()})")
        except BaseException:
            writer.abort()
            raise
        store = writer.finish({"settings": settings, "report": report.__dict__})
        log.info(
            "preflight: data: tokenized %s: %d pairs in %.1f s (%d processes)",
            source.name,
            report.kept,
            time.perf_counter() - started,
            processes,
        )
        return PairDataset(store), report

    def _check_size(self, example) -> None:
        if self.max_row_chars is None:
            return
        texts = (
            [example.prompt, *example.completions]
            if isinstance(example, ListExample)
            else [example.prompt, example.chosen, example.rejected]
        )
        size = sum(_text_length(text) for text in texts)
        if size > self.max_row_chars:
            raise PreferenceDataError(
                f"{example.location}: the row holds {size:,} characters, "
                f"more than max_row_chars ({self.max_row_chars:,})"
            )

    def attach_reference_logps(self, split: str, chosen: Sequence[float], rejected: Sequence[float]) -> None:
        """Let precomputed reference log-probs travel with the rows of `split` (one value per pair, in order)."""
        dataset = self.datasets[split]
        if not len(chosen) == len(rejected) == len(dataset):
            raise ValueError(f"{split}: {len(chosen)} reference values for {len(dataset)} pairs")
        dataset.attach_reference(chosen, rejected)

    def holds_lists(self, stage: str | None = None) -> bool:
        """Whether the splits of `stage` hold lists of completions (in whatever `pairs_from_lists` mode)."""
        return any(d is not None and d.kind == "lists" for d in map(self.dataset, STAGE_SPLITS.get(stage, ALL_SPLITS)))

    def data_kind(self, stage: str | None = None) -> str:
        """What a loss receives from the splits of `stage`: ``pairs`` (pairs, or pairs built from lists), ``lists``
        (whole lists: ``pairs_from_lists: list``) or ``unpaired`` (labelled single completions)."""
        splits = {s: d.kind for s in STAGE_SPLITS.get(stage, ALL_SPLITS) if (d := self.dataset(s)) is not None}
        kinds = set(splits.values())
        if len(kinds) > 1:
            first = next(iter(splits.values()))
            odd = next(s for s, kind in splits.items() if kind != first)
            reports = {s: r.source for s, r in self.reports.items()}
            named = "; ".join(f"data.{s} ({reports.get(s, 'carved from train')}) holds {k}" for s, k in splits.items())
            hint = ""
            if "unpaired" in kinds and not self.unpair and "pairs" in kinds:
                hint = " (data.unpair: true turns pairs into unpaired rows)"
            raise PreferenceDataError(f"the splits mix kinds: {named}; give data.{odd} in {first} too{hint}")
        if kinds == {"unpaired"}:
            return "unpaired"
        return "lists" if kinds == {"lists"} and self.pairs_from_lists == "list" else "pairs"


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return sum(len(str(m.get("content", ""))) for m in value or [] if isinstance(m, Mapping))
