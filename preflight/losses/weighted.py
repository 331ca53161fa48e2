"""A weighted sum of registered losses, expressible in YAML.

Examples: MPO (Wang et al. 2024, arXiv 2411.10442) is ``dpo`` 0.8 + ``bco_pair`` 0.2 + ``sft`` 1.0;
RPO (Pang et al. 2024, arXiv 2404.19733) is ``dpo`` + α·``sft``::

    loss:
      name: weighted
      terms:
        - {name: dpo, weight: 0.8, beta: 0.1}
        - {name: bco_pair, weight: 0.2}
        - {name: sft, weight: 1.0}
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .base import LossInputs, LossOutput, PreferenceLoss
from .registry import build_loss, register_loss


@register_loss("weighted", "combined")
class WeightedLoss(PreferenceLoss):
    r"""``Σ_k w_k · L_k`` per pair, over any registered losses L_k with weights w_k.

    ``terms`` is a list of mappings ``{name, weight, **hyperparameters}`` (weight defaults
    to 1). The sum needs the union of what its terms need; its rewards are those of the
    first term that has rewards; each term's mean loss is reported as ``<name>_loss``.

    Args:
        terms (list[dict]): the losses summed, each ``{name, weight, **hyperparameters}`` (``weight`` defaults to
            1); at least one. Default None (required).
    """

    monotonic = False  # monotonic only when every term is; checked per term instead

    def __init__(self, terms: list[dict[str, Any]] | None = None) -> None:
        super().__init__()
        if not terms:
            raise ValueError("the weighted loss needs at least one term, e.g. terms: [{name: dpo, weight: 1.0}]")
        built, weights = [], []
        for i, term in enumerate(terms):
            term = dict(term)
            weights.append(float(term.pop("weight", 1.0)))
            try:
                built.append(build_loss(term))
            except ValueError as err:
                raise ValueError(f"weighted loss, term {i + 1}: {err}") from None
        self.terms = terms
        self.losses = nn.ModuleList(built)
        self.weights = weights
        kinds = {loss.input_kind for loss in built}
        if len(kinds) > 1:
            raise ValueError("the weighted loss cannot mix reward-model and log-prob losses")

    def required_fields(self) -> tuple[str, ...]:
        fields: list[str] = []
        for loss in self.losses:
            fields += [f for f in loss.required_fields() if f not in fields]
        return tuple(fields)

    @property
    def requires_reference(self) -> bool:  # type: ignore[override]
        return any(loss.requires_reference for loss in self.losses)

    @property
    def requires_lengths(self) -> bool:  # type: ignore[override]
        return any(loss.requires_lengths for loss in self.losses)

    @property
    def input_kind(self) -> str:  # type: ignore[override]
        return self.losses[0].input_kind if self.losses else "logps"

    def compute(self, inputs: LossInputs) -> LossOutput:
        total = torch.zeros((), dtype=torch.float32)
        metrics: dict[str, torch.Tensor] = {}
        chosen_rewards = rejected_rewards = None
        names = [loss.name for loss in self.losses]
        for i, (loss, weight) in enumerate(zip(self.losses, self.weights)):
            out = loss.compute(inputs)
            total = total + weight * out.losses
            # a loss that appears twice is logged per term (dpo_1, dpo_2), so neither overwrites the other
            name = loss.name if names.count(loss.name) == 1 else f"{loss.name}_{names[: i + 1].count(loss.name)}"
            metrics[f"{name}_loss"] = out.loss.detach()
            metrics.update({f"{name}/{k}": v for k, v in out.metrics.items()})
            if chosen_rewards is None and out.chosen_rewards is not None:
                chosen_rewards, rejected_rewards = out.chosen_rewards, out.rejected_rewards
        return LossOutput(total.mean(), total, chosen_rewards, rejected_rewards, metrics)
