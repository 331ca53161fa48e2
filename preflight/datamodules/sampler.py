"""Batch order: length-grouped, seeded, and independent of the number of processes.

`PreferenceBatchSampler` forms *step* batches of ``batch_size × num_replicas × accumulate``
pairs (everything one optimizer step sees) from one seeded permutation, splits each into
``accumulate`` consecutive micro-batches, and gives each rank its contiguous slice of every
micro-batch. So 1 process with batch 8, 2 processes with batch 4, and 1 process with batch 2
accumulating 4 all train on the same pairs in each optimizer step. With ``group_by_length``
the permutation is cut into mega-batches of ``mega_batch_size`` step batches, each sorted by
length, and the step batches are shuffled: rows of similar length share a batch.

It is resumable: ``state_dict()`` holds the epoch and how many micro-batches this epoch has
already yielded, so a restarted run continues mid-epoch with the same batches.
"""

from __future__ import annotations

from typing import Callable, Iterator, NamedTuple, Sequence

import torch
from torch.utils.data import DistributedSampler


class StepRow(NamedTuple):
    """A row as the sampler hands it to the dataset: its index, and how many pairs the optimizer step it belongs to
    has over all its micro-batches and all processes (the batch carries it to the module: ``step_pairs``)."""

    index: int
    step_pairs: int


class PreferenceBatchSampler:
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        group_by_length: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        mega_batch_size: int = 50,
        accumulate: int = 1,
        units: Sequence[int] | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.group_by_length = batch_size, shuffle, group_by_length
        self.seed, self.num_replicas, self.rank, self.drop_last = seed, num_replicas, rank, drop_last
        self.mega_batch_size = mega_batch_size
        self.accumulate = max(1, accumulate)
        # what each row counts for in a step's denominator: 1 a pair; a list its pairs (or 1 as a whole list)
        self.units = None if units is None else list(units)
        self.epoch = 0
        self._sizes: tuple[int, list[int]] | None = None  # (epoch, global batch sizes), cached
        self._yielded = 0  # batches already yielded in the current epoch (for resume)
        self._resume_from = 0
        #: called as each epoch's iteration starts (the data module sets it to restore a resumed run's position)
        self.before_epoch: Callable[[], None] | None = None

    @property
    def global_batch_size(self) -> int:
        """Pairs of one micro-batch over all ranks."""
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._resume_from = 0
        self.epoch = epoch

    def step_batches(self) -> list[list[int]]:
        """Every optimizer step's pairs for the current epoch, in order (identical on every rank)."""
        n, size = len(self.lengths), self.global_batch_size * self.accumulate
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=g).tolist() if self.shuffle else list(range(n))
        if self.group_by_length:
            mega = size * self.mega_batch_size
            order = [
                i
                for start in range(0, n, mega)
                for i in sorted(order[start : start + mega], key=lambda j: -self.lengths[j])
            ]
        batches = [order[i : i + size] for i in range(0, n, size)]
        if batches and len(batches[-1]) < size and self.drop_last:
            batches.pop()
        if self.shuffle and self.group_by_length:
            # the short step batch, if any, stays last: rank slices and micro-batches re-form by size
            full = len(batches) - (1 if batches and len(batches[-1]) < size else 0)
            perm = torch.randperm(full, generator=g).tolist()
            batches = [batches[i] for i in perm] + batches[full:]
        return batches

    def global_batches(self) -> list[list[int]]:
        """Every micro-batch of the epoch over all ranks, in order (identical on every rank).

        A micro-batch with fewer pairs than ranks (only possible at the very end) is left out.
        """
        size = self.global_batch_size
        micro = [step[i : i + size] for step in self.step_batches() for i in range(0, len(step), size)]
        return [m for m in micro if len(m) >= self.num_replicas]

    def global_batch_sizes(self) -> list[int]:
        """Pairs in each micro-batch of the current epoch (all ranks together)."""
        if self._sizes is None or self._sizes[0] != self.epoch:
            self._sizes = (self.epoch, [len(b) for b in self.global_batches()])
        return self._sizes[1]

    def step_pairs(self) -> list[int]:
        """For each micro-batch of the current epoch, the pairs of its whole optimizer step (all ranks); for lists,
        the units (`units`) of its rows."""
        if self.units is None:
            sizes = self.global_batch_sizes()
        else:
            sizes = [sum(self.units[i] for i in batch) for batch in self.global_batches()]
        k = self.accumulate
        return [sum(sizes[(i // k) * k : (i // k) * k + k]) for i in range(len(sizes))]

    def local_size(self, global_size: int) -> int:
        """How many pairs of a global batch of `global_size` this rank gets."""
        q, r = divmod(global_size, self.num_replicas)
        return q + (self.rank < r)

    def local_slice(self, batch: list[int]) -> list[int]:
        """This rank's share of a global batch: contiguous, as even as possible."""
        q, r = divmod(len(batch), self.num_replicas)
        start = self.rank * q + min(self.rank, r)
        return batch[start : start + self.local_size(len(batch))]

    def __iter__(self) -> Iterator[list[int]]:
        for batch, _ in self.batches_and_step_pairs():
            yield batch

    def batches_and_step_pairs(self) -> Iterator[tuple[list[int], int]]:
        """This rank's micro-batches, each with the pairs of its optimizer step, resuming where a restart left off."""
        if self.before_epoch is not None:
            self.before_epoch()  # the position is read when the epoch starts, after a checkpoint has been restored
        batches, step_pairs = self.global_batches(), self.step_pairs()
        start, self._resume_from = self._resume_from, 0
        self._yielded = start
        for batch, pairs in zip(batches[start:], step_pairs[start:]):
            self._yielded += 1
            yield self.local_slice(batch), pairs
        self._yielded = 0

    def __len__(self) -> int:
        return len(self.global_batch_sizes())

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self._resume_from = state["yielded"]


class FlatBatchSampler(DistributedSampler):
    """`PreferenceBatchSampler`'s batches for this rank, flattened, as a `DistributedSampler`.

    Lightning swaps in its own `DistributedSampler` for any other sampler under DDP/FSDP
    (``use_distributed_sampler``); handing it a `DistributedSampler` keeps preflight's
    world-size-independent global batches. A `DataLoader` with ``batch_size`` equal to the
    per-rank batch size re-forms the same batches: only the last one can be smaller. Each row is
    yielded as a `StepRow`, so the batch carries the pair count of its optimizer step.
    """

    def __init__(self, batches: PreferenceBatchSampler) -> None:  # noqa: D107 - no super().__init__: nothing to set up
        self.batches = batches
        self.num_replicas, self.rank = batches.num_replicas, batches.rank

    def __iter__(self) -> Iterator[StepRow]:
        for batch, step_pairs in self.batches.batches_and_step_pairs():
            for index in batch:
                yield StepRow(index, step_pairs)

    def __len__(self) -> int:
        return sum(self.batches.local_size(n) for n in self.batches.global_batch_sizes())  # cached per epoch

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)
