"""`reference: precomputed` as a Callback: the reference log-probs of every row, computed once before training (or
validation, or test), shared out over the processes, and attached to the data so that no reference model stays in
memory. `PreferenceModule` adds it by itself (`configure_callbacks`) when its reference is ``precomputed``."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import lightning as L
import torch
from torch import nn

from .errors import PreflightConfigError
from .handoffs import ReferenceData

log = logging.getLogger("preflight")


class PrecomputedReferenceError(PreflightConfigError):
    """Precomputed reference log-probs that do not belong to the data and cannot be recomputed."""


class PrecomputedReference(L.Callback):
    """Gives each split's rows their reference log-probs log π_ref(y|x) (chosen and rejected), the inputs every
    reference-based loss reads (e.g. DPO, arXiv 2305.18290, Eq. 7), without a reference model during training.

    The table of a split is the one kept in the module (`PreferenceModule.precomputed_reference`, saved in its
    checkpoint) when it was computed on exactly these rows; else a no-grad pass computes it. The pass is shared out:
    with W processes each computes a contiguous block of ⌈N/W⌉ rows (the last block padded with repeats of its last
    row, so every process runs the same number of forwards, as sharded models need) and the blocks are gathered on
    every process. The table is also kept on disk (JSON, keyed by the rows and the reference weights) when the data
    module caches, so a second run with the same data and model skips the pass.

    Args:
        batch_size: rows per forward of the pass.
    """

    def __init__(self, batch_size: int = 32) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.rows_computed = 0  # by this process, in its last pass (padding included)

    def on_fit_start(self, trainer: L.Trainer, pl_module) -> None:
        self.attach(trainer, pl_module, ("train", "val"))

    def on_validation_start(self, trainer: L.Trainer, pl_module) -> None:
        if not trainer.training:
            self.attach(trainer, pl_module, ("val",))

    def on_test_start(self, trainer: L.Trainer, pl_module) -> None:
        self.attach(trainer, pl_module, ("test",))

    def attach(self, trainer: L.Trainer, pl_module, splits: tuple[str, ...]) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        if not isinstance(datamodule, ReferenceData):
            raise RuntimeError(
                "reference: precomputed needs a PreferenceDataModule (trainer.fit(module, datamodule=...))"
            )
        tables = pl_module.precomputed_reference
        for split in splits:
            dataset = datamodule.dataset(split)
            if dataset is None:
                continue
            digest = dataset.fingerprint()
            entry = tables.get(split)
            if entry is not None and (not isinstance(entry, dict) or entry.get("data") != digest):
                if not pl_module.reference_is_rebuildable():
                    raise PrecomputedReferenceError(
                        f"reference: precomputed: the {split} reference log-probs in this checkpoint were computed on "
                        f"other {split} data, and the policy has trained since, so they cannot be recomputed: "
                        "use the data the run started with, or start a new run"
                    )
                log.warning("%s data differ from those the reference log-probs were computed on: recomputing", split)
                entry = None
            if entry is None:
                entry = {"data": digest, "logps": self.table(trainer, pl_module, datamodule, split, digest)}
                tables[split] = entry
            values = entry["logps"]
            datamodule.attach_reference_logps(split, [v[0] for v in values], [v[1] for v in values])

    def table(self, trainer: L.Trainer, pl_module, datamodule: ReferenceData, split: str, digest: str) -> list:
        """[[chosen, rejected], ...] for every row of `split`, in dataset order: from the disk cache, or a pass."""
        n = len(datamodule.dataset(split))
        with pl_module.initial_reference() as model:
            store = Path(datamodule.cache_dir).parent / "reference" if datamodule.use_cache else None
            settings = None
            if store is not None:
                settings = dict(pairs=digest, weights=digest_weights(model, trainer.strategy))
            cached = self._cached(store, settings, n)
            if trainer.strategy.reduce_boolean_decision(cached is not None, all=True):  # every process found it
                return cached
            table = self._pass(trainer, pl_module, model, datamodule, split, n)
        if store is not None and trainer.is_global_zero:
            from .datamodules import cache

            cache.store(store, cache.cache_key(**settings), {"logps": table}, settings)
        return table

    def _cached(self, store: Path | None, settings: dict | None, n: int) -> list | None:
        if store is None:
            return None
        from .datamodules import cache

        check = lambda p: None if is_table(p.get("logps"), n) else f"does not hold {n} finite [chosen, rejected] values"  # noqa: E731
        hit = cache.load(store, cache.cache_key(**settings), settings, check=check)
        return None if hit is None else hit["logps"]

    def _pass(self, trainer: L.Trainer, pl_module, model: nn.Module, datamodule, split: str, n: int) -> list:
        """This process's block of rows through the model, then every process's blocks gathered in order."""
        world, rank = trainer.world_size, trainer.global_rank
        rows = shard(n, world, rank)
        values = []
        with torch.no_grad():
            for batch in datamodule.ordered_dataloader(split, self.batch_size, rows):
                batch = {k: v.to(pl_module.device) for k, v in batch.items()}
                logps = pl_module.completion_logps(model, batch)
                B = batch["chosen_lengths"].shape[0]
                values.append(torch.stack([logps[:B], logps[B:]], dim=1).float())
        self.rows_computed = len(rows)
        local = torch.cat(values)
        if world == 1:
            return local.tolist()
        gathered = trainer.strategy.all_gather(local)  # [W, ⌈n/W⌉, 2], in rank order
        return gathered.reshape(-1, 2)[:n].cpu().tolist()


def shard(n: int, world: int, rank: int) -> list[int]:
    """Rank `rank`'s contiguous block of ⌈n/world⌉ of the rows 0..n−1, padded with the last row to that size: every
    process gets the same number of rows (sharded weights need equal forwards)."""
    size = -(-n // world)
    return [min(i, n - 1) for i in range(rank * size, (rank + 1) * size)]


def is_table(table, rows: int) -> bool:
    return (
        isinstance(table, list)
        and len(table) == rows
        and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(v, float) and math.isfinite(v) for v in r)
            for r in table
        )
    )


def digest_weights(model: nn.Module, strategy=None) -> str:
    """A hash of the weights the model computes with (an active PEFT adapter included). A sharded model hashes each
    process's shards, and the processes' hashes are hashed together: the same on every process."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        h.update(name.encode())
        h.update(local.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    if strategy is None or strategy.world_size == 1:
        return h.hexdigest()
    mine = torch.tensor(list(h.digest()), dtype=torch.int64, device=strategy.root_device)
    every = strategy.all_gather(mine).cpu().flatten().tolist()
    return hashlib.sha256(bytes(every)).hexdigest()
