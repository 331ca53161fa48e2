"""`preflight experiment bandit --quick` from the command, its measurements checked against naive loops."""

import csv
import math

import pytest
import torch

from preflight.experiments.bandit import Bandit, kl


def rows(path):
    return list(csv.DictReader(open(path)))


def test_the_optimum_and_kl_are_the_formulas():
    bandit = Bandit.make(3, 4, seed=5)
    beta = 0.7
    optimum = bandit.optimum(beta)
    g = torch.Generator().manual_seed(0)
    for x in range(3):
        ref, r = bandit.reference[x].exp().tolist(), bandit.reward[x].tolist()

        def objective(p):  # E_p[r] − β KL(p ‖ π_ref), seed Eq. 3, by a loop
            return sum(pi * ri for pi, ri in zip(p, r)) - beta * sum(pi * math.log(pi / qi) for pi, qi in zip(p, ref))

        best = objective(optimum[x].exp().tolist())
        for _ in range(50):  # no perturbed policy does better
            other = torch.softmax(optimum[x] + 0.3 * torch.randn(4, generator=g, dtype=torch.float64), -1).tolist()
            assert objective(other) < best
    p, q = torch.log_softmax(torch.randn(3, 4, dtype=torch.float64), -1), bandit.reference
    naive = sum(sum(math.exp(p[i, j]) * (p[i, j] - q[i, j]) for j in range(4)) for i in range(3)) / 3
    assert kl(p, q) == pytest.approx(float(naive), abs=1e-12)


def test_pairs_follow_the_bradley_terry_model():
    bandit = Bandit.make(2, 3, seed=1)
    x, chosen, rejected = bandit.pairs(20000, seed=0)
    a, b = 0, 1  # among pairs of responses {0, 1} of prompt 0: how often 0 wins
    mask = (x == 0) & (((chosen == a) & (rejected == b)) | ((chosen == b) & (rejected == a)))
    wins = ((chosen == a) & mask).sum().item() / mask.sum().item()
    expected = 1 / (1 + math.exp(-(bandit.reward[0, a] - bandit.reward[0, b]).item()))
    assert abs(wins - expected) < 4 * math.sqrt(expected * (1 - expected) / mask.sum().item())
    assert bool((chosen != rejected).all())
    x, chosen, rejected = bandit.pairs(500, seed=0, deterministic=True)
    assert bool((bandit.reward[x, chosen] > bandit.reward[x, rejected]).all())


def test_bandit_command_measures_dpo_reaching_the_optimum(preflight, workdir):
    result = preflight("experiment", "bandit", "--quick", "--losses", "dpo,ipo", "--out", "bandit")
    assert result.code == 0, result.err
    assert result.out.startswith("# Bandit: 8 prompts × 6 responses, β = 0.5")
    assert "preflight: experiment: wrote bandit/bandit.png" in result.preflight_lines()
    table = rows(workdir / "bandit/bandit.csv")
    dpo = {int(r["pairs"]): float(r["kl_to_optimum"]) for r in table if r["loss"] == "dpo"}
    assert list(dpo) == [100, 1000, 10000]
    assert dpo[100] > dpo[1000] > dpo[10000] and dpo[10000] < 0.05  # KL(π_θ ‖ π*) → 0 with data
    rmse = {int(r["pairs"]): float(r["implicit_reward_rmse"]) for r in table if r["loss"] == "dpo"}
    assert rmse[10000] < 0.2  # β log π/π_ref = r + const(x), seed Eq. 5
    reward_model = {int(r["pairs"]): float(r["rank_correlation"]) for r in rows(workdir / "bandit/reward_model.csv")}
    assert reward_model[10000] > 0.9
    trace = rows(workdir / "bandit/deterministic.csv")
    best = lambda loss: [float(r["prob_of_best"]) for r in trace if r["loss"] == loss]  # noqa: E731
    assert best("dpo")[-1] > 0.99  # drifts to the deterministic policy
    ipo = best("ipo")
    assert ipo[-1] < 0.5 and abs(ipo[-1] - ipo[len(ipo) // 2]) < 1e-3  # bounded, settled where β puts it


def test_a_reward_loss_or_unknown_name_is_a_one_line_error(preflight, workdir):
    result = preflight("experiment", "bandit", "--quick", "--losses", "bt")
    assert result.code == 2 and result.preflight_lines() == [
        "preflight: error: loss 'bt' trains a reward model, not a policy"]
    assert preflight("experiment", "bandit", "--losses", "nope").code == 2
    assert not (workdir / "experiments").exists()  # nothing written
