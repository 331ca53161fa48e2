"""The Bradley-Terry reward-model loss (seed Eq. 2)."""

from __future__ import annotations

import torch.nn.functional as F

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output
from .registry import register_loss


@register_loss("bradley_terry", "bt", "reward")
class BradleyTerryLoss(PreferenceLoss):
    r"""Reward-model loss under the Bradley-Terry model, seed Eq. 1-2 (Ouyang et al. 2022,
    arXiv 2203.02155; as used in DPO, arXiv 2305.18290).

    Per pair: ``−log σ(r_w − r_l − m) + c · (r_w + r_l)²``, where r are the reward model's
    scores, m the per-pair ``margin`` (Llama 2, arXiv 2307.09288; 0 when absent) and
    c = ``center_rewards_coefficient`` (Eisenstein et al. 2023, arXiv 2312.09244; default 0)
    keeps the rewards centred at zero.

    Args:
        center_rewards_coefficient (float): c, the weight of the (r_w + r_l)² penalty that keeps the rewards centred
            at zero. Default 0.0; range [0, ∞) (TRL suggests 0.01).
    """

    requires_reference = False
    input_kind = "rewards"

    def __init__(self, center_rewards_coefficient: float = 0.0) -> None:
        super().__init__()
        if center_rewards_coefficient < 0:
            raise ValueError(f"center_rewards_coefficient must be >= 0, got {center_rewards_coefficient}")
        self.center_rewards_coefficient = center_rewards_coefficient

    def compute(self, inputs: LossInputs) -> LossOutput:
        r_w, r_l = inputs.chosen_rewards, inputs.rejected_rewards
        gap = r_w - r_l
        if inputs.margin is not None:
            gap = gap - inputs.margin
        losses = -F.logsigmoid(gap)
        if self.center_rewards_coefficient:
            losses = losses + self.center_rewards_coefficient * (r_w + r_l) ** 2
        return mean_output(losses, r_w, r_l)
