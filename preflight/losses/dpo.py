"""DPO (seed Eq. 7) and the variants that keep its logistic form.

Notation used in every docstring here: ρ_w = log π_θ(y_w|x) − log π_ref(y_w|x),
ρ_l likewise for y_l, h = ρ_w − ρ_l, σ the logistic sigmoid, β the KL strength.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import LossInputs, LossOutput, PreferenceLoss, mean_output, per_token
from .registry import register_loss

Divergence = Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"]

# exp() of more than this overflows float32; f-divergences with an exponential are capped here.
_MAX_EXP = 80.0


def log_ratios(inputs: LossInputs) -> tuple[Tensor, Tensor]:
    """(ρ_w, ρ_l): policy minus reference log-probs of the chosen and the rejected completion."""
    chosen = inputs.policy_chosen_logps - inputs.reference_chosen_logps
    rejected = inputs.policy_rejected_logps - inputs.reference_rejected_logps
    return chosen, rejected


def smoothed_logistic(logits: Tensor, label_smoothing: float) -> Tensor:
    """−(1−ε) log σ(z) − ε log σ(−z): the logistic loss with smoothed labels (ε = 0: plain)."""
    losses = -F.logsigmoid(logits)
    if label_smoothing:
        losses = (1 - label_smoothing) * losses - label_smoothing * F.logsigmoid(-logits)
    return losses


def _check_beta(beta: float) -> None:
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta}")


def _check_smoothing(label_smoothing: float) -> None:
    """ε is the assumed fraction of flipped labels: from 0.5 on, the smoothed loss prefers the rejected answer."""
    if not 0 <= label_smoothing < 0.5:
        raise ValueError(
            f"label_smoothing must be in [0, 0.5), got {label_smoothing}: at 0.5 and above the loss "
            "prefers the rejected answer"
        )


@register_loss("dpo", "sigmoid")
class DPOLoss(PreferenceLoss):
    r"""Direct Preference Optimization, Rafailov et al. 2023 (arXiv 2305.18290), seed Eq. 7.

    Per pair: ``−log σ(β h)``, h = ρ_w − ρ_l.

    With ``label_smoothing`` ε > 0 it is conservative DPO (cDPO, Mitchell 2023):
    ``−(1−ε) log σ(β h) − ε log σ(−β h)``.

    ``divergence`` selects the f-divergence of f-DPO (Wang et al. 2023, arXiv 2309.16240):
    h becomes f'(u_w) − f'(u_l) with u = π_θ/π_ref = e^ρ and

    - ``reverse_kl`` (default, plain DPO): f'(u) = log u + 1, so h = ρ_w − ρ_l
    - ``forward_kl``: f'(u) = −1/u, so h = e^{−ρ_l} − e^{−ρ_w}
    - ``js_divergence``: f'(u) = log(2u/(1+u)), so h = log σ(ρ_w) − log σ(ρ_l)
    - ``alpha_divergence``: f'(u) = (1 − u^{−α})/α, so h = (e^{−αρ_l} − e^{−αρ_w})/α, α ∈ (0, 1)
      (the paper's α; TRL's ``f_alpha_divergence_coef`` is 1 − α).

    Exponents are capped at 80 so that float32 never overflows.
    Rewards for metrics: β ρ_w and β ρ_l.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
        divergence (str): the f-divergence of f-DPO: ``reverse_kl`` (plain DPO), ``forward_kl``, ``js_divergence``
            or ``alpha_divergence``. Default ``reverse_kl``.
        alpha (float): α of ``alpha_divergence`` (unused by the others). Default 0.5; range (0, 1).
    """

    def __init__(
        self,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        divergence: Divergence = "reverse_kl",
        alpha: float = 0.5,
    ) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        if divergence not in ("reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"):
            raise ValueError(
                f"divergence must be one of reverse_kl, forward_kl, js_divergence, alpha_divergence; got {divergence!r}"
            )
        if divergence == "alpha_divergence" and not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1) for alpha_divergence, got {alpha}")
        self.beta, self.label_smoothing, self.divergence, self.alpha = beta, label_smoothing, divergence, alpha
        self.monotonic = label_smoothing == 0  # cDPO's optimum is at σ(βh) = 1 − ε, a finite margin

    def divergence_margin(self, chosen: Tensor, rejected: Tensor) -> Tensor:
        """f'(u_w) − f'(u_l) for the selected f-divergence."""
        if self.divergence == "reverse_kl":
            return chosen - rejected
        if self.divergence == "js_divergence":
            return F.logsigmoid(chosen) - F.logsigmoid(rejected)
        a = 1.0 if self.divergence == "forward_kl" else self.alpha
        f_prime = lambda rho: -torch.exp((-a * rho).clamp(max=_MAX_EXP)) / a  # noqa: E731 (constant 1/a cancels)
        return f_prime(chosen) - f_prime(rejected)

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        logits = self.beta * self.divergence_margin(chosen, rejected)
        return mean_output(smoothed_logistic(logits, self.label_smoothing), self.beta * chosen, self.beta * rejected)


@register_loss("robust")
class RobustDPOLoss(PreferenceLoss):
    r"""Robust DPO (rDPO), Chowdhury et al. 2024 (arXiv 2403.00409): unbiased under label noise ε.

    Per pair: ``[−(1−ε) log σ(β h) + ε log σ(−β h)] / (1 − 2ε)``, ε ∈ [0, 0.5).

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        label_smoothing (float): ε, the label-noise rate the loss is unbiased under. Default 0.0; range [0, 0.5).
    """

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        self.beta, self.label_smoothing = beta, label_smoothing

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        logits = self.beta * (chosen - rejected)
        eps = self.label_smoothing
        losses = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
        return mean_output(losses, self.beta * chosen, self.beta * rejected)


@register_loss("sigmoid_norm")
class SigmoidNormLoss(PreferenceLoss):
    r"""Length-normalized DPO: ``−log σ(β (ρ_w/|y_w| − ρ_l/|y_l|))``.

    The DPO loss on per-token log-ratios (as TRL's ``sigmoid_norm``), so long completions
    do not dominate the margin. Lengths are clamped to at least 1.

    Args:
        beta (float): the KL strength β, on per-token log-ratios. Default 0.1; range (0, ∞).
        label_smoothing (float): ε, the assumed probability that a pair's label is flipped (cDPO's smoothing).
            Default 0.0; range [0, 0.5).
    """

    requires_lengths = True

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        _check_beta(beta)
        _check_smoothing(label_smoothing)
        self.beta, self.label_smoothing = beta, label_smoothing
        self.monotonic = label_smoothing == 0

    def compute(self, inputs: LossInputs) -> LossOutput:
        rho_w, rho_l = log_ratios(inputs)
        chosen = per_token(rho_w, inputs.chosen_lengths)
        rejected = per_token(rho_l, inputs.rejected_lengths)
        losses = smoothed_logistic(self.beta * (chosen - rejected), self.label_smoothing)
        return mean_output(losses, self.beta * rho_w, self.beta * rho_l)  # TRL's rewards: β times the summed ratio


@register_loss("dpop", "dpo_positive")
class DPOPositiveLoss(PreferenceLoss):
    r"""DPO-Positive (DPOP), Pal et al. 2024 (arXiv 2402.13228).

    Per pair: ``−log σ(β (h − λ · max(0, log π_ref(y_w|x) − log π_θ(y_w|x))))``, λ = ``lambda_``.
    The penalty keeps the chosen likelihood from falling below the reference's.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        lambda_ (float): λ, the weight of the penalty on the chosen log-ratio falling below the reference's. Default
            50.0; range [0, ∞) (0 is DPO).
    """

    def __init__(self, beta: float = 0.1, lambda_: float = 50.0) -> None:
        super().__init__()
        _check_beta(beta)
        if lambda_ < 0:
            raise ValueError(f"lambda_ must be >= 0, got {lambda_}")
        self.beta, self.lambda_ = beta, lambda_

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        penalty = torch.relu(-chosen)  # = max(0, reference_chosen − policy_chosen)
        losses = -F.logsigmoid(self.beta * (chosen - rejected - self.lambda_ * penalty))
        return mean_output(losses, self.beta * chosen, self.beta * rejected, penalty=penalty.mean())


@register_loss("length_regularized", "rdpo")
class LengthRegularizedDPOLoss(PreferenceLoss):
    r"""R-DPO, Park et al. 2024, "Disentangling Length from Quality in DPO" (arXiv 2403.19159), Eq. 9.

    Per pair: ``−log σ(β h + α (|y_w| − |y_l|))``, α = ``alpha``.

    Sign: the paper regularizes the reward by −α|y| (r ← r − α|y| in the RL objective of
    seed Eq. 3), so the implicit reward becomes β ρ + α|y| and the Bradley-Terry margin
    gains +α(|y_w| − |y_l|). A longer chosen completion therefore already earns part of the
    margin and the policy is not pushed to grow its length to win it.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        alpha (float): α, the margin per token of length difference (the reward's −α|y|). Default 0.01; range [0, ∞)
            (0 is DPO).
    """

    requires_lengths = True

    def __init__(self, beta: float = 0.1, alpha: float = 0.01) -> None:
        super().__init__()
        _check_beta(beta)
        self.beta, self.alpha = beta, alpha

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        length_gap = inputs.chosen_lengths.to(chosen.dtype) - inputs.rejected_lengths.to(chosen.dtype)
        losses = -F.logsigmoid(self.beta * (chosen - rejected) + self.alpha * length_gap)
        return mean_output(losses, self.beta * chosen, self.beta * rejected)


@register_loss("discopop")
class DiscoPOPLoss(PreferenceLoss):
    r"""DiscoPOP (log-ratio modulated loss), Chan et al. 2024 (arXiv 2406.08414), Eq. 5.

    With z = β h and m = σ(z/τ): ``−log σ(z) (1 − m) + e^{−z} m``, τ = ``tau``.

    The product e^{−z}·σ(z/τ) is evaluated as exp(−z + log σ(z/τ)), which stays finite
    where e^{−z} alone would overflow (z ≪ 0 makes m vanish faster than e^{−z} grows).

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        tau (float): τ, the temperature of the modulation σ(βh/τ). Default 0.05; range (0, ∞).
    """

    monotonic = False

    def __init__(self, beta: float = 0.1, tau: float = 0.05) -> None:
        super().__init__()
        _check_beta(beta)
        if not tau > 0:
            raise ValueError(f"tau must be > 0, got {tau}")
        self.beta, self.tau = beta, tau

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        z = self.beta * (chosen - rejected)
        logistic = -F.logsigmoid(z) * torch.sigmoid(-z / self.tau)  # 1 − σ(z/τ) = σ(−z/τ)
        exponential = torch.exp((-z + F.logsigmoid(z / self.tau)).clamp(max=_MAX_EXP))
        return mean_output(logistic + exponential, self.beta * chosen, self.beta * rejected)


@register_loss("exo_pair")
class EXOPairLoss(PreferenceLoss):
    r"""EXO for pairs, Ji et al. 2024 (arXiv 2402.00856), Eq. 16: the reverse KL from the model's
    preference distribution to the smoothed label distribution (1−ε, ε).

    Per pair: ``σ(βh)(log σ(βh) − log(1−ε)) + σ(−βh)(log σ(−βh) − log ε)``, ε > 0 (default 1e-3).
    Its minimum is at σ(βh) = 1 − ε, so it is not monotonic in h.

    Args:
        beta (float): the KL strength β of the implicit reward β·log(π_θ/π_ref), typically 0.1 to 0.5. Default 0.1;
            range (0, ∞).
        label_smoothing (float): ε of the smoothed label distribution (1−ε, ε) the model's is pulled to. Default
            0.001; range (0, 0.5).
    """

    monotonic = False

    def __init__(self, beta: float = 0.1, label_smoothing: float = 1e-3) -> None:
        super().__init__()
        _check_beta(beta)
        if not 0 < label_smoothing < 1:
            raise ValueError(f"exo_pair needs label_smoothing in (0, 1), got {label_smoothing}")
        self.beta, self.label_smoothing = beta, label_smoothing

    def compute(self, inputs: LossInputs) -> LossOutput:
        chosen, rejected = log_ratios(inputs)
        z = self.beta * (chosen - rejected)
        eps = self.label_smoothing
        losses = torch.sigmoid(z) * (F.logsigmoid(z) - math.log1p(-eps)) + torch.sigmoid(-z) * (
            F.logsigmoid(-z) - math.log(eps)
        )
        return mean_output(losses, self.beta * chosen, self.beta * rejected)
