"""Training metrics through torchmetrics, named as TRL names them.

Every value is a `MeanMetric` over pairs, logged as the Metric object so Lightning syncs
it across processes: ``{stage}/loss``, ``{stage}/rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected`` (means of
the summed completion log-probs), plus each loss's own metrics.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from .losses import LossOutput

STANDARD = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
            "logps/chosen", "logps/rejected")


def _key(name: str) -> str:
    return name.replace("/", "__")  # module names cannot hold '.'; keep them readable


class PreferenceMetrics(nn.Module):
    """The metrics of one stage (train, val or test)."""

    def __init__(self, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.means = nn.ModuleDict({_key(n): MeanMetric() for n in STANDARD})

    def _metric(self, name: str, like: Tensor) -> MeanMetric:
        key = _key(name)
        if key not in self.means:
            self.means[key] = MeanMetric().to(like.device)
        return self.means[key]

    def update(
        self, output: LossOutput, chosen_logps: Tensor | None = None, rejected_logps: Tensor | None = None
    ) -> dict[str, tuple[MeanMetric, str]]:
        """Accumulate one batch; return {logged name: (metric, its attribute path under this module)}."""
        values: dict[str, Tensor] = {"loss": output.loss.detach()}
        weights: dict[str, int] = {"loss": output.losses.shape[0]}
        if output.chosen_rewards is not None and output.rejected_rewards is not None:
            values["rewards/chosen"] = output.chosen_rewards
            values["rewards/rejected"] = output.rejected_rewards
            values["rewards/accuracies"] = (output.chosen_rewards > output.rejected_rewards).float()
            values["rewards/margins"] = output.chosen_rewards - output.rejected_rewards
        if chosen_logps is not None:
            values["logps/chosen"] = chosen_logps.detach()
        if rejected_logps is not None:
            values["logps/rejected"] = rejected_logps.detach()
        for name, value in output.metrics.items():
            values[name] = value.detach()
        logged = {}
        for name, value in values.items():
            metric = self._metric(name, value)
            value = value.float()
            if value.dim() == 0:  # a batch mean: weight it by the batch's pairs
                metric(value, weights.get(name, output.losses.shape[0]))
            else:
                metric(value)
            logged[f"{self.stage}/{name}"] = (metric, f"means.{_key(name)}")
        return logged
