"""What a module does to the models it trains: LoRA adapters and FSDP2 sharding (loading them is
`preflight.pretrained`, seeing through the wrappers `preflight.wrapped`)."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..pretrained import ModelLoadError, first_line
from ..wrapped import unwrap_peft


def model_source(model: nn.Module) -> str:
    """What the saved hyperparameters record for a model passed as an instance: where it was loaded from,
    or its class when it was built in memory (then pass the instance again to load a checkpoint)."""
    config = getattr(unwrap_peft(model), "config", None)
    return getattr(config, "name_or_path", "") or f"<{type(unwrap_peft(model)).__name__} instance>"


def apply_lora(model: nn.Module, settings: dict[str, Any]) -> nn.Module:
    """Wrap `model` with a LoRA adapter; `settings` are `peft.LoraConfig` fields."""
    from peft import LoraConfig, get_peft_model

    settings = {"task_type": "CAUSAL_LM", "r": 8, "lora_alpha": 16, "target_modules": "all-linear", **settings}
    try:
        config = LoraConfig(**settings)
    except TypeError as err:
        raise ModelLoadError(f"peft: {first_line(err)}") from None
    return get_peft_model(model, config)


def shard_fsdp2(model: nn.Module, mesh) -> nn.Module:
    """FSDP2: `fully_shard` each decoder layer (the model's `_no_split_modules` classes), the input embedding
    and the lm_head when they are untied (each a unit of its own, so that each is gathered only while it is
    used: together in the root unit they would be gathered whole for the whole step, a cost that grows with
    the vocabulary), then the root."""
    from torch.distributed.fsdp import fully_shard

    lm = unwrap_peft(model)
    layer_classes = set(getattr(lm, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ModelLoadError(f"{type(model).__name__}: no decoder-layer classes (_no_split_modules) to shard")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    for unit in untied_vocabulary_modules(lm):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def untied_vocabulary_modules(lm: nn.Module) -> list[nn.Module]:
    """The input embedding and the lm_head when they share no parameter (tied, they must stay in one unit)."""
    embedding, head = lm.get_input_embeddings(), lm.get_output_embeddings()
    if embedding is None or head is None:
        return []
    if {id(p) for p in embedding.parameters()} & {id(p) for p in head.parameters()}:
        return []
    return [embedding, head]
