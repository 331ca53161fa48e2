"""Each loss against its formula, evaluated pair by pair with `math` on hand-written numbers."""

import math

import pytest
import torch

from preflight.losses import LossInputs, get_loss

# Three hand-written pairs: policy/reference log-probs, completion lengths, reward scores.
PC = [-12.0, -30.5, -4.25]  # policy chosen
PR = [-15.0, -28.0, -9.75]  # policy rejected
RC = [-13.5, -29.0, -4.0]  # reference chosen
RR = [-14.0, -29.5, -8.0]  # reference rejected
LC = [6, 20, 2]  # |y_w|
LR = [8, 17, 5]  # |y_l|
RW = [1.5, -0.25, 0.75]  # reward-model score, chosen
RL = [0.5, 0.5, 2.0]  # reward-model score, rejected
MARGIN = [0.0, 1.0, 0.5]


def inputs(dtype=torch.float64) -> LossInputs:
    t = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    return LossInputs(
        policy_chosen_logps=t(PC),
        policy_rejected_logps=t(PR),
        reference_chosen_logps=t(RC),
        reference_rejected_logps=t(RR),
        chosen_lengths=torch.tensor(LC),
        rejected_lengths=torch.tensor(LR),
        chosen_rewards=t(RW),
        rejected_rewards=t(RL),
        margin=t(MARGIN),
    )


def sig(x):
    return 1 / (1 + math.exp(-x))


def logsig(x):
    return -math.log1p(math.exp(-x)) if x > -30 else x - math.log1p(math.exp(x))


def pairs():
    for pc, pr, rc, rr, lc, lr in zip(PC, PR, RC, RR, LC, LR):
        rho_w, rho_l = pc - rc, pr - rr
        yield dict(pc=pc, pr=pr, rho_w=rho_w, rho_l=rho_l, h=rho_w - rho_l, lc=lc, lr=lr)


def expected_per_pair(fn):
    return [fn(**p) for p in pairs()]


def assert_losses(name, expected, **hp):
    out = get_loss(name, **hp)(inputs())
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert out.loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-6)
    return out


B = 0.1


def test_dpo_is_seed_eq7():
    out = assert_losses("dpo", expected_per_pair(lambda h, **_: -logsig(B * h)))
    assert out.chosen_rewards.tolist() == pytest.approx([B * p["rho_w"] for p in pairs()])
    assert out.rejected_rewards.tolist() == pytest.approx([B * p["rho_l"] for p in pairs()])


def test_conservative_dpo():
    e = 0.2
    assert_losses(
        "dpo", expected_per_pair(lambda h, **_: -(1 - e) * logsig(B * h) - e * logsig(-B * h)), label_smoothing=e
    )


def test_fdpo_forward_kl():
    fp = lambda rho: -1 / math.exp(rho)  # noqa: E731  f'(u) = -1/u, u = e^rho
    expected = expected_per_pair(lambda rho_w, rho_l, **_: -logsig(B * (fp(rho_w) - fp(rho_l))))
    assert_losses("dpo", expected, divergence="forward_kl")


def test_fdpo_js_divergence():
    fp = lambda rho: math.log(2 * math.exp(rho) / (1 + math.exp(rho)))  # noqa: E731
    expected = expected_per_pair(lambda rho_w, rho_l, **_: -logsig(B * (fp(rho_w) - fp(rho_l))))
    assert_losses("dpo", expected, divergence="js_divergence")


def test_fdpo_alpha_divergence():
    a = 0.3
    fp = lambda rho: (1 - math.exp(rho) ** (-a)) / a  # noqa: E731
    expected = expected_per_pair(lambda rho_w, rho_l, **_: -logsig(B * (fp(rho_w) - fp(rho_l))))
    assert_losses("dpo", expected, divergence="alpha_divergence", alpha=a)


def test_robust():
    e = 0.1
    expected = expected_per_pair(lambda h, **_: (-(1 - e) * logsig(B * h) + e * logsig(-B * h)) / (1 - 2 * e))
    assert_losses("robust", expected, label_smoothing=e)


def test_ipo_length_normalized_and_not():
    b = 0.5
    expected = expected_per_pair(lambda rho_w, rho_l, lc, lr, **_: (rho_w / lc - rho_l / lr - 1 / (2 * b)) ** 2)
    assert_losses("ipo", expected, beta=b)
    expected = expected_per_pair(lambda h, **_: (h - 1 / (2 * b)) ** 2)
    assert_losses("ipo", expected, beta=b, length_normalize=False)


def test_hinge():
    assert_losses("hinge", expected_per_pair(lambda h, **_: max(0.0, 1 - B * h)), beta=B)
    assert_losses("rso", expected_per_pair(lambda h, **_: max(0.0, 1 - 0.9 * h)), beta=0.9)


def test_exo_pair():
    e = 1e-3

    def exo(h, **_):
        z = B * h
        return sig(z) * (logsig(z) - math.log(1 - e)) + sig(-z) * (logsig(-z) - math.log(e))

    assert_losses("exo_pair", expected_per_pair(exo))


def test_nca_pair():
    expected = expected_per_pair(
        lambda rho_w, rho_l, **_: -logsig(B * rho_w) - 0.5 * logsig(-B * rho_w) - 0.5 * logsig(-B * rho_l)
    )
    assert_losses("nca_pair", expected)


def test_bco_pair():
    assert_losses("bco_pair", expected_per_pair(lambda rho_w, rho_l, **_: -logsig(B * rho_w) - logsig(-B * rho_l)))


def test_sppo_hard():
    expected = expected_per_pair(lambda rho_w, rho_l, **_: (rho_w - 1 / (2 * B)) ** 2 + (rho_l + 1 / (2 * B)) ** 2)
    assert_losses("sppo_hard", expected)


def test_aot_sorts_margins_across_the_batch():
    policy_gap = sorted(pc - pr for pc, pr in zip(PC, PR))
    reference_gap = sorted(rc - rr for rc, rr in zip(RC, RR))
    expected = [-logsig(B * (p - r)) for p, r in zip(policy_gap, reference_gap)]
    assert_losses("aot", expected)
    rho_w = sorted(p["rho_w"] for p in pairs())
    rho_l = sorted(p["rho_l"] for p in pairs())
    assert_losses("aot_unpaired", [-logsig(B * (w - l)) for w, l in zip(rho_w, rho_l)])


def test_apo_zero_and_down():
    assert_losses("apo_zero", expected_per_pair(lambda rho_w, rho_l, **_: 1 - sig(B * rho_w) + sig(B * rho_l)))
    assert_losses("apo_down", expected_per_pair(lambda rho_w, h, **_: sig(B * rho_w) + 1 - sig(B * h)))


def test_discopop():
    tau = 0.05

    def disco(h, **_):
        z = B * h
        m = sig(z / tau)
        return -logsig(z) * (1 - m) + math.exp(-z) * m

    assert_losses("discopop", expected_per_pair(disco))


def test_sigmoid_norm():
    assert_losses(
        "sigmoid_norm", expected_per_pair(lambda rho_w, rho_l, lc, lr, **_: -logsig(B * (rho_w / lc - rho_l / lr)))
    )


def test_dpop():
    lam = 50.0
    expected = expected_per_pair(lambda rho_w, h, **_: -logsig(B * (h - lam * max(0.0, -rho_w))))
    assert_losses("dpop", expected)
    # the penalty is active on a pair whose chosen log-prob fell below the reference's
    assert any(p["rho_w"] < 0 for p in pairs()) and any(p["rho_w"] > 0 for p in pairs())


def test_length_regularized():
    a = 0.05
    assert_losses(
        "length_regularized", expected_per_pair(lambda h, lc, lr, **_: -logsig(B * h + a * (lc - lr))), alpha=a
    )


def test_simpo():
    b, g = 2.0, 0.5
    assert_losses("simpo", expected_per_pair(lambda pc, pr, lc, lr, **_: -logsig(b * (pc / lc - pr / lr) - g)))


def test_cpo():
    a = 1.0
    assert_losses("cpo", expected_per_pair(lambda pc, pr, lc, **_: -logsig(B * (pc - pr)) + a * (-pc / lc)))


def test_orpo():
    lo = lambda a: a - math.log(1 - math.exp(a))  # noqa: E731
    expected = expected_per_pair(lambda pc, pr, lc, lr, **_: -pc / lc + B * -logsig(lo(pc / lc) - lo(pr / lr)))
    assert_losses("orpo", expected)


def test_sft():
    assert_losses("sft", expected_per_pair(lambda pc, lc, **_: -pc / lc))
    assert_losses("nll", expected_per_pair(lambda pc, lc, **_: -pc / lc))


def test_bradley_terry_is_seed_eq2():
    expected = [-logsig(w - l - m) for w, l, m in zip(RW, RL, MARGIN)]
    assert_losses("bradley_terry", expected)
    c = 0.01
    expected = [-logsig(w - l - m) + c * (w + l) ** 2 for w, l, m in zip(RW, RL, MARGIN)]
    assert_losses("bt", expected, center_rewards_coefficient=c)
    no_margin = inputs()
    no_margin.margin = None
    out = get_loss("reward")(no_margin)
    assert out.losses.tolist() == pytest.approx([-logsig(w - l) for w, l in zip(RW, RL)])


def test_weighted_sum_mpo():
    terms = [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft", "weight": 1.0}]
    expected = expected_per_pair(
        lambda h, rho_w, rho_l, pc, lc, **_: (
            0.8 * -logsig(B * h) + 0.2 * (-logsig(B * rho_w) - logsig(-B * rho_l)) + 1.0 * (-pc / lc)
        )
    )
    out = assert_losses("weighted", expected, terms=terms)
    assert out.metrics["sft_loss"].item() == pytest.approx(sum(-p["pc"] / p["lc"] for p in pairs()) / 3)
    assert get_loss("weighted", terms=terms).requires_reference
    assert not get_loss("weighted", terms=[{"name": "simpo"}, {"name": "sft"}]).requires_reference


def test_float32_arithmetic_under_bf16_inputs():
    out = get_loss("dpo")(inputs(torch.bfloat16))
    assert out.loss.dtype == torch.float32
    bf = (
        [round_bf16(v) for v in PC],
        [round_bf16(v) for v in PR],
        [round_bf16(v) for v in RC],
        [round_bf16(v) for v in RR],
    )
    expected = [-logsig(B * ((pc - rc) - (pr - rr))) for pc, pr, rc, rr in zip(*bf)]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-6)


def round_bf16(v):
    return torch.tensor(v, dtype=torch.bfloat16).item()
