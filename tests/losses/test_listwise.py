"""The list-wise losses equal their papers' formulas, written here with plain Python loops over each list."""

import math
import random

import pytest
import torch

from preflight.losses import LossInputs, get_loss

BETA = 0.3


def lists(seed=0, B=6, K=5):
    """Lists of 2..K completions (padded to K), integer scores with ties (never all tied), log-probs."""
    rng = random.Random(seed)
    policy, reference, scores, mask = [], [], [], []
    for b in range(B):
        n = 2 + b % (K - 1)
        s = [rng.randint(0, 3) for _ in range(n)]
        s[0], s[1] = 4, 0
        rng.shuffle(s)
        policy.append([rng.uniform(-40, -5) for _ in range(n)] + [0.0] * (K - n))
        reference.append([rng.uniform(-40, -5) for _ in range(n)] + [0.0] * (K - n))
        scores.append(s + [0] * (K - n))
        mask.append([True] * n + [False] * (K - n))
    inputs = LossInputs(
        policy_logps=torch.tensor(policy, dtype=torch.float64),
        reference_logps=torch.tensor(reference, dtype=torch.float64),
        scores=torch.tensor(scores, dtype=torch.float64),
        list_mask=torch.tensor(mask),
    )
    plain = [
        ([BETA * (p - r) for p, r, m in zip(P, R, M) if m], [s for s, m in zip(S, M) if m])
        for P, R, S, M in zip(policy, reference, scores, mask)
    ]
    return inputs, plain


def lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def log_sigmoid(x):
    return -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))


def plackett_luce(r, s):
    """−Σ_k log softmax over the completions not yet ranked; ties: each against itself and those strictly below."""
    return -sum(
        r[i] - lse([r[i]] + [r[j] for j in range(len(r)) if s[j] < s[i]]) for i in range(len(r)) if min(s) < s[i]
    )


def lipo(r, s):
    order = sorted(range(len(r)), key=lambda i: -r[i])
    rank = {i: order.index(i) + 1 for i in range(len(r))}
    total = 0.0
    for i in range(len(r)):
        for j in range(len(r)):
            if s[i] > s[j]:
                delta = abs((2 ** s[i] - 1) - (2 ** s[j] - 1)) * abs(
                    1 / math.log2(1 + rank[i]) - 1 / math.log2(1 + rank[j])
                )
                total += -delta * log_sigmoid(r[i] - r[j])
    return total


def infonca(r, s, alpha):
    target = [math.exp(v / alpha - lse([w / alpha for w in s])) for v in s]
    return -sum(t * (v - lse(r)) for t, v in zip(target, r))


def softmax_dpo(r, s):
    w = s.index(max(s))
    return -log_sigmoid(-lse([r[j] - r[w] for j in range(len(r)) if s[j] < s[w]]))


@pytest.mark.parametrize(
    "name, formula, kwargs",
    [
        ("plackett_luce", plackett_luce, {}),
        ("lipo_lambda", lipo, {}),
        ("infonca", lambda r, s: infonca(r, s, 0.5), {"temperature": 0.5}),
        ("softmax_dpo", softmax_dpo, {}),
    ],
)
def test_list_losses_equal_their_formulas(name, formula, kwargs):
    for seed in range(3):
        inputs, plain = lists(seed)
        out = get_loss(name, beta=BETA, **kwargs)(inputs)
        want = [formula(r, s) for r, s in plain]
        assert out.losses.tolist() == pytest.approx(want, rel=1e-5, abs=1e-6)
        assert float(out.loss) == pytest.approx(sum(want) / len(want), rel=1e-5)
        # the metrics: the best's and the worst's implicit rewards, the per-list ranking accuracy
        assert out.chosen_rewards.tolist() == pytest.approx([r[s.index(max(s))] for r, s in plain], rel=1e-5)
        assert out.rejected_rewards.tolist() == pytest.approx([r[s.index(min(s))] for r, s in plain], rel=1e-5)
        accuracy = []
        for r, s in plain:
            ordered = [(i, j) for i in range(len(s)) for j in range(len(s)) if s[i] > s[j]]
            accuracy.append(sum(r[i] > r[j] for i, j in ordered) / len(ordered))
        assert out.metrics["rewards/list_accuracies"].tolist() == pytest.approx(accuracy)


def test_with_two_completions_plackett_luce_and_softmax_dpo_are_dpo():
    inputs, plain = lists(seed=4, K=2)
    dpo = [-log_sigmoid(r[s.index(max(s))] - r[s.index(min(s))]) for r, s in plain]
    for name in ("plackett_luce", "softmax_dpo"):
        assert get_loss(name, beta=BETA)(inputs).losses.tolist() == pytest.approx(dpo, rel=1e-6)


def test_padding_takes_no_gradient_and_the_reference_none():
    inputs, _ = lists(seed=5)
    inputs.policy_logps.requires_grad_(True)
    inputs.reference_logps.requires_grad_(True)
    for name in ("plackett_luce", "lipo_lambda", "infonca", "softmax_dpo"):
        inputs.policy_logps.grad = None
        get_loss(name)(inputs).loss.backward()
        grad = inputs.policy_logps.grad
        assert torch.isfinite(grad).all() and (grad[~inputs.list_mask] == 0).all(), name
        assert inputs.reference_logps.grad is None


def test_lipo_gains_relative_to_the_top_score_equal_the_formula_at_large_scores():
    """Scores up to 124 (2^124 ≈ 2e37, near float32's limit): the shifted gains still give the paper's weights."""
    inputs, plain = lists(1)
    inputs.scores = inputs.scores + 120.0
    out = get_loss("lipo_lambda", beta=BETA)(inputs)
    want = [lipo(r, [v + 120 for v in s]) for r, s in plain]
    assert torch.isfinite(out.losses).all()
    assert out.losses.tolist() == pytest.approx(want, rel=1e-5)


def test_plackett_luce_reward_is_plackett_luce_over_a_reward_models_scores_and_bradley_terry_at_two():
    inputs, plain = lists(2)
    rewards = inputs.policy_logps / 10  # any scores
    reward_inputs = LossInputs(list_rewards=rewards, scores=inputs.scores, list_mask=inputs.list_mask)
    out = get_loss("plackett_luce_reward")(reward_inputs)
    want = [
        plackett_luce([v for v, m in zip(row, mask) if m], [s for s, m in zip(scores, mask) if m])
        for row, scores, mask in zip(rewards.tolist(), inputs.scores.tolist(), inputs.list_mask.tolist())
    ]
    assert out.losses.tolist() == pytest.approx(want, rel=1e-5)
    two = LossInputs(
        list_rewards=torch.tensor([[1.5, -0.25], [0.3, 0.9]]),
        scores=torch.tensor([[1.0, 0.0], [2.0, 1.0]]),
        list_mask=torch.ones(2, 2, dtype=torch.bool),
    )
    bt = get_loss("bradley_terry")(
        LossInputs(chosen_rewards=torch.tensor([1.5, 0.3]), rejected_rewards=torch.tensor([-0.25, 0.9]))
    )
    assert get_loss("plackett_luce_reward")(two).losses.tolist() == pytest.approx(bt.losses.tolist(), rel=1e-6)
