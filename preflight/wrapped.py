"""Seeing through what wraps a model: a PEFT adapter around a transformers model, an FSDP2 unit around any module.

Shared by the modules (which wrap) and the log-prob engine (which computes through the wrappers)."""

from __future__ import annotations

from torch import nn


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The transformers model under a PEFT wrapper (adapters stay injected in its layers)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def is_peft(model: nn.Module) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def is_fsdp2_unit(model: nn.Module) -> bool:
    """A module that FSDP2's `fully_shard` made a unit (the root or any inner one)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def inside_forward(root: nn.Module, function, *args, **kwargs):
    """``function(*args, **kwargs)`` run as `root`'s forward, so the hooks a sharding strategy put on that
    module (FSDP2: gather its own parameters, such as the lm_head's weight, before; re-shard and reduce their
    gradients after) wrap it as they wrap the module's own forward."""
    original = root.forward

    def redirected(*_args, **_kwargs):
        root.forward = original  # a nested call of the real forward stays the real one
        return function(*_args, **_kwargs)

    root.forward = redirected
    try:
        return root(*args, **kwargs)
    finally:
        root.forward = original


def as_forward(module: nn.Module, function, *args):
    """`function(*args)`, run as the module's forward where the module is an FSDP2 unit. The fused head reads
    the lm_head weight directly, which FSDP2 gathers only inside its unit's forward (and reduces after its
    backward); the decoder's own units are gathered by their forwards as usual, inside the root's."""
    return inside_forward(module, function, *args) if is_fsdp2_unit(module) else function(*args)
