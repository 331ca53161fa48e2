"""`PreferenceDataModule`: preference data as batches: pairs (prompt, chosen, rejected), or lists of scored
completions per prompt (`lists`)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Literal

import lightning as L

from . import cache
from .errors import PreferenceDataError
from .lists import LIST_MODES, ListMode
from .sampler import PreferenceBatchSampler
from ..pretrained import load_tokenizer
from ..shipped import shipped_path

from .dataset import PairDataset, SplitReport
from .loaders import Loaders
from .splits import ALL_SPLITS, STAGE_SPLITS, SplitStores

DataSpec = str | list[dict[str, Any]] | None


class PreferenceDataModule(SplitStores, Loaders, L.LightningDataModule):
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


def read_chat_template(spec: str) -> str:
    """A chat template from a ``.jinja`` file, or the template text itself."""
    if spec.endswith((".jinja", ".j2")) or "{" not in spec:
        path = Path(shipped_path(spec))
        if not path.is_file():
            raise PreferenceDataError(f"chat_template {spec!r}: file not found")
        return path.read_text(encoding="utf-8")
    return spec
