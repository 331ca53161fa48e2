"""Training metrics through torchmetrics, named as TRL names them.

Every value is a `MeanMetric` over pairs, logged as the Metric object so Lightning syncs
it across processes: ``{stage}/loss``, ``{stage}/rewards/chosen``, ``rewards/rejected``,
``rewards/accuracies``, ``rewards/margins``, ``logps/chosen``, ``logps/rejected`` (means of
the summed completion log-probs), plus each loss's own metrics.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from .losses import LossOutput

STANDARD = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
)


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
        """Accumulate one batch; return {logged name: (metric, its attribute path under this module)}.

        For the validation and test stages, log the returned metric objects per epoch (Lightning syncs and
        resets them). The train stage instead calls `compute_and_reset` once per optimizer step."""
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
                metric.update(value, weights.get(name, output.losses.shape[0]))
            else:
                metric.update(value)
            logged[f"{self.stage}/{name}"] = (metric, f"means.{_key(name)}")
        return logged

    def compute_and_reset(self) -> dict[str, Tensor]:
        """The means since the last call over every process (a collective: every rank calls it at the same
        point), keyed by logged name; metrics without any finite value are left out. Resets them."""
        values = {}
        for key, metric in self.means.items():
            with warnings.catch_warnings():  # a metric this process did not update (a skipped batch) is 0/0 here
                warnings.simplefilter("ignore")
                value = metric.compute()
            if torch.isfinite(value):
                values[f"{self.stage}/{key.replace('__', '/')}"] = value
            metric.reset()
        return values


def best_of_k_accuracy(rewards: Tensor, scores: Tensor, mask: Tensor) -> Tensor:
    """Per list [B] (rows [B, K], padding False in `mask`): 1.0 where a best-scored completion gets a strictly higher
    reward than every other completion of its list, else 0.0 (RewardBench 2's best-of-4: one chosen against three
    rejected, a tie counts as wrong)."""
    top = torch.where(mask, scores, float("-inf")).amax(-1, keepdim=True)
    best = mask & (scores == top)
    best_reward = torch.where(best, rewards, float("-inf")).amax(-1)
    other_reward = torch.where(mask & ~best, rewards, float("-inf")).amax(-1)
    return (best_reward > other_reward).float()
