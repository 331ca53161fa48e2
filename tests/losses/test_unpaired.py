"""The unpaired losses equal their papers' formulas (as TRL computes them), written here row by row in Python."""

import math
import random

import pytest
import torch

from preflight.losses import LossInputs, get_loss
from preflight.testing import check_loss

BETA = 0.2


def rows(seed=0, n=7):
    """Unpaired rows: policy and reference log-probs of each completion and of its mismatched row, labels."""
    rng = random.Random(seed)
    data = [
        dict(
            policy=rng.uniform(-40, -5),
            reference=rng.uniform(-40, -5),
            kl_policy=rng.uniform(-40, -5),
            kl_reference=rng.uniform(-40, -5),
            label=rng.random() < 0.5,
        )
        for _ in range(n)
    ]
    data[0]["label"], data[1]["label"] = True, False
    tensor = lambda key: torch.tensor([r[key] for r in data], dtype=torch.float64)  # noqa: E731
    inputs = LossInputs(
        policy_logps=tensor("policy"),
        reference_logps=tensor("reference"),
        policy_kl_logps=tensor("kl_policy"),
        reference_kl_logps=tensor("kl_reference"),
        labels=torch.tensor([r["label"] for r in data]),
    )
    return inputs, data


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x > 0 else x - math.log1p(math.exp(x))


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.33, 0.5)])
def test_kto_is_eq7_with_the_batch_reference_point(weights):
    inputs, data = rows()
    dw, uw = weights
    out = get_loss("kto", beta=BETA, desirable_weight=dw, undesirable_weight=uw)(inputs)
    z0 = max(0.0, sum(r["kl_policy"] - r["kl_reference"] for r in data) / len(data))
    expected = []
    for r in data:
        rho = r["policy"] - r["reference"]
        expected.append(dw * (1 - sigmoid(BETA * (rho - z0))) if r["label"] else uw * (1 - sigmoid(BETA * (z0 - rho))))
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-9)
    assert float(out.loss) == pytest.approx(sum(expected) / len(expected), rel=1e-9)
    assert float(out.metrics["kl"]) == pytest.approx(z0)
    chosen = [BETA * (r["policy"] - r["reference"]) for r in data if r["label"]]
    assert out.metrics["rewards/chosen"].tolist() == pytest.approx(chosen)
    assert out.chosen_rewards is None and out.rejected_rewards is None  # no row has a partner


def test_kto_reference_point_is_clamped_at_zero_and_carries_no_gradient():
    inputs, data = rows(seed=1)
    inputs.policy_kl_logps = (inputs.reference_kl_logps - 3.0).requires_grad_(True)  # a negative estimate
    inputs.policy_logps.requires_grad_(True)
    out = get_loss("kto", beta=BETA)(inputs)
    assert float(out.metrics["kl"]) == 0.0
    out.loss.backward()
    assert inputs.policy_kl_logps.grad is None or not inputs.policy_kl_logps.grad.any()
    assert inputs.policy_logps.grad.abs().sum() > 0


def test_apo_zero_unpaired_pushes_desirable_up_and_undesirable_down():
    inputs, data = rows(seed=2)
    out = get_loss("apo_zero_unpaired", beta=BETA)(inputs)
    expected = [
        1 - sigmoid(BETA * (r["policy"] - r["reference"]))
        if r["label"]
        else sigmoid(BETA * (r["policy"] - r["reference"]))
        for r in data
    ]
    assert out.losses.tolist() == pytest.approx(expected, rel=1e-9)


def test_bco_shifts_by_the_running_mean_of_every_reward_seen_in_training():
    loss = get_loss("bco", beta=BETA)
    seen = []
    for seed in (3, 4):
        inputs, data = rows(seed=seed, n=5 + seed)
        rewards = [BETA * (r["policy"] - r["reference"]) for r in data]
        seen += rewards
        delta = sum(seen) / len(seen)  # this batch included, as TRL's running moments
        out = loss(inputs)
        expected = [
            -log_sigmoid(rw - delta) if r["label"] else -log_sigmoid(-(rw - delta)) for rw, r in zip(rewards, data)
        ]
        assert out.losses.tolist() == pytest.approx(expected, rel=1e-9)
        assert float(out.metrics["delta"]) == pytest.approx(delta)
    state = loss.state_dict()  # the running mean is saved with the module (so in checkpoints)
    assert float(state["reward_count"]) == len(seen) and float(state["reward_sum"]) == pytest.approx(sum(seen))
    loss.eval()  # evaluation reads δ without moving it
    inputs, _ = rows(seed=9)
    loss(inputs)
    assert float(loss.reward_count) == len(seen)
    restored = get_loss("bco", beta=BETA)
    restored.load_state_dict(state)
    assert float(restored.reward_sum / restored.reward_count) == pytest.approx(sum(seen) / len(seen))


@pytest.mark.parametrize("name", ["kto", "apo_zero_unpaired", "bco"])
def test_unpaired_losses_pass_the_contract(name):
    assert len(check_loss(name, verbose=False)) == 7


def test_a_pair_loss_and_an_unpaired_loss_refuse_each_others_data_in_one_line():
    from preflight.losses.registry import LossConfigError, check_data_kind

    with pytest.raises(LossConfigError) as err:
        check_data_kind(get_loss("dpo"), "unpaired")
    assert str(err.value) == (
        "loss 'dpo' takes pairs, but the data gives unpaired completions (prompt, completion, label): choose an "
        "unpaired loss (apo_zero_unpaired, bco, kto), or give pairs"
    )
    with pytest.raises(LossConfigError) as err:
        check_data_kind(get_loss("kto"), "pairs")
    assert str(err.value) == (
        "loss 'kto' takes unpaired completions, but the data gives pairs: train it on unpaired rows (prompt, "
        "completion, label), or turn pairs into them with data.unpair: true"
    )
