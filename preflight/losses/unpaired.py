"""Losses over unpaired feedback (``input_kind = "unpaired"``): each row is one completion of a prompt, labelled
desirable (thumbs up) or undesirable (thumbs down), with no partner to compare it with.

Notation in every docstring here: ρ = log π_θ(y|x) − log π_ref(y|x) is a row's log-ratio (summed over its completion
tokens), r = βρ its implicit reward, σ the logistic sigmoid. The loss of a micro-batch is the mean over its rows (as
TRL's ``losses.nanmean()``); an optimizer step's loss is the mean over its rows. Logged, as TRL logs them:
``rewards/chosen`` and ``logps/chosen`` the means over desirable rows, ``rewards/rejected`` and ``logps/rejected``
over undesirable rows, and each loss's own (``kl``, ``delta``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor

from .base import LossInputs, LossOutput, PreferenceLoss
from .dpo import _check_beta
from .registry import register_loss


def unpaired_output(losses: Tensor, rewards: Tensor, labels: Tensor, **metrics: Tensor) -> LossOutput:
    """The `LossOutput` of an unpaired loss: the mean over rows, and the rewards of the desirable and undesirable
    rows as metrics (pairwise fields stay None: no row has a partner)."""
    rewards = rewards.detach()
    return LossOutput(
        loss=losses.mean(),
        losses=losses,
        metrics={
            "rewards/chosen": rewards[labels],
            "rewards/rejected": rewards[~labels],
            **{k: v.detach() for k, v in metrics.items()},
        },
    )


class UnpairedLoss(PreferenceLoss):
    """Base of the unpaired losses: one loss per (prompt, completion, label) row."""

    input_kind = "unpaired"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta

    def log_ratios(self, inputs: LossInputs) -> Tensor:
        return inputs.policy_logps - inputs.reference_logps


@register_loss("kto")
class KTOLoss(UnpairedLoss):
    r"""Kahneman–Tversky Optimization (Ethayarajh et al. 2024, arXiv 2402.01306, Eq. 7, as TRL's ``KTOTrainer``).

    With z₀ = max(0, mean over the micro-batch of log π_θ(y'|x) − log π_ref(y'|x)) for the mismatched rows (prompt i
    with completion i − 1 of the micro-batch, wrapping), detached, the reference point:

        desirable:    λ_D (1 − σ(β(ρ − z₀)))
        undesirable:  λ_U (1 − σ(β(z₀ − ρ)))

    z₀ is this process's micro-batch estimate (TRL averages the estimates of the processes); logged as ``kl``. The
    paper advises λ_D n_D / (λ_U n_U) in [1, 4/3] for n_D desirable and n_U undesirable rows (the run prints both
    counts).

    Args:
        beta: the KL strength β.
        desirable_weight: λ_D, the weight of desirable rows' losses.
        undesirable_weight: λ_U, the weight of undesirable rows' losses.
    """

    uses_kl_rows = True

    def __init__(self, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        super().__init__(beta)
        if not (desirable_weight >= 0 and undesirable_weight >= 0):
            raise ValueError("kto: desirable_weight and undesirable_weight must be ≥ 0")
        self.desirable_weight, self.undesirable_weight = desirable_weight, undesirable_weight

    def compute(self, inputs: LossInputs) -> LossOutput:
        kl = (inputs.policy_kl_logps - inputs.reference_kl_logps).mean().clamp(min=0).detach()
        rho = self.log_ratios(inputs)
        labels = inputs.labels.bool()
        desirable = self.desirable_weight * (1 - torch.sigmoid(self.beta * (rho - kl)))
        undesirable = self.undesirable_weight * (1 - torch.sigmoid(self.beta * (kl - rho)))
        losses = torch.where(labels, desirable, undesirable)
        return unpaired_output(losses, self.beta * rho, labels, kl=kl)


@register_loss("apo_zero_unpaired")
class APOZeroUnpairedLoss(UnpairedLoss):
    r"""Anchored Preference Optimization, zero variant, unpaired (D'Oosterlinck et al. 2024, arXiv 2408.06266,
    Eq. 7 taken row by row, as TRL's ``KTOTrainer`` with ``loss_type="apo_zero_unpaired"``):

        desirable:    1 − σ(βρ)        (push the likelihood of good completions up)
        undesirable:  σ(βρ)            (push the likelihood of bad completions down)

    Args:
        beta: the KL strength β.
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        rho = self.log_ratios(inputs)
        labels = inputs.labels.bool()
        losses = torch.where(labels, 1 - torch.sigmoid(self.beta * rho), torch.sigmoid(self.beta * rho))
        return unpaired_output(losses, self.beta * rho, labels)


@register_loss("bco")
class BCOLoss(UnpairedLoss):
    r"""Binary Classifier Optimization (Jung et al. 2024, arXiv 2404.04656), unpaired, as TRL's ``BCOTrainer``
    (without its optional density-ratio weighting): a binary classifier whose logit is the implicit reward r = βρ,
    shifted by δ, the running mean of every implicit reward seen in training so far (this batch's included):

        desirable:    −log σ(r − δ)
        undesirable:  −log σ(−(r − δ))

    δ is kept as a running sum and count (float64 buffers, all-reduced over the processes as TRL gathers them), so it
    is saved in checkpoints and a resumed run continues it; in evaluation (``eval()``) it is read, not updated.
    Logged as ``delta``.

    Args:
        beta: the KL strength β.
    """

    stateful = True

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__(beta)
        self.register_buffer("reward_sum", torch.zeros((), dtype=torch.float64))
        self.register_buffer("reward_count", torch.zeros((), dtype=torch.float64))

    def compute(self, inputs: LossInputs) -> LossOutput:
        rho = self.log_ratios(inputs)
        labels = inputs.labels.bool()
        rewards = self.beta * rho
        if self.training:
            self.update(rewards.detach())
        delta = (self.reward_sum / self.reward_count.clamp(min=1)).to(rewards.dtype)
        losses = torch.where(labels, -F.logsigmoid(rewards - delta), -F.logsigmoid(-(rewards - delta)))
        return unpaired_output(losses, rewards, labels, delta=delta)

    def update(self, rewards: Tensor) -> None:
        """Add this batch's rewards (every process's) to the running mean."""
        totals = torch.stack([rewards.double().sum(), torch.tensor(float(rewards.numel()), dtype=torch.float64)])
        totals = totals.to(self.reward_sum.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        self.reward_sum += totals[0]
        self.reward_count += totals[1]
