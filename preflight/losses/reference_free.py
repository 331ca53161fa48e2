"""Losses that need no reference model: the module skips the reference forward entirely.

avg_w = log π_θ(y_w|x) / |y_w| is the average per-token log-prob (lengths clamped to ≥ 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output, per_token
from .dpo import _check_beta, _check_smoothing, smoothed_logistic
from .registry import register_loss


def average_logps(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """(avg_w, avg_l): per-token log-probs of the chosen and rejected completions."""
    return (
        per_token(inputs.policy_chosen_logps, inputs.chosen_lengths),
        per_token(inputs.policy_rejected_logps, inputs.rejected_lengths),
    )


class _ReferenceFree(PreferenceLoss):
    requires_reference = False
    requires_lengths = True


@register_loss("simpo")
class SimPOLoss(_ReferenceFree):
    r"""Simple Preference Optimization, Meng et al. 2024 (arXiv 2405.14734), Eq. 6.

    Per pair: ``−log σ(β (avg_w − avg_l) − γ)``, defaults β = 2.0, γ = ``gamma`` = 0.5;
    with ``label_smoothing`` ε the cDPO-style smoothed form. Rewards: β·avg.

    Args:
        beta (float): β, the scale of the length-normalized reward; the paper uses 2 to 10. Default 2.0; range (0,
            ∞).
        gamma (float): γ, the target reward margin. Default 0.5; range [0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
    """

    def __init__(self, beta: float = 2.0, gamma: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        self.beta, self.gamma, self.label_smoothing = beta, gamma, label_smoothing
        self.monotonic = label_smoothing == 0

    def compute(self, inputs: LossInputs) -> LossOutput:
        avg_w, avg_l = average_logps(inputs)
        logits = self.beta * (avg_w - avg_l) - self.gamma
        return mean_output(smoothed_logistic(logits, self.label_smoothing), self.beta * avg_w, self.beta * avg_l)


@register_loss("cpo")
class CPOLoss(_ReferenceFree):
    r"""Contrastive Preference Optimization, Xu et al. 2024 (arXiv 2401.08417), Eq. 3.

    Per pair: ``−log σ(β (log π_θ(y_w|x) − log π_θ(y_l|x))) + α · (−avg_w)``, α = ``alpha`` = 1.0:
    DPO with a uniform reference plus the negative log-likelihood of the chosen completion.
    Rewards: β·log π_θ (summed), as TRL's CPOTrainer logs them.

    Args:
        beta (float): β, the scale of the log-likelihood difference (a uniform reference). Default 0.1; range (0,
            ∞).
        alpha (float): α, the weight of the chosen completion's negative log-likelihood. Default 1.0; range [0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
    """

    def __init__(self, beta: float = 0.1, alpha: float = 1.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        self.beta, self.alpha, self.label_smoothing = beta, alpha, label_smoothing
        self.monotonic = label_smoothing == 0

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = inputs.policy_chosen_logps, inputs.policy_rejected_logps
        preference = smoothed_logistic(self.beta * (chosen - rejected), self.label_smoothing)
        nll = -per_token(chosen, inputs.chosen_lengths)
        return mean_output(
            preference + self.alpha * nll,
            self.beta * chosen,
            self.beta * rejected,
            nll_loss=nll.mean(),
            preference_loss=preference.mean(),
        )


def log_odds(average_logp: Tensor) -> Tensor:
    """lo(a) = a − log(1 − e^a), the log-odds of a per-token probability e^a (a ≤ 0).

    log(1 − e^a) is computed as log(−expm1(a)), exact near a = 0; a is capped just below 0
    so that a completion with probability 1 gives a large finite value instead of +inf.
    """
    a = average_logp.clamp(max=-1e-6)
    return a - torch.log(-torch.expm1(a))


@register_loss("orpo")
class ORPOLoss(_ReferenceFree):
    r"""Odds Ratio Preference Optimization, Hong et al. 2024 (arXiv 2403.07691), Eq. 6-7.

    Per pair: ``−avg_w + β · (−log σ(lo(avg_w) − lo(avg_l)))``, lo(a) = a − log(1 − e^a);
    β is the paper's λ (default 0.1). Rewards: β·avg, as TRL's ORPOTrainer logs them.

    Args:
        beta (float): β, the paper's λ: the weight of the odds-ratio term beside the NLL. Default 0.1; range (0, ∞).
    """

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta

    def compute(self, inputs: LossInputs) -> LossOutput:
        avg_w, avg_l = average_logps(inputs)
        log_odds_ratio = log_odds(avg_w) - log_odds(avg_l)
        odds_loss = -F.logsigmoid(log_odds_ratio)
        nll = -avg_w
        return mean_output(
            nll + self.beta * odds_loss,
            self.beta * avg_w,
            self.beta * avg_l,
            # TRL's names: log_odds_chosen is the log odds ratio itself, log_odds_ratio its log-sigmoid
            nll_loss=nll.mean(),
            log_odds_chosen=log_odds_ratio.mean(),
            log_odds_ratio=-odds_loss.mean(),
        )


@register_loss("sft", "nll")
class SFTLoss(_ReferenceFree):
    r"""Supervised fine-tuning on the chosen completion: ``−avg_w`` per pair.

    The NLL is averaged over each pair's tokens, then over pairs (every pair weighs the same); TRL's
    ``sft`` loss type pools all chosen tokens of the batch instead (long completions weigh more).
    CPO's and ORPO's NLL terms are per-pair averages the same way.

    The per-pair mean token negative log-likelihood; combined with DPO it gives RPO
    (Pang et al. 2024, arXiv 2404.19733) through the ``weighted`` loss. The rejected
    completion does not enter, so it has no rewards.
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        avg_w = per_token(inputs.policy_chosen_logps, inputs.chosen_lengths)
        return mean_output(-avg_w)
