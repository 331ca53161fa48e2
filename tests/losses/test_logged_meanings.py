"""Logged values keep TRL's meaning where they keep TRL's names (computed here by hand)."""

import math

import pytest
import torch

from preflight.losses import LossInputs, get_loss, build_loss

PW, PL, RW, RL = -12.0, -17.5, -13.0, -18.0  # policy / reference log-probs of one pair
LW, LL = 10, 1  # completion lengths: per token the rejected gained more, in sum the chosen did


def one_pair():
    t = lambda v: torch.tensor([v])  # noqa: E731
    return LossInputs(
        policy_chosen_logps=t(PW),
        policy_rejected_logps=t(PL),
        reference_chosen_logps=t(RW),
        reference_rejected_logps=t(RL),
        chosen_lengths=torch.tensor([LW]),
        rejected_lengths=torch.tensor([LL]),
    )


@pytest.mark.parametrize("loss", [{"name": "ipo", "beta": 0.5}, {"name": "sigmoid_norm", "beta": 0.5}])
def test_length_normalized_losses_log_trls_summed_rewards(loss):
    out = build_loss(loss)(one_pair())
    assert out.chosen_rewards.item() == pytest.approx(0.5 * (PW - RW))
    assert out.rejected_rewards.item() == pytest.approx(0.5 * (PL - RL))
    # per-token and summed rewards disagree on this pair's order; TRL's accuracy is the summed one
    assert (PW - RW) / LW < (PL - RL) / LL and (PW - RW) > (PL - RL)
    assert (out.chosen_rewards > out.rejected_rewards).item()


def test_orpo_logs_trls_log_odds_names():
    beta = 0.1
    out = get_loss("orpo", beta=beta)(one_pair())
    avg_w, avg_l = PW / LW, PL / LL
    log_odds = lambda a: a - math.log1p(-math.exp(a))  # noqa: E731
    ratio = log_odds(avg_w) - log_odds(avg_l)
    assert out.metrics["log_odds_chosen"].item() == pytest.approx(ratio, rel=1e-5)
    assert out.metrics["log_odds_ratio"].item() == pytest.approx(-math.log1p(math.exp(-ratio)), rel=1e-5)


def test_a_loss_twice_in_a_weighted_sum_logs_both_terms():
    out = build_loss(
        {
            "name": "weighted",
            "terms": [{"name": "dpo", "beta": 0.1, "weight": 1.0}, {"name": "dpo", "beta": 1.0, "weight": 0.5}],
        }
    )(one_pair())
    h = (PW - RW) - (PL - RL)
    assert out.metrics["dpo_1_loss"].item() == pytest.approx(math.log1p(math.exp(-0.1 * h)), rel=1e-5)
    assert out.metrics["dpo_2_loss"].item() == pytest.approx(math.log1p(math.exp(-1.0 * h)), rel=1e-5)
    assert "dpo_loss" not in out.metrics
