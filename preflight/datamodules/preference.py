"""`PreferenceDataModule`: preference data as batches: pairs (prompt, chosen, rejected), or lists of scored
completions per prompt (`lists`)."""

from __future__ import annotations

import atexit
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from . import cache
from .collate import ListCollator, PreferenceCollator, UnpairedCollator
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
from .lists import LIST_MODES, ListMode, has_preference, same_after_truncation, units_of
from .store import ListStore, ListStoreWriter, PairStore, PairStoreWriter, open_store, store_problem
from .sampler import FlatBatchSampler, PreferenceBatchSampler, StepRow
from .scratch import new_scratch_folder
from .sources import Source
from ..pretrained import load_tokenizer
from ..shipped import shipped_path
from .tokenization import TokenizedPair, tokenizer_fingerprint

log = logging.getLogger("preflight.data")
MAX_REPORTED = 5
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}
ALL_SPLITS = ("train", "val", "test")
CHUNK = 2000  # examples a worker tokenizes at a time


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


DataSpec = str | list[dict[str, Any]] | None


class PreferenceDataModule(L.LightningDataModule):
    """Pairwise preference data for every preflight module (DPO-style and reward models).

    Args:
        tokenizer: a Hugging Face id, a local path, or a tokenizer instance.
        train: the training pairs: a path to .jsonl/.json/.parquet/.csv, a folder readable by ``datasets``, a
            Hugging Face datasets id, or a list of dicts. Formats (standard, implicit prompt, conversational)
            are detected per row.
        val: the validation pairs, in any form ``train`` takes (None: none, or ``val_fraction`` of train).
        test: the test pairs, in any form ``train`` takes.
        split: the split of a Hugging Face dataset (or folder) that ``train`` reads.
        val_split: the split that ``val`` reads from a Hugging Face dataset.
        test_split: the split that ``test`` reads from a Hugging Face dataset.
        subset: the configuration (subset) of a Hugging Face dataset.
        val_fraction: without ``val``, this fraction of ``train`` becomes validation (seeded).
        batch_size: pairs per micro-batch and process (an optimizer step takes batch_size × devices ×
            accumulate_grad_batches pairs).
        eval_batch_size: pairs per validation/test batch and process (default: ``batch_size``).
        max_length: prompt + completion tokens per row at most (the completion is cut to fit).
        max_prompt_length: prompt tokens per row at most (None: only ``max_length`` limits it).
        truncation: ``keep_end`` (default) keeps the end of a long prompt, next to the answer; ``keep_start`` its start.
        columns: names in the data mapped to ours, e.g. ``{question: prompt, good: chosen, bad: rejected}``.
        on_bad_rows: ``error`` (default) stops at the first bad row; ``skip`` skips and reports them.
        drop_identical: drop rows that carry no preference: a pair whose chosen equals the rejected, before or after
            truncation, and a list whose differently-scored completions truncation made identical.
        group_by_length: length-grouped batches for training (less padding).
        pad_to_multiple_of: round the padded length up to a multiple of this.
        num_workers: DataLoader worker processes (0: load in the training process).
        seed: seed of the batch order and of the ``val_fraction`` split.
        cache_dir: where tokenized splits are cached (default ``~/.cache/preflight/tokenized``, or
            ``$PREFLIGHT_CACHE``).
        use_cache: read and write that cache (false: tokenize every time, into a temporary folder that
            `teardown` removes, or the next run if this process was killed).
        trust_remote_code: allow tokenizer code from the Hub; under the command it follows
            ``model.trust_remote_code``.
        num_proc: processes that tokenize (None: the available cores); the ids do not depend on it.
        streaming: read a Hugging Face dataset id as a stream (rows in the stream's order; nothing is
            downloaded whole before tokenization starts).
        chat_template: the Jinja chat template for conversational rows, as a path to a ``.jinja`` file or the
            template text; None: the tokenizer's own.
        unpair: turn pairs into unpaired rows, as TRL's ``unpair_preference_dataset``: each pair's chosen a desirable
            row and its rejected an undesirable one, for unpaired losses (``kto``, ``bco``, ``apo_zero_unpaired``).
            Unpaired data (``prompt``, ``completion``, ``label`` rows) needs no setting.
        pairs_from_lists: what a split of lists (``prompt``, ``completions``, ``scores`` rows) turns into: ``all``
            (every two completions with different scores), ``best_worst`` (the best against the worst),
            ``consecutive`` (adjacent ranks), or ``list`` (whole lists, for list-wise losses). Ties never form a
            pair; an optimizer step's denominator counts the pairs (the lists for ``list``). Pair data ignores it.
        max_row_chars: a row whose prompt, chosen and rejected hold more characters than this is a bad row
            (reported with its location, or skipped with ``on_bad_rows: skip``): tokenizing it would take
            about 200 bytes of memory per character, for text that truncation throws away. None: no limit.
    """

    def __init__(
        self,
        tokenizer: Any = "assets/tokenizer",
        train: DataSpec = None,
        val: DataSpec = None,
        test: DataSpec = None,
        *,
        split: str = "train",
        val_split: str = "test",
        test_split: str = "test",
        subset: str | None = None,
        val_fraction: float = 0.0,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_length: int | None = 1024,
        max_prompt_length: int | None = None,
        truncation: Literal["keep_end", "keep_start"] = "keep_end",
        columns: dict[str, str] | None = None,
        on_bad_rows: Literal["error", "skip"] = "error",
        drop_identical: bool = True,
        group_by_length: bool = True,
        pad_to_multiple_of: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        cache_dir: str | None = None,
        use_cache: bool = True,
        trust_remote_code: bool = False,
        max_row_chars: int | None = 1_000_000,
        chat_template: str | None = None,
        num_proc: int | None = None,
        streaming: bool = False,
        pairs_from_lists: ListMode = "all",
        unpair: bool = False,
    ) -> None:
        super().__init__()
        if pairs_from_lists not in LIST_MODES:
            raise ValueError(f"pairs_from_lists must be one of {', '.join(LIST_MODES)}; got {pairs_from_lists!r}")
        self.pairs_from_lists = pairs_from_lists
        self.unpair = unpair
        if truncation not in ("keep_end", "keep_start"):
            raise ValueError(f"truncation must be 'keep_end' or 'keep_start', got {truncation!r}")
        if on_bad_rows not in ("error", "skip"):
            raise ValueError(f"on_bad_rows must be 'error' or 'skip', got {on_bad_rows!r}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        for key, limit in (("max_length", max_length), ("max_prompt_length", max_prompt_length)):
            if limit is not None and limit < 1:
                raise ValueError(f"data.{key} must be >= 1 (or null: no limit), got {limit}")
        self.save_hyperparameters(ignore=[] if isinstance(tokenizer, (str, os.PathLike)) else ["tokenizer"])
        self._tokenizer_spec = tokenizer
        self.train_spec, self.val_spec, self.test_spec = train, val, test
        self.split, self.val_split, self.test_split, self.subset = split, val_split, test_split, subset
        self.val_fraction = val_fraction
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_length, self.max_prompt_length, self.truncation = max_length, max_prompt_length, truncation
        self.columns = dict(columns) if columns else None
        self.on_bad_rows, self.drop_identical = on_bad_rows, drop_identical
        self.group_by_length, self.pad_to_multiple_of = group_by_length, pad_to_multiple_of
        self.num_workers, self.seed = num_workers, seed
        self.cache_dir = Path(cache_dir) if cache_dir else cache.default_cache_dir()
        self.use_cache = use_cache
        self.trust_remote_code = trust_remote_code
        self.max_row_chars = max_row_chars
        self.chat_template = chat_template
        self.num_proc, self.streaming = num_proc, streaming
        self._tokenizer = None
        self.datasets: dict[str, PairDataset] = {}
        self.reports: dict[str, SplitReport] = {}
        self._scratch_folders: list[Path] = []  # the temporary stores of use_cache: false (`teardown` removes them)
        self._train_sampler: PreferenceBatchSampler | None = None

    # ------------------------------------------------------------------ tokenizer
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            tokenizer = load_tokenizer(self._tokenizer_spec, self.trust_remote_code)
            if self.chat_template is not None:
                tokenizer.chat_template = read_chat_template(self.chat_template)
            self._tokenizer = tokenizer
        return self._tokenizer

    # ------------------------------------------------------------------ data
    def prepare_data(self) -> None:
        """Tokenize the splits of the trainer's stage (every split without a trainer) into the cache, once per
        machine: Lightning runs this on one process of each node, before `setup` on every process reads the cache.
        With ``use_cache: false`` there is nothing to share: each process tokenizes its own copy in `setup`."""
        trainer = getattr(self, "trainer", None)
        self.prepare_splits(trainer.state.fn.value if trainer is not None and trainer.state.fn is not None else None)

    def prepare_splits(self, stage: str | None = None) -> None:
        """`prepare_data` for the splits of `stage` (every split for None)."""
        if not self.use_cache:
            return
        for split in STAGE_SPLITS.get(stage, ALL_SPLITS):
            source = None if split in self.datasets else self._source(split)  # already read: in the cache
            if source is not None:
                self._prepare(source)

    def setup(self, stage: str | None = None) -> None:
        """The splits of `stage`, read from the cache `prepare_data` filled (tokenized here when it holds none)."""
        for split in STAGE_SPLITS.get(stage, ALL_SPLITS):
            self.dataset(split)
        self.data_kind(stage)  # splits of two kinds are refused here, naming the split at fault

    def teardown(self, stage: str | None = None) -> None:
        """Remove the temporary stores of ``use_cache: false`` (their splits are tokenized again if used again)."""
        if not self._scratch_folders:
            return
        for folder in self._scratch_folders:
            shutil.rmtree(folder, ignore_errors=True)
        self._scratch_folders.clear()
        self.datasets.clear()
        self.reports.clear()

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

    # ------------------------------------------------------------------ loaders
    @property
    def collator(self) -> PreferenceCollator:
        return PreferenceCollator(self._pad_id(), self.pad_to_multiple_of)

    def collate_for(self, kind: str):
        """The collator of a split of `kind`: pairs, lists (in ``pairs_from_lists`` mode) or unpaired rows."""
        if kind == "lists":
            return ListCollator(self._pad_id(), self.pad_to_multiple_of, self.pairs_from_lists)
        if kind == "unpaired":
            return UnpairedCollator(self._pad_id(), self.pad_to_multiple_of)
        return self.collator

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.tokenizer.eos_token_id

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

    def _distribution(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return trainer.world_size, trainer.global_rank

    def _accumulation(self) -> int:
        trainer = getattr(self, "trainer", None)
        return 1 if trainer is None else trainer.accumulate_grad_batches

    def train_dataloader(self) -> DataLoader:
        dataset = self._require("train")
        world_size, rank = self._distribution()
        sampler = PreferenceBatchSampler(
            dataset.lengths,
            self.batch_size,
            shuffle=True,
            group_by_length=self.group_by_length,
            seed=self.seed,
            num_replicas=world_size,
            rank=rank,
            accumulate=self._accumulation(),
            units=dataset.units(self.pairs_from_lists) if dataset.kind == "lists" else None,
        )
        # read when iteration starts: Lightning may build this loader before it restores a checkpoint's progress
        # (to count the steps of a max_epochs schedule), and then reuses it
        sampler.before_epoch = lambda: self._resume_position(sampler)
        self._train_sampler = sampler
        return self._loader(dataset, sampler)

    def val_dataloader(self) -> DataLoader | list:
        dataset = self.dataset("val")
        return [] if dataset is None else self._eval_loader(dataset)

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self._require("test"))

    def ordered_dataloader(
        self, split: str, batch_size: int | None = None, rows: Sequence[int] | None = None
    ) -> DataLoader:
        """Every pair of `split` once (or those at `rows`), in that order, on this process alone (precomputation)."""
        dataset = self._require(split)
        dataset = dataset if rows is None else dataset.select(rows)
        sampler = PreferenceBatchSampler(
            dataset.lengths, batch_size or self.eval_batch_size, shuffle=False, group_by_length=False
        )
        return self._loader(dataset, sampler)

    def _eval_loader(self, dataset: PairDataset) -> DataLoader:
        world_size, rank = self._distribution()
        sampler = PreferenceBatchSampler(
            dataset.lengths,
            self.eval_batch_size,
            shuffle=False,
            group_by_length=False,
            num_replicas=world_size,
            rank=rank,
        )
        return self._loader(dataset, sampler)

    def _loader(self, dataset: PairDataset, sampler: PreferenceBatchSampler) -> DataLoader:
        return ResumableDataLoader(
            dataset,
            batch_size=sampler.batch_size,
            sampler=FlatBatchSampler(sampler),
            collate_fn=self.collate_for(dataset.kind),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _require(self, split: str) -> PairDataset:
        dataset = self.dataset(split)
        if dataset is None:
            raise PreferenceDataError(f"no {split} data: set data.{split}")
        return dataset

    def _resume_position(self, sampler: PreferenceBatchSampler) -> None:
        """When Lightning resumes mid-epoch, continue the epoch's batch order where it stopped."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return
        loop = trainer.fit_loop
        # `processed`, not `completed`: a checkpoint written in on_train_batch_end has trained the
        # batch it was written after, and Lightning counts it as completed only later, when it restarts.
        done = loop.epoch_loop.batch_progress.current.processed
        sampler.set_epoch(trainer.current_epoch)
        if loop.restarting and 0 < done < len(
            sampler
        ):  # a checkpoint at an epoch's end resumes at the next epoch's start
            sampler.load_state_dict({"epoch": trainer.current_epoch, "yielded": done})


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning treats as resumable.

    Its position is restored from the trainer's own progress counters when
    `train_dataloader()` is built on restart (see `_resume_position`), which, unlike a
    loader-side counter, is not thrown off by Lightning prefetching a batch ahead; so its
    own state is empty.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    return sum(len(str(m.get("content", ""))) for m in value or [] if isinstance(m, Mapping))


def read_chat_template(spec: str) -> str:
    """A chat template from a ``.jinja`` file, or the template text itself."""
    if spec.endswith((".jinja", ".j2")) or "{" not in spec:
        path = Path(shipped_path(spec))
        if not path.is_file():
            raise PreferenceDataError(f"chat_template {spec!r}: file not found")
        return path.read_text(encoding="utf-8")
    return spec
