"""Losses that regress or bound the log-ratio margin instead of taking its log-sigmoid.

Notation as in `dpo.py`: ρ = policy − reference log-prob, h = ρ_w − ρ_l.
"""

from __future__ import annotations

import torch

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output, per_token
from .dpo import _check_beta, log_ratios
from .registry import register_loss


@register_loss("ipo")
class IPOLoss(PreferenceLoss):
    r"""Identity Preference Optimization, Azar et al. 2023 (arXiv 2310.12036), Eq. 17.

    Per pair: ``(h' − 1/(2β))²`` (β is the paper's τ), with
    h' = ρ_w/|y_w| − ρ_l/|y_l| when ``length_normalize`` (default, as TRL, which confirmed
    this form with the IPO authors) and h' = h when False (as written in the paper and in
    the DPO reference code). Lengths are clamped to at least 1.

    Args:
        beta (float): β, the paper's τ: the loss pulls the margin to 1/(2β). Default 0.1; range (0, ∞).
        length_normalize (bool): per-token log-ratios (True, as TRL) or summed ones (False, as the paper). Default
            True.
    """

    monotonic = False

    def __init__(self, beta: float = 0.1, length_normalize: bool = True) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta, self.length_normalize = beta, length_normalize

    @property
    def requires_lengths(self) -> bool:  # type: ignore[override]
        return self.length_normalize

    def compute(self, inputs: LossInputs) -> LossOutput:
        rho_w, rho_l = log_ratios(inputs)
        chosen, rejected = rho_w, rho_l
        if self.length_normalize:
            chosen = per_token(chosen, inputs.chosen_lengths)
            rejected = per_token(rejected, inputs.rejected_lengths)
        losses = (chosen - rejected - 1 / (2 * self.beta)) ** 2
        # logged rewards keep TRL's meaning, β times the summed log-ratio, whatever the loss normalizes
        return mean_output(losses, self.beta * rho_w, self.beta * rho_l)


@register_loss("hinge", "rso")
class HingeLoss(PreferenceLoss):
    r"""Hinge loss of SLiC / RSO, Zhao et al. 2023 (arXiv 2305.10425) and Liu et al. 2023 (arXiv 2309.06657).

    Per pair: ``max(0, 1 − β h)``.

    Args:
        beta (float): β: pairs whose margin β·h exceeds 1 add no loss. Default 0.1; range (0, ∞).
    """

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        losses = torch.relu(1 - self.beta * (chosen - rejected))
        return mean_output(losses, self.beta * chosen, self.beta * rejected)


@register_loss("sppo_hard")
class SPPOHardLoss(PreferenceLoss):
    r"""Self-Play Preference Optimization with hard labels, Wu et al. 2024 (arXiv 2405.00675), Eq. 4.7
    with P = 1 for the winner and 0 for the loser.

    Per pair: ``(ρ_w − 1/(2β))² + (ρ_l + 1/(2β))²``.

    Args:
        beta (float): β: the chosen log-ratio is pulled to 1/(2β), the rejected to −1/(2β). Default 0.1; range (0,
            ∞).
    """

    monotonic = False

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        target = 1 / (2 * self.beta)
        losses = (chosen - target) ** 2 + (rejected + target) ** 2
        return mean_output(losses, self.beta * chosen, self.beta * rejected)
