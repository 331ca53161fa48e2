"""The seed's mathematics (../shared/seed/EQUATIONS.md), executable. Each test names its equation.

Discrete problems are built by hand: a few prompts x, a handful of completions y per prompt,
a known reward r(x, y) and a reference policy π_ref(y|x). Everything is float64.
"""

import itertools
import math

import pytest
import torch

from preflight.losses import LossInputs, get_loss

BETA = 0.5
N_PROMPTS, N_COMPLETIONS = 3, 4


@pytest.fixture(autouse=True, scope="module")
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    reward = torch.randn(N_PROMPTS, N_COMPLETIONS, generator=g, dtype=torch.float64)
    ref_logits = torch.randn(N_PROMPTS, N_COMPLETIONS, generator=g, dtype=torch.float64)
    log_ref = torch.log_softmax(ref_logits, dim=-1)
    return reward, log_ref


def bt_probability(r1, r2):
    """Eq. 1 as written: exp r1 / (exp r1 + exp r2)."""
    return torch.exp(r1) / (torch.exp(r1) + torch.exp(r2))


def optimal_policy(reward, log_ref, beta=BETA):
    """Eq. 4: π_r(y|x) = π_ref(y|x) exp(r(x,y)/β) / Z(x), as an explicit sum for Z."""
    unnormalized = torch.exp(log_ref) * torch.exp(reward / beta)
    Z = unnormalized.sum(dim=-1, keepdim=True)
    return unnormalized / Z, Z.squeeze(-1)


def rl_objective(pi, reward, log_ref, beta=BETA):
    """Eq. 3 per prompt: E_{y~π}[r] − β KL(π ‖ π_ref), exact over the finite completion set."""
    kl = (pi * (torch.log(pi) - log_ref)).sum(-1)
    return (pi * reward).sum(-1) - beta * kl


def test_eq1_is_a_sigmoid_of_the_reward_difference():
    r1, r2 = torch.tensor([0.3, -2.0, 5.0]), torch.tensor([1.1, -2.5, -1.0])
    assert torch.allclose(bt_probability(r1, r2), torch.sigmoid(r1 - r2))


def test_eq2_is_the_negative_log_likelihood_of_eq1():
    r_w, r_l = torch.tensor([0.3, -2.0, 5.0, 0.0]), torch.tensor([1.1, -2.5, -1.0, 0.0])
    nll = -torch.log(bt_probability(r_w, r_l))
    out = get_loss("bradley_terry")(LossInputs(chosen_rewards=r_w, rejected_rewards=r_l))
    assert torch.allclose(out.losses, nll, atol=1e-12)
    assert out.loss.item() == pytest.approx(nll.mean().item(), rel=1e-6)


def test_eq1_and_eq4_are_invariant_to_a_prompt_only_shift_of_the_reward():
    """Why Z(x) cancels between Eq. 5 and Eq. 6: r + f(x) gives the same preferences and policy."""
    reward, log_ref = problem()
    shift = torch.tensor([3.0, -7.0, 0.25]).unsqueeze(-1)  # f(x), one value per prompt
    shifted = reward + shift
    for i, j in itertools.combinations(range(N_COMPLETIONS), 2):
        assert torch.allclose(bt_probability(reward[:, i], reward[:, j]), bt_probability(shifted[:, i], shifted[:, j]))
    pi, Z = optimal_policy(reward, log_ref)
    pi_shifted, Z_shifted = optimal_policy(shifted, log_ref)
    assert torch.allclose(pi, pi_shifted)
    assert torch.allclose(Z_shifted, Z * torch.exp(shift.squeeze(-1) / BETA))  # only Z absorbs f(x)


def test_eq5_inverts_eq4():
    reward, log_ref = problem(1)
    pi, Z = optimal_policy(reward, log_ref)
    recovered = BETA * (torch.log(pi) - log_ref) + BETA * torch.log(Z).unsqueeze(-1)
    assert torch.allclose(recovered, reward)


def test_eq6_is_eq1_at_the_reward_of_eq5():
    reward, log_ref = problem(2)
    pi, _ = optimal_policy(reward, log_ref)
    for i, j in itertools.combinations(range(N_COMPLETIONS), 2):
        eq6 = 1 / (
            1 + torch.exp(BETA * (torch.log(pi[:, j]) - log_ref[:, j]) - BETA * (torch.log(pi[:, i]) - log_ref[:, i]))
        )
        assert torch.allclose(eq6, bt_probability(reward[:, i], reward[:, j]))


def test_eq7_equals_eq2_at_the_implicit_reward_of_eq5():
    g = torch.Generator().manual_seed(3)
    pc, pr, rc, rr = -torch.rand(4, 8, generator=g, dtype=torch.float64) * 40  # 8 pairs of log-probs
    log_z = torch.randn(8, generator=g, dtype=torch.float64) * 10  # β log Z(x): any value, it cancels
    dpo = get_loss("dpo", beta=BETA)(LossInputs(pc, pr, rc, rr))
    implicit_w = BETA * (pc - rc) + log_z
    implicit_l = BETA * (pr - rr) + log_z
    bt = get_loss("bradley_terry")(LossInputs(chosen_rewards=implicit_w, rejected_rewards=implicit_l))
    assert torch.allclose(dpo.losses, bt.losses, atol=1e-5)


def test_gradient_analysis_of_dpo():
    """∂L/∂log π(y_w) = −β σ(r̂_l − r̂_w) and ∂L/∂log π(y_l) = +β σ(r̂_l − r̂_w), per pair (then / B for the mean)."""
    g = torch.Generator().manual_seed(4)
    B = 5
    pc, pr, rc, rr = (-torch.rand(B, generator=g, dtype=torch.float64) * 30 for _ in range(4))
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    get_loss("dpo", beta=BETA)(LossInputs(pc, pr, rc, rr)).loss.backward()
    r_w, r_l = BETA * (pc.detach() - rc), BETA * (pr.detach() - rr)
    weight = torch.sigmoid(r_l - r_w)
    assert torch.allclose(pc.grad, -BETA * weight / B, atol=1e-7)
    assert torch.allclose(pr.grad, BETA * weight / B, atol=1e-7)
    # the weight is larger exactly where the implicit reward orders the pair more wrongly
    order = torch.argsort(r_w - r_l)
    assert torch.all(weight[order][:-1] >= weight[order][1:])


def test_eq4_maximizes_eq3():
    reward, log_ref = problem(5)
    pi_star, Z = optimal_policy(reward, log_ref)
    best = rl_objective(pi_star, reward, log_ref)
    assert torch.allclose(best, BETA * torch.log(Z))  # the optimum's value is β log Z(x)
    g = torch.Generator().manual_seed(6)
    for _ in range(200):  # no random policy does better
        other = torch.softmax(torch.randn(N_PROMPTS, N_COMPLETIONS, generator=g, dtype=torch.float64) * 3, -1)
        assert torch.all(rl_objective(other, reward, log_ref) <= best + 1e-12)
    # and gradient ascent on Eq. 3 from π_ref arrives at Eq. 4
    logits = log_ref.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        value = -rl_objective(torch.softmax(logits, -1), reward, log_ref).sum()
        value.backward()
        return value

    for _ in range(3):
        opt.step(closure)
    assert torch.allclose(torch.softmax(logits, -1), pi_star, atol=1e-6)


def test_theorem_dpo_on_bradley_terry_preferences_recovers_the_optimal_policy():
    """Minimizing Eq. 7 over a tabular policy, on preferences drawn from Eq. 1 with a known reward,
    gives π_r of Eq. 4: the reward class is fully represented by the policy."""
    reward, log_ref = problem(7)
    pi_star, _ = optimal_policy(reward, log_ref)
    # All ordered pairs (x, y1, y2); labelled y1 ≻ y2 with the Bradley-Terry probability (population loss).
    xs, y1s, y2s = zip(
        *[(x, i, j) for x in range(N_PROMPTS) for i in range(N_COMPLETIONS) for j in range(N_COMPLETIONS) if i != j]
    )
    xs, y1s, y2s = torch.tensor(xs), torch.tensor(y1s), torch.tensor(y2s)
    p_prefer = torch.sigmoid(reward[xs, y1s] - reward[xs, y2s])
    loss = get_loss("dpo", beta=BETA)
    logits = torch.zeros(N_PROMPTS, N_COMPLETIONS, requires_grad=True)
    opt = torch.optim.LBFGS([logits], max_iter=1000, tolerance_grad=1e-12, tolerance_change=1e-15, history_size=50)

    def closure():
        opt.zero_grad()
        log_pi = torch.log_softmax(logits, -1)
        out = loss(LossInputs(log_pi[xs, y1s], log_pi[xs, y2s], log_ref[xs, y1s], log_ref[xs, y2s]))
        value = (p_prefer * out.losses).sum()  # expected loss: y1 is the chosen one with probability p
        value.backward()
        return value

    for _ in range(3):
        opt.step(closure)
    assert torch.allclose(torch.softmax(logits, -1), pi_star, atol=1e-4)
    # a DPO-trained policy's implicit reward equals the true reward up to a prompt-only shift
    implicit = BETA * (torch.log_softmax(logits.detach(), -1) - log_ref)
    gap = implicit - reward
    assert torch.allclose(gap, gap.mean(-1, keepdim=True).expand_as(gap), atol=1e-3)
    assert math.isfinite(closure().item())
