"""The loaders of a `PreferenceDataModule`: step-grouped, world-size independent batches (`PreferenceBatchSampler`),
resumable mid-epoch from the trainer's own progress."""

from __future__ import annotations

from collections.abc import Sequence

from torch.utils.data import DataLoader

from .collate import ListCollator, PreferenceCollator, UnpairedCollator
from .dataset import PairDataset
from .errors import PreferenceDataError
from .sampler import FlatBatchSampler, PreferenceBatchSampler


class Loaders:
    """The data module's collators and loaders for training, evaluation and precomputation."""

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
