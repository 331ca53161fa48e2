"""`preflight experiment bandit --quick` and `frontier --quick` from the command, their measurements checked
against naive loops and formulas."""

import csv
import json
import math
import sys

import pytest
import torch

from preflight.research.bandit import Bandit, kl


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


@pytest.mark.parametrize("rule", ["mean", "bernoulli"])
def test_unpaired_labels_follow_their_rule(rule):
    from preflight.research.bandit import sample_unpaired

    bandit = Bandit.make(3, 4, seed=2)
    data = sample_unpaired(bandit, 20000, seed=0, rule=rule)
    reward = bandit.reward[data.x, data.responses]
    if rule == "mean":  # desirable exactly when above the prompt's mean reward
        assert bool((data.labels == (reward > bandit.reward.mean(-1)[data.x])).all())
    else:  # desirable with probability σ(r): for each (prompt, response), the share is within 4 standard errors
        for x in range(3):
            for y in range(4):
                mask = (data.x == x) & (data.responses == y)
                n, p = int(mask.sum()), torch.sigmoid(bandit.reward[x, y]).item()
                if n > 100:
                    assert abs(data.labels[mask].double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / n)


def test_bandit_command_measures_dpo_reaching_the_optimum(preflight, workdir):
    """The README's `preflight experiment bandit --quick --losses dpo,ipo`, as written."""
    result = preflight("experiment", "bandit", "--quick", "--losses", "dpo,ipo")
    assert result.code == 0, result.err
    assert result.out.startswith("# Bandit: 8 prompts × 6 responses, β = 0.5")
    folder = workdir / "experiments/bandit"
    assert "preflight: experiment: wrote experiments/bandit/bandit.png" in result.preflight_lines()
    table = rows(folder / "bandit.csv")
    dpo = {int(r["pairs"]): float(r["kl_to_optimum"]) for r in table if r["loss"] == "dpo"}
    assert list(dpo) == [100, 1000, 10000]
    assert dpo[100] > dpo[1000] > dpo[10000] and dpo[10000] < 0.05  # KL(π_θ ‖ π*) → 0 with data
    rmse = {int(r["pairs"]): float(r["implicit_reward_rmse"]) for r in table if r["loss"] == "dpo"}
    assert rmse[10000] < 0.2  # β log π/π_ref = r + const(x), seed Eq. 5
    reward_model = {int(r["pairs"]): float(r["rank_correlation"]) for r in rows(folder / "reward_model.csv")}
    assert reward_model[10000] > 0.9
    trace = rows(folder / "deterministic.csv")
    best = lambda loss: [float(r["prob_of_best"]) for r in trace if r["loss"] == loss]  # noqa: E731
    assert best("dpo")[-1] > 0.99  # drifts to the deterministic policy
    ipo = best("ipo")
    assert ipo[-1] < 0.5 and abs(ipo[-1] - ipo[len(ipo) // 2]) < 1e-3  # bounded, settled where β puts it
    # unpaired feedback: KTO on 2n labelled responses, beside DPO on n pairs
    unpaired = {int(r["pairs"]): r for r in rows(folder / "unpaired.csv") if r["loss"] == "kto"}
    assert [int(unpaired[n]["rows"]) for n in (100, 1000, 10000)] == [200, 2000, 20000]
    kto = [float(unpaired[n]["kl_to_optimum"]) for n in (100, 1000, 10000)]
    assert kto[0] > kto[2] and all(0 < v < float("inf") for v in kto)
    assert "kto, 2n unpaired" in result.out


def test_a_reward_loss_or_unknown_name_is_a_one_line_error(preflight, workdir):
    result = preflight("experiment", "bandit", "--quick", "--losses", "bt")
    assert result.code == 2 and result.preflight_lines() == [
        "preflight: error: loss 'bt' trains a reward model, not a policy"
    ]
    assert preflight("experiment", "bandit", "--losses", "nope").code == 2
    result = preflight("experiment", "bandit", "--quick", "--losses", "kto")
    assert result.code == 2 and result.preflight_lines() == [
        "preflight: error: loss 'kto' learns from unpaired responses: name it in --unpaired-losses"
    ]
    assert not (workdir / "experiments").exists()  # nothing written


# ---------------------------------------------------------------------------------------------- the frontier
def test_the_optimum_of_the_known_reward_task_is_the_formula_by_enumeration():
    from preflight.research.known_reward import optimal_frontier

    rewards = [-3.0, -1.0, 0.0, 0.0, 2.0, 4.0]  # base-policy samples, each of probability 1/n
    for beta in (0.3, 1.0, 5.0):
        weights = [math.exp(r / beta) for r in rewards]
        p = [w / sum(weights) for w in weights]  # π* ∝ π_base exp(r/β), seed Eq. 4
        point = optimal_frontier(rewards, [beta])[0]
        assert point["reward"] == pytest.approx(sum(pi * r for pi, r in zip(p, rewards)), abs=1e-12)
        assert point["kl"] == pytest.approx(sum(pi * math.log(pi * len(rewards)) for pi in p), abs=1e-12)
        assert point["effective_samples"] == pytest.approx(sum(weights) ** 2 / sum(w * w for w in weights))
    loose, tight = optimal_frontier(rewards, [1e4, 1e-3])
    assert loose["kl"] < 1e-6 and loose["reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-3)
    assert tight["reward"] == pytest.approx(4.0) and tight["kl"] == pytest.approx(math.log(len(rewards)), abs=1e-6)
    assert loose["effective_samples"] == pytest.approx(6, abs=1e-3) and tight["effective_samples"] == pytest.approx(1)


def test_pairs_are_labelled_by_the_bradley_terry_model():
    import random

    from preflight.research.known_reward import first_is_preferred

    rng, n = random.Random(0), 20000
    wins = sum(first_is_preferred(1.0, -1.0, rng) for _ in range(n)) / n
    expected = 1 / (1 + math.exp(-2.0))
    assert abs(wins - expected) < 4 * math.sqrt(expected * (1 - expected) / n)
    assert first_is_preferred(1e6, 0.0, rng) and not first_is_preferred(0.0, 1e6, rng)  # no overflow


@pytest.mark.slow  # two minutes on 2 idle cores, many more on a busy machine: pytest -m slow
def test_frontier_command_trains_dpo_past_the_reference_on_the_true_reward(preflight, workdir):
    """The README's `preflight experiment frontier --quick --with-trl`, as written."""
    from preflight.rewards import politeness

    result = preflight("experiment", "frontier", "--quick", "--with-trl")
    assert result.code == 0, result.err
    folder = workdir / "experiments/frontier"
    assert "\n# Reward–KL frontier: dpo and TRL DPO, β ∈ {0.05}, 1 seed(s)\n" in result.out
    lines = result.preflight_lines()
    assert "preflight: experiment: wrote experiments/frontier/frontier.png" in lines
    assert any(line.startswith("preflight: experiment: preflight dpo β=0.05 seed 0: true reward") for line in lines)
    # the task: pairs sampled from the base policy, which answers both politely and rudely, labelled by
    # Bradley-Terry on the true reward: the chosen reply wins as often as σ(|Δr|) says
    pairs = [json.loads(line) for line in (folder / "task/pairs/train.jsonl").read_text().splitlines()]
    rewards = [p[k] for p in pairs for k in ("chosen_reward", "rejected_reward")]
    assert len(pairs) > 300 and min(rewards) < 0 < max(rewards)
    assert all(p["chosen_reward"] == politeness([p["prompt"]], [p["chosen"]])[0] for p in pairs)
    decided = [p for p in pairs if p["chosen_reward"] != p["rejected_reward"]]
    expected = [1 / (1 + math.exp(-abs(p["chosen_reward"] - p["rejected_reward"]))) for p in decided]
    observed = sum(p["chosen_reward"] > p["rejected_reward"] for p in decided)
    assert abs(observed - sum(expected)) < 4 * math.sqrt(sum(q * (1 - q) for q in expected))
    # what the row says is what the run's samples say
    row, trl = rows(folder / "frontier.csv")
    assert (row["trainer"], row["loss"], trl["trainer"], trl["loss"]) == ("preflight", "dpo", "trl", "dpo")
    samples = rows(folder / "runs/preflight_dpo_beta0.05_seed0/generations.csv")
    assert len(samples) == int(row["prompts"]) and 40 <= len(samples) <= 48  # val pairs with two different replies
    mean = lambda key: sum(float(s[key]) for s in samples) / len(samples)  # noqa: E731
    assert float(row["reward"]) == pytest.approx(mean("policy_reward"))
    assert float(row["kl"]) == pytest.approx(mean("log_ratio"))
    assert float(row["reference_reward"]) == pytest.approx(mean("reference_reward"))
    # DPO at a small β beats the reference policy's true reward, at a positive KL
    assert float(row["reward"]) > float(row["reference_reward"]) + 0.5
    assert float(row["win_rate"]) > 0.5 and float(row["kl"]) > 0
    # TRL's DPOTrainer on the same pairs, from the same base, compared with the same base samples
    assert trl["reference_reward"] == row["reference_reward"]
    assert float(trl["reward"]) > float(trl["reference_reward"]) + 0.5 and float(trl["kl"]) > 0
    optimum = rows(folder / "optimum.csv")
    assert all(float(p["kl"]) >= 0 and 1 <= float(p["effective_samples"]) <= len(rewards) for p in optimum)


def test_frontier_bad_arguments_are_one_line_errors(preflight, workdir, monkeypatch):
    result = preflight("experiment", "frontier", "--quick", "--betas", "0.1,x")
    assert result.code == 2 and result.preflight_lines() == [
        "preflight: error: --betas '0.1,x': give numbers separated by commas"
    ]
    assert preflight("experiment", "frontier", "--betas", "0").code == 2
    assert preflight("experiment", "frontier", "--losses", "bt").code == 2
    monkeypatch.setitem(sys.modules, "trl", None)  # TRL not installed
    result = preflight("experiment", "frontier", "--with-trl")
    assert result.code == 2 and result.preflight_lines() == ["preflight: error: --with-trl needs TRL: pip install trl"]
    assert not (workdir / "experiments").exists()  # nothing written


# ---------------------------------------------------------------------------------------------- lists
def test_sampled_lists_rank_by_plackett_luce():
    """Scores r + Gumbel noise: for every two of the K responses, the one above wins as often as σ(r_i − r_j),
    the pairwise marginal of the Plackett–Luce model; the first of the list ranks first with its softmax share."""
    from preflight.research.bandit import sample_lists

    bandit = Bandit.make(1, 4, seed=2)
    lists = sample_lists(bandit, 20000, 4, seed=0)
    assert bool((lists.responses.sort(-1).values == torch.arange(4)).all())  # 4 different responses of 4
    order = lists.scores.argsort(-1, descending=True)
    top = lists.responses.gather(1, order[:, :1]).squeeze(1)
    r = bandit.reward[0]
    for i in range(4):
        share = (top == i).double().mean().item()
        expected = torch.softmax(r, 0)[i].item()
        assert abs(share - expected) < 4 * math.sqrt(expected * (1 - expected) / 20000)

    def score_of(i):
        return lists.scores.gather(1, (lists.responses == i).double().argmax(1, keepdim=True))

    def above(i, j):
        return (score_of(i) > score_of(j)).double().mean().item()

    for i, j in ((0, 1), (1, 3), (2, 3)):
        expected = 1 / (1 + math.exp(-(r[i] - r[j]).item()))
        assert abs(above(i, j) - expected) < 4 * math.sqrt(expected * (1 - expected) / 20000)


def test_bandit_with_lists_compares_k_completions_with_pairs_at_equal_prompts(preflight, workdir):
    result = preflight("experiment", "bandit", "--quick", "--losses", "dpo,plackett_luce", "--completions", "4")
    assert result.code == 0, result.err
    assert "\n4 completions per prompt (ranked by the Plackett–Luce model of r), against 2" in result.out
    assert "preflight: experiment: wrote experiments/bandit/lists.csv" in result.preflight_lines()
    folder = workdir / "experiments/bandit"
    pairs = {int(r["pairs"]): float(r["kl_to_optimum"]) for r in rows(folder / "bandit.csv") if r["loss"] == "dpo"}
    table = rows(folder / "lists.csv")
    assert {(r["loss"], r["pairs_from_lists"]) for r in table} == {
        ("dpo", "best_worst"),
        ("dpo", "all"),
        ("plackett_luce", "list"),
    }
    for r in table:
        n = int(r["prompts"])
        expected_pairs = {"best_worst": n, "list": n}.get(r["pairs_from_lists"], 6 * n)  # all: 4·3/2 (no ties)
        assert int(r["pairs"]) == expected_pairs
        if r["pairs_from_lists"] in ("all", "list"):  # consistent estimators, 6× the comparisons: closer to π*
            assert float(r["kl_to_optimum"]) < pairs[n], r
    assert not (folder / "deterministic.csv").read_text().count("plackett_luce")  # pair losses only there
    refused = preflight("experiment", "bandit", "--quick", "--losses", "infonca")
    assert refused.code == 2 and refused.preflight_lines() == [
        "preflight: error: loss 'infonca' takes whole lists: add --completions K with K > 2 (responses per prompt)"
    ]


@pytest.mark.slow  # a minute on 2 idle cores: pytest -m slow
def test_frontier_with_lists_trains_pair_and_list_losses_from_k_completions(preflight, workdir):
    from preflight.rewards import politeness

    result = preflight(
        "experiment", "frontier", "--quick", "--losses", "dpo,plackett_luce", "--completions", "4", "--out", "f4"
    )
    assert result.code == 0, result.err
    assert "training prompts with 4 completions each sampled from it, ranked by Plackett–Luce" in result.out
    lists = [json.loads(line) for line in (workdir / "f4/task/lists/train.jsonl").read_text().splitlines()]
    assert len(lists) > 300 and all(2 <= len(row["completions"]) <= 4 for row in lists)
    assert all(
        row["rewards"] == politeness([row["prompt"]] * len(row["completions"]), row["completions"]) for row in lists
    )
    for row in rows(workdir / "f4/frontier.csv"):
        assert float(row["reward"]) > float(row["reference_reward"]), row  # both learn the true reward


@pytest.mark.slow  # three minutes on 2 idle cores (each round samples 4 completions for 200 prompts): pytest -m slow
def test_frontier_iterative_rounds_raise_the_true_reward_above_the_base_policy(preflight, workdir):
    """`frontier --quick --iterative 2` with no offline loss: two rounds of `preflight iterate` from the base policy,
    on the training prompts split in two, each prompt's best against worst sample of four, ranked by Plackett–Luce
    on the true reward."""
    result = preflight("experiment", "frontier", "--quick", "--losses", "", "--iterative", "2", "--out", "fi")
    assert result.code == 0, result.err[-3000:]
    assert "\n# Reward–KL frontier: iterative DPO (2 rounds), β ∈ {0.05}, 1 seed(s)\n" in result.out
    (row,) = rows(workdir / "fi/frontier.csv")
    assert (row["trainer"], row["loss"]) == ("iterative", "dpo")
    prompts = [json.loads(line)["prompt"] for line in (workdir / "fi/task/pairs/train.jsonl").read_text().splitlines()]
    run = workdir / "fi/runs/iterative_dpo_beta0.05_seed0"
    seen = []
    for r in (1, 2):
        lists = [json.loads(line) for line in (run / f"rounds/{r}/completions.jsonl").read_text().splitlines()]
        assert all(sum(item["counts"]) == 4 and len(item["scores"]) == len(item["completions"]) for item in lists)
        seen += [item["prompt_index"] for item in lists]
        assert all(item["prompt"] == prompts[item["prompt_index"]] for item in lists)
    assert len(seen) == len(set(seen))  # each prompt in one round: as many pairs in all as offline DPO
    assert len(seen) > 0.9 * len(prompts)
    samples = rows(run / "generations.csv")  # the evaluation writes beside the rounds
    assert float(row["reward"]) == pytest.approx(sum(float(s["policy_reward"]) for s in samples) / len(samples))
    # the round-2 policy's true reward exceeds the base policy's on the same prompts
    assert float(row["reward"]) > float(row["reference_reward"]) + 0.5 and float(row["win_rate"]) > 0.5
