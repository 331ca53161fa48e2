"""Losses over whole lists of scored completions (``input_kind = "lists"``, data with ``pairs_from_lists: list``).

Notation in every docstring here: a list holds completions y_1..y_K of one prompt with scores s_1..s_K (from the
data; ties allowed), r_i = β (log π_θ(y_i|x) − log π_ref(y_i|x)) is the implicit reward of y_i, σ the logistic
sigmoid. Shorter lists of a batch are padded; padded entries never enter a sum. DPO over every pair of a list is
the pair loss ``dpo`` with ``pairs_from_lists: all`` (the pairs' mean, equal to DPO on the exploded pairs).

Each loss reports, besides the pairwise metrics of the best against the worst completion (``rewards/chosen`` is
the best's r, ``rewards/rejected`` the worst's), ``rewards/list_accuracies``: per list, the fraction of its
differently-scored pairs whose implicit rewards are ordered as the scores.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import PreflightConfigError
from .base import LossInputs, LossOutput, PreferenceLoss
from .dpo import _check_beta
from .registry import register_loss

NEG_INF = float("-inf")


def implicit_rewards(inputs: LossInputs, beta: float) -> Tensor:
    """r = β (policy − reference) per completion [B, K], 0 at padding."""
    return torch.where(inputs.list_mask, beta * (inputs.policy_logps - inputs.reference_logps), 0.0)


def ordered_pairs(inputs: LossInputs) -> Tensor:
    """[B, K, K] True where completion i scores strictly above completion j (both real)."""
    mask = inputs.list_mask
    return (inputs.scores[:, :, None] > inputs.scores[:, None, :]) & mask[:, :, None] & mask[:, None, :]


def list_output(losses: Tensor, rewards: Tensor, inputs: LossInputs, **metrics: Tensor) -> LossOutput:
    """The `LossOutput` of a list loss: the mean over lists; the best's and the worst's rewards for the pairwise
    metrics (the first of each among ties), and the per-list ranking accuracy."""
    scores = inputs.scores
    best = torch.where(inputs.list_mask, scores, NEG_INF).argmax(-1)
    worst = torch.where(inputs.list_mask, scores, float("inf")).argmin(-1)
    rewards = rewards.detach()
    pairs = ordered_pairs(inputs)
    right = (pairs & (rewards[:, :, None] > rewards[:, None, :])).sum((1, 2))
    accuracy = right.float() / pairs.sum((1, 2)).clamp(min=1).float()
    return LossOutput(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=rewards.gather(1, best[:, None]).squeeze(1),
        rejected_rewards=rewards.gather(1, worst[:, None]).squeeze(1),
        metrics={"rewards/list_accuracies": accuracy, **{k: v.detach() for k, v in metrics.items()}},
    )


class ListLoss(PreferenceLoss):
    """Base of the list-wise losses: whole lists in, one loss per list out."""

    input_kind = "lists"

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta = beta


@register_loss("plackett_luce", "listwise_dpo")
class PlackettLuceLoss(ListLoss):
    r"""DPO's generalization to rankings under the Plackett–Luce model (Rafailov et al. 2023, arXiv 2305.18290,
    Appendix A.3).

    Per list, with τ the ranking by score (best first): ``−Σ_k log( exp(r_τ(k)) / Σ_{j ≥ k} exp(r_τ(j)) )``.

    Ties: completion i competes against itself and the completions scored strictly below it,
    ``−Σ_i log( exp(r_i) / (exp(r_i) + Σ_{j: s_j < s_i} exp(r_j)) )`` over the completions that score above some
    other; without ties this is the formula above (the last rank's term is log 1 = 0), and tied completions are
    never contrasted with each other. K = 2 is DPO.

    Args:
        beta: the KL strength β of the implicit reward.
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        r = implicit_rewards(inputs, self.beta)
        return list_output(plackett_luce_losses(r, inputs), r, inputs)


def plackett_luce_losses(r: Tensor, inputs: LossInputs) -> Tensor:
    """Per list [B]: ``−Σ_i log( exp(r_i) / (exp(r_i) + Σ_{j: s_j < s_i} exp(r_j)) )`` over the completions scored
    above some other (ties never contrasted), for rewards `r` [B, K]."""
    below = ordered_pairs(inputs)  # [B, i, j]: j strictly below i
    itself = torch.eye(r.shape[1], dtype=torch.bool, device=r.device)[None]
    competitors = torch.where(below | itself, r[:, None, :], NEG_INF)
    terms = r - torch.logsumexp(competitors, dim=-1)
    ranked = below.any(-1)  # i has some completion below it
    return -(terms * ranked).sum(-1)


@register_loss("plackett_luce_reward")
class PlackettLuceRewardLoss(PreferenceLoss):
    r"""A reward model's loss on ranked lists: the Plackett–Luce model over its rewards (the list form of the seed's
    Eq. 2; Plackett 1975, as used for reward models by Zhu et al. 2023, arXiv 2301.11270).

    Per list, with τ the ranking by score (best first): ``−Σ_k log( exp(r_τ(k)) / Σ_{j ≥ k} exp(r_τ(j)) )``, r the
    reward model's scores; ties as `plackett_luce` (tied completions never contrasted). K = 2 is ``bradley_terry``.
    ``RewardModule`` with ``data.pairs_from_lists: list`` gives it whole lists.
    """

    input_kind = "reward_lists"
    requires_reference = False

    def compute(self, inputs: LossInputs) -> LossOutput:
        r = torch.where(inputs.list_mask, inputs.list_rewards, 0.0)
        return list_output(plackett_luce_losses(r, inputs), r, inputs)


@register_loss("lipo_lambda", "lipo")
class LiPOLambdaLoss(ListLoss):
    r"""LiPO-λ, list-wise preference optimization with the LambdaLoss weighting (Liu et al. 2024,
    arXiv 2402.01878).

    Per list: ``Σ_{i,j: s_i > s_j} Δ_ij · (−log σ(r_i − r_j))`` with the lambda weight
    ``Δ_ij = |G_i − G_j| · |1/D(τ_i) − 1/D(τ_j)|``, the gain G_i = 2^{s_i} − 1 and the discount
    D(τ) = log₂(1 + τ), τ_i the rank (1 = first) of completion i when the list is sorted by the policy's implicit
    rewards r. Δ is computed from detached values: it weights the pairs, it is not trained. Scores are the
    paper's labels ψ (its experiments use small integers or probabilities; large scores make 2^s large).
    The gains are computed relative to each list's top score m, ``|G_i − G_j| = 2^m · |2^{s_i−m} − 2^{s_j−m}|``
    (the −1 cancels), so no gain overflows; a list scored 128 or more, whose weights 2^m float32 cannot hold,
    is refused naming its top score.

    Args:
        beta: the KL strength β of the implicit reward.
    """

    #: Δ follows the ranks by r: raising one completion's r re-ranks the list and moves the other pairs' weights.
    monotonic = False

    def compute(self, inputs: LossInputs) -> LossOutput:
        r = implicit_rewards(inputs, self.beta)
        pairs = ordered_pairs(inputs)
        with torch.no_grad():
            ranked = torch.where(inputs.list_mask, r, NEG_INF)
            rank = torch.argsort(torch.argsort(ranked, dim=-1, descending=True, stable=True), dim=-1) + 1
            discount = 1.0 / torch.log2(1.0 + rank.float())
            delta, top = lambda_weights(inputs.scores, inputs.list_mask, discount)
        pair_losses = -F.logsigmoid(r[:, :, None] - r[:, None, :])
        losses = torch.exp2(top) * torch.where(pairs, delta * pair_losses, 0.0).sum((1, 2))
        return list_output(losses, r, inputs)


def lambda_weights(scores: Tensor, mask: Tensor, discount: Tensor) -> tuple[Tensor, Tensor]:
    """LiPO's Δ_ij over 2^m and each list's top score m [N]: ``|2^{s_i−m} − 2^{s_j−m}| · |1/D_i − 1/D_j|``."""
    top = torch.where(mask, scores, NEG_INF).amax(-1)
    if bool((top >= FLOAT32_EXPONENT_LIMIT).any()):  # one host sync: the loss would be inf, with no cause given
        raise ScoreRangeError(
            f"lipo_lambda: a list scored up to {float(top.max()):g} weighs its pairs by 2^{float(top.max()):g}, "
            f"beyond float32 (scores below {FLOAT32_EXPONENT_LIMIT} fit); rescale the scores"
        )
    gain = torch.where(mask, torch.exp2(scores - top[:, None]), 0.0)
    delta = (gain[:, :, None] - gain[:, None, :]).abs() * (discount[:, :, None] - discount[:, None, :]).abs()
    return delta, top


#: 2^128 overflows float32
FLOAT32_EXPONENT_LIMIT = 128


class ScoreRangeError(PreflightConfigError):
    """Scores a list-wise loss cannot weigh in float32 (the message names the top score)."""


@register_loss("infonca")
class InfoNCALoss(ListLoss):
    r"""InfoNCA, noise-contrastive alignment with reward-weighted targets (Chen et al. 2024, arXiv 2402.05369).

    Per list: the cross-entropy between the scores' softmax and the implicit rewards' softmax over its K
    completions, ``−Σ_i softmax(s/α)_i · log softmax(r)_i``; α (``temperature``) sets how sharply the target
    favours the best-scored completions. With K = 2 and α → 0 it is DPO.

    Args:
        beta: the KL strength β of the implicit reward.
        temperature: α, the temperature of the scores' softmax (> 0).
    """

    #: A cross-entropy to a target: raising the best completion past its target share raises the loss.
    monotonic = False

    def __init__(self, beta: float = 0.1, temperature: float = 1.0) -> None:
        super().__init__(beta)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def compute(self, inputs: LossInputs) -> LossOutput:
        r = implicit_rewards(inputs, self.beta)
        mask = inputs.list_mask
        target = torch.softmax(torch.where(mask, inputs.scores / self.temperature, NEG_INF), dim=-1)
        log_model = torch.where(mask, torch.log_softmax(torch.where(mask, r, NEG_INF), dim=-1), 0.0)
        losses = -(target * log_model).sum(-1)
        return list_output(losses, r, inputs)


@register_loss("softmax_dpo", "sdpo")
class SoftmaxDPOLoss(ListLoss):
    r"""Multi-negative softmax DPO, one chosen against every worse completion (S-DPO, Chen et al. 2024,
    arXiv 2404.09793).

    Per list, with w the best-scored completion (the first among ties) and N the completions scored strictly
    below it: ``−log σ(−log Σ_{j ∈ N} exp(r_j − r_w))``. With one negative it is DPO.

    Args:
        beta: the KL strength β of the implicit reward.
    """

    def compute(self, inputs: LossInputs) -> LossOutput:
        r = implicit_rewards(inputs, self.beta)
        mask = inputs.list_mask
        best = torch.where(mask, inputs.scores, NEG_INF).argmax(-1, keepdim=True)
        best_score, best_reward = inputs.scores.gather(1, best), r.gather(1, best)
        negatives = mask & (inputs.scores < best_score)
        has = negatives.any(-1, keepdim=True)  # a list without a worse completion adds 0 (and no NaN gradient)
        gaps = torch.where(has, torch.where(negatives, r - best_reward, NEG_INF), 0.0)
        losses = torch.where(has.squeeze(1), F.softplus(torch.logsumexp(gaps, dim=-1)), 0.0)  # −log σ(−x) = softplus(x)
        return list_output(losses, r, inputs)
