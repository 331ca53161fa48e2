"""Losses that anchor each completion's log-ratio on its own, not only their difference.

Notation as in `dpo.py`: ρ = policy − reference log-prob, h = ρ_w − ρ_l.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output
from .dpo import _check_beta, log_ratios
from .registry import register_loss


class _AnchoredLoss(PreferenceLoss):
    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta


@register_loss("nca_pair")
class NCAPairLoss(_AnchoredLoss):
    r"""Noise Contrastive Alignment for pairs, Chen et al. 2024 (arXiv 2402.05369).

    Per pair: ``−log σ(βρ_w) − ½ log σ(−βρ_w) − ½ log σ(−βρ_l)``.
    Not monotonic in ρ_w: its optimum in ρ_w is finite.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
    """

    monotonic = False

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        w, l = self.beta * chosen, self.beta * rejected
        losses = -F.logsigmoid(w) - 0.5 * F.logsigmoid(-w) - 0.5 * F.logsigmoid(-l)
        return mean_output(losses, w, l)


@register_loss("bco_pair")
class BCOPairLoss(_AnchoredLoss):
    r"""Binary Classifier Optimization on pairs, Jung et al. 2024 (arXiv 2404.04656).

    Per pair: ``−log σ(βρ_w) − log σ(−βρ_l)``: chosen classified as good, rejected as bad.
    This is the paper's form with its reward shift δ = 0, the same as TRL 1.16's ``bco_pair``.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        w, l = self.beta * chosen, self.beta * rejected
        return mean_output(-F.logsigmoid(w) - F.logsigmoid(-l), w, l)


@register_loss("apo_zero")
class APOZeroLoss(_AnchoredLoss):
    r"""Anchored Preference Optimization, zero variant, D'Oosterlinck et al. 2024 (arXiv 2408.06266), Eq. 7.

    Per pair: ``1 − σ(βρ_w) + σ(βρ_l)``: raise the chosen likelihood, lower the rejected.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        w, l = self.beta * chosen, self.beta * rejected
        return mean_output(1 - torch.sigmoid(w) + torch.sigmoid(l), w, l)


@register_loss("apo_down")
class APODownLoss(_AnchoredLoss):
    r"""Anchored Preference Optimization, down variant (arXiv 2408.06266), Eq. 8.

    Per pair: ``σ(βρ_w) + 1 − σ(β h)``: lower both likelihoods, the rejected more.
    Not monotonic in ρ_w by design.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
    """

    monotonic = False

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        w, l = self.beta * chosen, self.beta * rejected
        return mean_output(torch.sigmoid(w) + 1 - torch.sigmoid(w - l), w, l)
