"""Alignment via Optimal Transport (AOT), Melnyk et al. 2024 (arXiv 2406.05882).

Distributional preference: instead of pairing each chosen with its own rejected, AOT
sorts the per-pair quantities across the batch and applies the logistic loss to the
sorted (quantile-matched) differences, which enforces first-order stochastic dominance
of the chosen distribution over the rejected one. The loss is a function of the whole
batch; `losses[i]` is the loss of the i-th quantile, not of the i-th pair.
"""

from __future__ import annotations

import torch

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output
from .dpo import _check_beta, _check_smoothing, log_ratios, smoothed_logistic
from .registry import register_loss


def _sorted(x: torch.Tensor) -> torch.Tensor:
    return torch.sort(x, dim=0).values


class _AOTLoss(PreferenceLoss):
    batch_level = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        self.beta, self.label_smoothing = beta, label_smoothing
        self.monotonic = label_smoothing == 0


@register_loss("aot")
class AOTLoss(_AOTLoss):
    r"""AOT (arXiv 2406.05882) for paired data: ``−log σ(β (sort(π_w − π_l) − sort(ref_w − ref_l)))`` per quantile,
    with label smoothing ε as in cDPO. π_w − π_l are the policy's log-prob differences.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        policy_gap = inputs.policy_chosen_logps - inputs.policy_rejected_logps
        reference_gap = inputs.reference_chosen_logps - inputs.reference_rejected_logps
        delta = _sorted(policy_gap) - _sorted(reference_gap)
        return mean_output(
            smoothed_logistic(self.beta * delta, self.label_smoothing), self.beta * chosen, self.beta * rejected
        )


@register_loss("aot_unpaired", "aot_pair")
class AOTUnpairedLoss(_AOTLoss):
    r"""AOT (arXiv 2406.05882), AOT for unpaired data: ``−log σ(β (sort(ρ_w) − sort(ρ_l)))`` per quantile (TRL's
    ``aot_unpaired``, formerly ``aot_pair``): chosen and rejected log-ratios are sorted separately.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        delta = _sorted(chosen) - _sorted(rejected)
        return mean_output(
            smoothed_logistic(self.beta * delta, self.label_smoothing), self.beta * chosen, self.beta * rejected
        )
