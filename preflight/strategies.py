"""FSDP2 as preflight uses it: `FSDP2Strategy`, Lightning's `ModelParallelStrategy` data-parallel over every process.

Left to its defaults, `ModelParallelStrategy` makes a 2-D device mesh of ``data_parallel_size = num_nodes`` by
``tensor_parallel_size = devices``. preflight shards with FSDP2 over the data-parallel dimension and has no tensor
parallelism, so on one node each process would hold a full replica, train on its share of every step and never
exchange a gradient. `FSDP2Strategy` shards over all ``num_nodes × devices`` processes and refuses, in one line,
sizes that would leave processes out. The command runs a configured ``ModelParallelStrategy`` as this class
(`as_fsdp2`); it is registered in Lightning's strategy registry as ``fsdp2`` (``--trainer.strategy fsdp2``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from lightning.fabric.plugins.collectives.torch_collective import default_pg_timeout
from lightning.pytorch.strategies import ModelParallelStrategy, StrategyRegistry

from .errors import PreflightConfigError

MODEL_PARALLEL = "lightning.pytorch.strategies.ModelParallelStrategy"


class UnusedParallelismError(PreflightConfigError):
    """A tensor-parallel size (or a data-parallel size short of every process) that preflight would not use."""


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 (``fully_shard``) over every process: the module shards each decoder layer and the root over the
    data-parallel mesh, and each process's gradient is that of the whole optimizer step.

    Args:
        data_parallel_size: processes in the data-parallel mesh: ``auto`` (every process, num_nodes × devices) or
            that number.
        tensor_parallel_size: ``auto`` or 1: preflight has no tensor parallelism; other values are refused.
        save_distributed_checkpoint: save sharded checkpoint folders (one file per process; ``preflight export``
            consolidates them); False gathers one full checkpoint file on rank 0.
        process_group_backend: the torch.distributed backend (default: nccl on GPUs, gloo on CPUs).
        timeout: how long collectives wait for the other processes.
    """

    strategy_name = "fsdp2"

    def __init__(
        self,
        data_parallel_size: Literal["auto"] | int = "auto",
        tensor_parallel_size: Literal["auto"] | int = "auto",
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
        timeout: timedelta | None = default_pg_timeout,
    ) -> None:
        super().__init__(data_parallel_size, 1, save_distributed_checkpoint, process_group_backend, timeout)
        self.requested_data_parallel_size = data_parallel_size
        self.requested_tensor_parallel_size = tensor_parallel_size

    def check_sizes(self) -> None:
        """Refuse a tensor-parallel size above 1, or a data-parallel size other than every process (once the trainer
        has set the processes: the command calls it right after building the trainer, Lightning at setup)."""
        if self.requested_tensor_parallel_size not in ("auto", 1):
            raise UnusedParallelismError(
                f"trainer.strategy.tensor_parallel_size={self.requested_tensor_parallel_size}: preflight shards the "
                "model with FSDP2 over the data-parallel processes and has no tensor parallelism; leave "
                "tensor_parallel_size out (or 1)"
            )
        world = self.num_nodes * self.num_processes
        if self.requested_data_parallel_size not in ("auto", world):
            raise UnusedParallelismError(
                f"trainer.strategy.data_parallel_size={self.requested_data_parallel_size}: preflight shards over every "
                f"process ({world} here: num_nodes × devices); leave data_parallel_size out (or {world})"
            )
        self._data_parallel_size = world

    def setup_environment(self) -> None:
        self.check_sizes()
        super().setup_environment()

    @classmethod
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="FSDP2 over every process (preflight)")


if FSDP2Strategy.strategy_name not in StrategyRegistry:
    FSDP2Strategy.register_strategies(StrategyRegistry)


def as_fsdp2(strategy: Any) -> Any:
    """A configured strategy as the command runs it: Lightning's ``ModelParallelStrategy`` (by class path) becomes
    `FSDP2Strategy` with the same settings; anything else is returned as it is."""
    if hasattr(strategy, "class_path") and strategy.class_path in (MODEL_PARALLEL, "ModelParallelStrategy"):
        strategy.class_path = f"{__name__}.FSDP2Strategy"
    elif isinstance(strategy, dict) and strategy.get("class_path") in (MODEL_PARALLEL, "ModelParallelStrategy"):
        strategy = {**strategy, "class_path": f"{__name__}.FSDP2Strategy"}
    return strategy


def check_no_tensor_parallelism(mesh) -> None:
    """For a plain `Trainer` with Lightning's `ModelParallelStrategy`: a device mesh whose tensor-parallel dimension
    has more than one process would leave replicas that never exchange gradients."""
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise UnusedParallelismError(
            f"ModelParallelStrategy with tensor_parallel_size={mesh['tensor_parallel'].size()}: preflight has no "
            "tensor parallelism, so those processes would train apart; use preflight.strategies.FSDP2Strategy "
            "(or ModelParallelStrategy(data_parallel_size=<all processes>, tensor_parallel_size=1))"
        )
