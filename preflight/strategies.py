"""Lightning's `ModelParallelStrategy` as preflight uses it: FSDP2 over every process.

Left to its defaults, `ModelParallelStrategy` makes a 2-D device mesh of ``data_parallel_size = num_nodes`` by
``tensor_parallel_size = devices``. preflight shards with FSDP2 over the data-parallel dimension and has no tensor
parallelism, so on one node each process would hold a full replica, train on its share of every step and never
exchange a gradient. `shard_over_every_process` turns the defaults into data parallelism over all processes and
refuses sizes preflight cannot honour.
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

from .errors import PreflightConfigError


class UnusedParallelismError(PreflightConfigError):
    """A tensor-parallel size (or a data-parallel size short of every process) that preflight would not use."""


def shard_over_every_process(strategy: Strategy) -> None:
    """Make a `ModelParallelStrategy` (not yet set up) data-parallel over all ``num_nodes × devices`` processes, or
    refuse, in one line, the sizes that would leave processes out of the data-parallel dimension."""
    if not isinstance(strategy, ModelParallelStrategy):
        return
    world = strategy.num_nodes * strategy.num_processes
    tensor, data = strategy._tensor_parallel_size, strategy._data_parallel_size
    if tensor not in ("auto", 1):
        raise UnusedParallelismError(
            f"trainer.strategy.tensor_parallel_size={tensor}: preflight shards the model with FSDP2 over the "
            "data-parallel processes and has no tensor parallelism; leave tensor_parallel_size out (or 1)"
        )
    if data not in ("auto", world):
        raise UnusedParallelismError(
            f"trainer.strategy.data_parallel_size={data}: preflight shards over every process ({world} here: "
            f"num_nodes × devices); leave data_parallel_size out (or {world})"
        )
    strategy._data_parallel_size, strategy._tensor_parallel_size = world, 1


def check_no_tensor_parallelism(mesh) -> None:
    """For a plain `Trainer`: a device mesh whose tensor-parallel dimension has more than one process would leave
    replicas that never exchange gradients."""
    names = mesh.mesh_dim_names or ()
    if "tensor_parallel" in names and mesh["tensor_parallel"].size() > 1:
        raise UnusedParallelismError(
            f"ModelParallelStrategy with tensor_parallel_size={mesh['tensor_parallel'].size()}: preflight has no "
            "tensor parallelism, so those processes would train apart; use "
            "ModelParallelStrategy(data_parallel_size=<all processes>, tensor_parallel_size=1)"
        )
