"""Batch order: length-grouped, seeded, and independent of the number of processes.

`PreferenceBatchSampler` first forms *global* batches of ``batch_size × num_replicas``
pairs from one seeded permutation (so the global batches are the same for 1 process
with batch 8 as for 2 processes with batch 4 each), then gives each rank its contiguous
slice. With ``group_by_length`` the permutation is cut into mega-batches of
``mega_batch_size`` global batches, each sorted by length, and the batches are shuffled:
rows of similar length share a batch, so little padding is computed.

It is resumable: ``state_dict()`` holds the epoch and how many batches this epoch has
already yielded, so a restarted run continues mid-epoch with the same batches.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch


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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.lengths = list(lengths)
        self.batch_size, self.shuffle, self.group_by_length = batch_size, shuffle, group_by_length
        self.seed, self.num_replicas, self.rank, self.drop_last = seed, num_replicas, rank, drop_last
        self.mega_batch_size = mega_batch_size
        self.epoch = 0
        self._yielded = 0  # batches already yielded in the current epoch (for resume)
        self._resume_from = 0

    @property
    def global_batch_size(self) -> int:
        return self.batch_size * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._resume_from = 0
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """Every global batch of the current epoch, in order (identical on every rank)."""
        n, size = len(self.lengths), self.global_batch_size
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
        if batches and len(batches[-1]) < size and (self.drop_last or len(batches[-1]) < self.num_replicas):
            batches.pop()
        if self.shuffle and self.group_by_length:
            perm = torch.randperm(len(batches), generator=g).tolist()
            batches = [batches[i] for i in perm]
        return batches

    def local_slice(self, batch: list[int]) -> list[int]:
        """This rank's share of a global batch: contiguous, as even as possible."""
        q, r = divmod(len(batch), self.num_replicas)
        start = self.rank * q + min(self.rank, r)
        return batch[start : start + q + (self.rank < r)]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.global_batches()
        start, self._resume_from = self._resume_from, 0
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield self.local_slice(batch)
        self._yielded = 0
        self.epoch += 1  # plain loops (without Lightning's set_epoch) still reshuffle

    def __len__(self) -> int:
        n, size = len(self.lengths), self.global_batch_size
        full, rest = divmod(n, size)
        return full + (1 if rest and not self.drop_last and rest >= self.num_replicas else 0)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "yielded": self._yielded}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = state["epoch"]
        self._resume_from = state["yielded"]
