"""`preflight experiment bandit`: the exact case of the seed's theory, measured on samples.

An enumerable response space: K prompts, M responses each, a known reward r(x, y) and a reference
policy π_ref(y|x). The KL-regularised objective (seed Eq. 3) has the optimum

    π*(y|x) = π_ref(y|x) exp(r(x, y)/β) / Z(x)                                  (seed Eq. 4)

and DPO's implicit reward β log π_θ/π_ref equals r up to a per-prompt constant at that optimum (Eq. 5).
Pairs are drawn from π_ref and labelled by the Bradley-Terry model of r (Eq. 1); each chosen loss of the
registry (plugins included) trains a tabular policy (one logit per prompt and response) on them,
full-batch. Reported: KL(π_θ ‖ π*) against the number of pairs; the implicit reward against r after
centring per prompt; a Bradley-Terry reward model's rank correlation with r; and the deterministic
case (the better response always wins), where DPO's policy drifts to the deterministic one whatever β,
while IPO's stays where β puts it (Azar et al. 2023, arXiv 2310.12036, §4).

With ``completions`` K > 2, each prompt gets K different responses from π_ref ranked by the Plackett–Luce model
of r (scores r + Gumbel noise: the ranking's law is PL(exp r), whose K = 2 case is Bradley-Terry), and every loss
learns from the same prompts as lists: pair losses from the best against the worst and from all pairs
(`pairs_from_lists`), list-wise losses from whole lists, beside the K = 2 pairs of the main table.

Unpaired feedback (``unpaired_losses``, KTO by default): for n pairs, 2n single responses from π_ref (as many
labelled responses as the pairs hold), each labelled desirable when its reward is above its prompt's mean reward
(``unpaired_labels: mean``) or with probability σ(r) (``bernoulli``); KTO's reference point comes from each row's
prompt with the previous row's response, as its trainer pairs them. Reported: KL(π‖π*) beside DPO's on the n pairs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..datamodules.lists import pairs_from_scores
from ..losses import LossInputs
from ..losses.registry import build_loss
from .common import spec_with_beta, write_csv


@dataclass
class Bandit:
    """A known-reward bandit: rewards r [K, M] and reference log-probs [K, M]."""

    reward: torch.Tensor
    reference: torch.Tensor  # log π_ref

    @classmethod
    def make(cls, prompts: int = 8, responses: int = 6, seed: int = 0) -> "Bandit":
        g = torch.Generator().manual_seed(seed)
        reward = torch.randn(prompts, responses, generator=g, dtype=torch.float64)
        reference = torch.log_softmax(0.5 * torch.randn(prompts, responses, generator=g, dtype=torch.float64), -1)
        return cls(reward, reference)

    def optimum(self, beta: float) -> torch.Tensor:
        """log π* = log softmax(log π_ref + r/β) (seed Eq. 4)."""
        return torch.log_softmax(self.reference + self.reward / beta, -1)

    def prob_of_best(self, log_policy: torch.Tensor) -> float:
        """Mean over prompts of the probability `log_policy` [K, M] gives each prompt's best response."""
        return float(log_policy.gather(1, self.reward.argmax(-1, keepdim=True)).exp().mean())

    def pairs(self, n: int, seed: int, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
        """(prompt, chosen, rejected) of n pairs: two different responses from π_ref, the winner drawn from
        σ(r₁ − r₂) (Bradley-Terry, seed Eq. 1), or always the better one when `deterministic`."""
        g = torch.Generator().manual_seed(10_000 + seed)
        K, M = self.reward.shape
        x = torch.randint(K, (n,), generator=g)
        probs = self.reference.exp()[x]
        first = torch.multinomial(probs, 1, generator=g).squeeze(1)
        others = probs.scatter(1, first[:, None], 0.0)
        second = torch.multinomial(others, 1, generator=g).squeeze(1)
        gap = self.reward[x, first] - self.reward[x, second]
        first_wins = gap > 0 if deterministic else torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(gap)
        return x, torch.where(first_wins, first, second), torch.where(first_wins, second, first)


@dataclass
class Lists:
    """n prompts, K responses each, and their scores: x [n], responses [n, K], scores [n, K]."""

    x: torch.Tensor
    responses: torch.Tensor
    scores: torch.Tensor

    def pairs(self, mode: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(prompt, chosen, rejected) of the pairs `mode` forms from each list (`datamodules.lists`)."""
        x, chosen, rejected = [], [], []
        for n, scores in enumerate(self.scores.tolist()):
            for i, j in pairs_from_scores(scores, mode):
                x.append(int(self.x[n]))
                chosen.append(int(self.responses[n, i]))
                rejected.append(int(self.responses[n, j]))
        return torch.tensor(x), torch.tensor(chosen), torch.tensor(rejected)


@dataclass
class Unpaired:
    """n labelled responses: x [n], responses [n], labels [n] (True: desirable)."""

    x: torch.Tensor
    responses: torch.Tensor
    labels: torch.Tensor


def sample_unpaired(bandit: Bandit, n: int, seed: int, rule: str = "mean") -> Unpaired:
    """n prompts uniformly, one response each from π_ref, labelled desirable when its reward is above the prompt's
    mean reward over its responses (``mean``) or with probability σ(r) (``bernoulli``)."""
    g = torch.Generator().manual_seed(30_000 + seed)
    K, M = bandit.reward.shape
    x = torch.randint(K, (n,), generator=g)
    responses = torch.multinomial(bandit.reference.exp()[x], 1, generator=g).squeeze(1)
    reward = bandit.reward[x, responses]
    if rule == "mean":
        labels = reward > bandit.reward.mean(-1)[x]
    elif rule == "bernoulli":
        labels = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(reward)
    else:
        raise ValueError(f"unpaired_labels must be mean or bernoulli, got {rule!r}")
    return Unpaired(x, responses, labels)


def sample_lists(bandit: Bandit, n: int, k: int, seed: int) -> Lists:
    """n prompts from the K prompts uniformly, k different responses each from π_ref, scored r + Gumbel noise
    (ranked by the Plackett–Luce model of r; for k = 2 the winner is drawn from σ(r₁ − r₂), as `Bandit.pairs`)."""
    g = torch.Generator().manual_seed(20_000 + seed)
    K, M = bandit.reward.shape
    if not 2 <= k <= M:
        raise ValueError(f"completions must be between 2 and the bandit's {M} responses, got {k}")
    x = torch.randint(K, (n,), generator=g)
    responses = torch.multinomial(bandit.reference.exp()[x], k, replacement=False, generator=g)
    uniform = torch.rand(n, k, generator=g, dtype=torch.float64).clamp(1e-12, 1 - 1e-12)
    scores = bandit.reward[x[:, None], responses] - torch.log(-torch.log(uniform))
    return Lists(x, responses, scores)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> float:
    """Mean over prompts of KL(p ‖ q), from log-probs [K, M]."""
    return float((log_p.exp() * (log_p - log_q)).sum(-1).mean())


def make_loss(name: str, beta: float):
    """The registry's loss `name`, with `beta` where it takes one."""
    return build_loss(spec_with_beta(name, beta))


def train_policy(
    bandit: Bandit, loss_name: str, beta: float, data, steps: int, lr: float = 0.05, record_every: int | None = None
) -> tuple[torch.Tensor, list[tuple[int, float, float, float]]]:
    """A tabular policy started at π_ref, trained full-batch with Adam on `data`; returns its log-probs and,
    every `record_every` steps, (step, KL to π_ref, KL to π*, mean probability of each prompt's best response)."""
    loss = make_loss(loss_name, beta)
    if loss.input_kind == "rewards":
        raise ValueError(f"loss {loss_name!r} trains a reward model, not a policy: use it as the reward-model loss")
    wants = {"lists": Lists, "unpaired": Unpaired}.get(loss.input_kind, tuple)
    if not isinstance(data, wants):
        raise ValueError(f"loss {loss_name!r} takes {loss.input_kind if wants is not tuple else 'pairs'}")
    logits = bandit.reference.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([logits], lr=lr)
    optimum, trace = bandit.optimum(beta), []
    for step in range(1, steps + 1):
        logp = torch.log_softmax(logits, -1)
        out = loss(_inputs(bandit, logp, data))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if record_every and (step % record_every == 0 or step == 1):
            current = torch.log_softmax(logits.detach(), -1)
            trace.append((step, kl(current, bandit.reference), kl(current, optimum), bandit.prob_of_best(current)))
    return torch.log_softmax(logits.detach(), -1), trace


def _inputs(bandit: Bandit, logp: torch.Tensor, data) -> LossInputs:
    """The loss inputs of pairs (prompt, chosen, rejected), or of whole `Lists`, under the policy `logp`."""
    if isinstance(data, Unpaired):
        previous = data.responses.roll(1)  # each prompt with the previous row's response: KTO's reference point
        return LossInputs(
            policy_logps=logp[data.x, data.responses],
            reference_logps=bandit.reference[data.x, data.responses],
            labels=data.labels,
            policy_kl_logps=logp[data.x, previous],
            reference_kl_logps=bandit.reference[data.x, previous],
        )
    if isinstance(data, Lists):
        x, responses = data.x[:, None], data.responses
        return LossInputs(
            policy_logps=logp[x, responses],
            reference_logps=bandit.reference[x, responses],
            scores=data.scores,
            list_mask=torch.ones_like(responses, dtype=torch.bool),
        )
    x, chosen, rejected = data
    ones = torch.ones(len(x), dtype=torch.float64)
    return LossInputs(
        policy_chosen_logps=logp[x, chosen],
        policy_rejected_logps=logp[x, rejected],
        reference_chosen_logps=bandit.reference[x, chosen],
        reference_rejected_logps=bandit.reference[x, rejected],
        chosen_lengths=ones,
        rejected_lengths=ones,
    )


def train_reward_model(bandit: Bandit, data, steps: int, lr: float = 0.05, loss_name: str = "bradley_terry"):
    """A tabular reward model r_φ [K, M] trained with the registry's reward loss (seed Eq. 2)."""
    loss = build_loss(loss_name)
    x, chosen, rejected = data
    scores = torch.zeros_like(bandit.reward, requires_grad=True)
    optimizer = torch.optim.Adam([scores], lr=lr)
    for _ in range(steps):
        out = loss(LossInputs(chosen_rewards=scores[x, chosen], rejected_rewards=scores[x, rejected]))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    return scores.detach()


def centred(values: torch.Tensor) -> torch.Tensor:
    return values - values.mean(-1, keepdim=True)


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean over prompts of Spearman's rank correlation between rows of a and b."""
    ranks = lambda t: t.argsort(-1).argsort(-1).double()  # noqa: E731
    ra, rb = centred(ranks(a)), centred(ranks(b))
    return float(((ra * rb).sum(-1) / (ra.norm(dim=-1) * rb.norm(dim=-1)).clamp(min=1e-12)).mean())


@dataclass
class BanditSettings:
    """What `preflight experiment bandit` runs.

    Args:
        losses: registry names of the policy losses compared (plugins included); list-wise losses need
            ``completions`` > 2.
        beta: β of every loss, and of the optimum π*.
        sizes: numbers of preference pairs (prompts, for the lists of ``completions``).
        seeds: data seeds per size (the bandit itself is fixed).
        steps: full-batch Adam steps per policy.
        deterministic_steps: steps of the deterministic-preference run, traced.
        prompts: prompts of the bandit.
        responses: responses per prompt.
        completions: responses drawn per prompt for the comparison of lists (2: no such comparison): pair losses
            learn from the best against the worst and from all pairs, list-wise losses from whole lists.
        unpaired_losses: registry names of the unpaired losses (input kind ``unpaired``) trained on 2n labelled
            responses for each n pairs (none: no unpaired comparison).
        unpaired_labels: how a response is labelled: ``mean`` (desirable above its prompt's mean reward) or
            ``bernoulli`` (desirable with probability σ(r)).
    """

    losses: tuple[str, ...] = ("dpo", "ipo")
    beta: float = 0.5
    sizes: tuple[int, ...] = (30, 100, 300, 1000, 3000, 10000, 30000)
    seeds: int = 3
    steps: int = 2000
    deterministic_steps: int = 4000
    prompts: int = 8
    responses: int = 6
    completions: int = 2
    unpaired_losses: tuple[str, ...] = ("kto",)
    unpaired_labels: str = "mean"

    @classmethod
    def quick(cls, **overrides) -> "BanditSettings":
        """About 10 seconds: 3 sizes, 1 seed, fewer steps."""
        return replace(cls(sizes=(100, 1000, 10000), seeds=1, steps=600, deterministic_steps=1500), **overrides)


def run_bandit(settings: BanditSettings, out: Path) -> dict[str, list[dict]]:
    """Run every part, write ``bandit.csv``, ``reward_model.csv``, ``deterministic.csv`` and ``summary.md``
    into `out`; returns the rows of each table."""
    out.mkdir(parents=True, exist_ok=True)
    bandit = Bandit.make(settings.prompts, settings.responses)
    optimum = bandit.optimum(settings.beta)
    sizes_rows, reward_rows, trace_rows, list_rows, unpaired_rows = [], [], [], [], []
    pair_losses = [name for name in settings.losses if make_loss(name, settings.beta).input_kind != "lists"]
    for n in settings.sizes:
        for seed in range(settings.seeds):
            data = bandit.pairs(n, seed)
            for name in pair_losses:
                policy, _ = train_policy(bandit, name, settings.beta, data, settings.steps)
                implicit = settings.beta * (policy - bandit.reference)
                error = centred(implicit) - centred(bandit.reward)
                sizes_rows.append(
                    {
                        "loss": name,
                        "pairs": n,
                        "seed": seed,
                        "kl_to_optimum": kl(policy, optimum),
                        "kl_to_reference": kl(policy, bandit.reference),
                        "implicit_reward_rmse": float(error.pow(2).mean().sqrt()),
                        "implicit_reward_rank_correlation": rank_correlation(implicit, bandit.reward),
                    }
                )
            scores = train_reward_model(bandit, data, settings.steps)
            reward_rows.append(
                {
                    "pairs": n,
                    "seed": seed,
                    "rank_correlation": rank_correlation(scores, bandit.reward),
                    "centred_rmse": float((centred(scores) - centred(bandit.reward)).pow(2).mean().sqrt()),
                }
            )
            if settings.completions > 2:
                list_rows += compare_lists(bandit, settings, n, seed, optimum)
            unpaired = sample_unpaired(bandit, 2 * n, seed, settings.unpaired_labels)
            for name in settings.unpaired_losses:
                policy, _ = train_policy(bandit, name, settings.beta, unpaired, settings.steps)
                unpaired_rows.append(
                    {
                        "loss": name,
                        "labels": settings.unpaired_labels,
                        "pairs": n,
                        "rows": 2 * n,
                        "desirable": int(unpaired.labels.sum()),
                        "seed": seed,
                        "kl_to_optimum": kl(policy, optimum),
                        "kl_to_reference": kl(policy, bandit.reference),
                    }
                )
    deterministic = bandit.pairs(max(settings.sizes), 0, deterministic=True)
    every = max(1, settings.deterministic_steps // 40)
    for name in pair_losses:
        _, trace = train_policy(
            bandit, name, settings.beta, deterministic, settings.deterministic_steps, record_every=every
        )
        trace_rows += [
            {"loss": name, "step": s, "kl_to_reference": a, "kl_to_optimum": b, "prob_of_best": p}
            for s, a, b, p in trace
        ]
    tables = {"bandit": sizes_rows, "reward_model": reward_rows, "deterministic": trace_rows}
    if list_rows:
        tables["lists"] = list_rows
    if unpaired_rows:
        tables["unpaired"] = unpaired_rows
    for name, rows in tables.items():
        write_csv(out / f"{name}.csv", rows)
    (out / "summary.md").write_text(summary(settings, tables))
    return tables


def compare_lists(bandit: Bandit, settings: BanditSettings, n: int, seed: int, optimum: torch.Tensor) -> list[dict]:
    """Every loss trained on the same n prompts with `completions` responses each: pair losses on the best
    against the worst and on all pairs, list-wise losses on whole lists."""
    lists = sample_lists(bandit, n, settings.completions, seed)
    rows = []
    for name in settings.losses:
        whole = make_loss(name, settings.beta).input_kind == "lists"
        for mode in ("list",) if whole else ("best_worst", "all"):
            data = lists if whole else lists.pairs(mode)
            policy, _ = train_policy(bandit, name, settings.beta, data, settings.steps)
            rows.append(
                {
                    "loss": name,
                    "completions": settings.completions,
                    "pairs_from_lists": mode,
                    "prompts": n,
                    "pairs": n if whole else len(data[0]),
                    "seed": seed,
                    "kl_to_optimum": kl(policy, optimum),
                    "kl_to_reference": kl(policy, bandit.reference),
                }
            )
    return rows


def mean_by(rows: list[dict], keys: tuple[str, ...], value: str) -> dict[tuple, float]:
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    return {k: sum(v) / len(v) for k, v in groups.items()}


def summary(settings: BanditSettings, tables: dict[str, list[dict]]) -> str:
    pair_losses = [loss for loss in settings.losses if any(r["loss"] == loss for r in tables["bandit"])]
    kl_star = mean_by(tables["bandit"], ("loss", "pairs"), "kl_to_optimum")
    rmse = mean_by(tables["bandit"], ("loss", "pairs"), "implicit_reward_rmse")
    rm = mean_by(tables["reward_model"], ("pairs",), "rank_correlation")
    lines = [
        f"# Bandit: {settings.prompts} prompts × {settings.responses} responses, β = {settings.beta}, "
        f"{settings.steps} full-batch Adam steps, mean of {settings.seeds} data seed(s)",
        "",
        "| pairs | "
        + " | ".join(f"{loss}: KL(π‖π*) | {loss}: implicit reward RMSE" for loss in pair_losses)
        + " | reward model: rank correlation |",
        "| --- |" + " --- | --- |" * len(pair_losses) + " --- |",
    ]
    for n in settings.sizes:
        cells = [f"{kl_star[loss, n]:.4f} | {rmse[loss, n]:.3f}" for loss in pair_losses]
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {rm[(n,)]:.3f} |")
    bandit = Bandit.make(settings.prompts, settings.responses)
    optimal_best = bandit.prob_of_best(bandit.optimum(settings.beta))
    lines += [
        "",
        f"Deterministic preferences ({max(settings.sizes)} pairs, the better response always wins): the "
        f"mean probability of each prompt's best response during training (π* of Eq. 3 gives it "
        f"{optimal_best:.3f}; a deterministic policy 1):",
        "",
        "| step | " + " | ".join(pair_losses) + " |",
        "| --- |" + " --- |" * len(pair_losses),
    ]
    trace = {(r["loss"], r["step"]): r["prob_of_best"] for r in tables["deterministic"]}
    steps = sorted({r["step"] for r in tables["deterministic"]})
    shown = steps[:: max(1, len(steps) // 8)]
    for step in shown + ([steps[-1]] if steps[-1] not in shown else []):
        lines.append(f"| {step} | " + " | ".join(f"{trace[loss, step]:.3f}" for loss in pair_losses) + " |")
    if "lists" in tables:
        lines += list_summary(settings, tables, kl_star)
    if "unpaired" in tables:
        lines += unpaired_summary(settings, tables, kl_star)
    return "\n".join(lines) + "\n"


def unpaired_summary(settings: BanditSettings, tables: dict[str, list[dict]], kl_star: dict) -> list[str]:
    """KL(π‖π*) of the unpaired losses on 2n labelled responses beside the pair losses on n pairs."""
    by = mean_by(tables["unpaired"], ("loss", "pairs"), "kl_to_optimum")
    share = mean_by(tables["unpaired"], ("pairs",), "desirable")
    baseline = [loss for loss in settings.losses if (loss, settings.sizes[0]) in kl_star]
    rule = "above its prompt's mean reward" if settings.unpaired_labels == "mean" else "with probability σ(r)"
    lines = [
        "",
        f"Unpaired feedback: 2n single responses from π_ref, each desirable {rule}, against n pairs: KL(π‖π*)",
        "",
        "| pairs | labelled responses (desirable) | "
        + " | ".join(f"{loss}, n pairs" for loss in baseline)
        + "".join(f" | {loss}, 2n unpaired" for loss in settings.unpaired_losses)
        + " |",
        "| --- | --- |" + " --- |" * (len(baseline) + len(settings.unpaired_losses)),
    ]
    for n in settings.sizes:
        cells = [f"{kl_star[loss, n]:.4f}" for loss in baseline] + [
            f"{by[loss, n]:.4f}" for loss in settings.unpaired_losses
        ]
        lines.append(f"| {n} | {2 * n} ({share[(n,)]:.0f}) | " + " | ".join(cells) + " |")
    return lines


def list_summary(settings: BanditSettings, tables: dict[str, list[dict]], kl_star: dict) -> list[str]:
    """KL(π‖π*) at equal prompts: K = 2 pairs (the main table) against K completions per prompt."""
    K = settings.completions
    by = mean_by(tables["lists"], ("loss", "pairs_from_lists", "prompts"), "kl_to_optimum")
    columns = sorted({(loss, mode) for loss, mode, _ in by}, key=lambda c: (settings.losses.index(c[0]), c[1]))
    baseline = [loss for loss in settings.losses if (loss, settings.sizes[0]) in kl_star]
    lines = [
        "",
        f"{K} completions per prompt (ranked by the Plackett–Luce model of r), against 2 (the pairs above), at the "
        "same number of prompts: KL(π‖π*)",
        "",
        "| prompts | "
        + " | ".join(f"{loss}, K = 2" for loss in baseline)
        + "".join(f" | {loss}, K = {K}, {mode}" for loss, mode in columns)
        + " |",
        "| --- |" + " --- |" * (len(baseline) + len(columns)),
    ]
    for n in settings.sizes:
        cells = [f"{kl_star[loss, n]:.4f}" for loss in baseline] + [
            f"{by[loss, mode, n]:.4f}" for loss, mode in columns
        ]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return lines


def plot_bandit(tables: dict[str, list[dict]], settings: BanditSettings, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    pair_losses = [loss for loss in settings.losses if any(r["loss"] == loss for r in tables["bandit"])]
    for i, loss in enumerate(pair_losses):
        rows = [r for r in tables["bandit"] if r["loss"] == loss]
        means, spreads = [], []
        for n in settings.sizes:
            values = [r["kl_to_optimum"] for r in rows if r["pairs"] == n]
            mean = sum(values) / len(values)
            means.append(mean)
            spreads.append(math.sqrt(sum((v - mean) ** 2 for v in values) / len(values)))
        axes[0].errorbar(settings.sizes, means, yerr=spreads, marker="o", capsize=3, label=loss, color=f"C{i}")
        trace = [r for r in tables["deterministic"] if r["loss"] == loss]
        axes[2].plot([r["step"] for r in trace], [r["prob_of_best"] for r in trace], label=loss, color=f"C{i}")
    if "unpaired" in tables:  # 2n labelled responses against n pairs
        by = mean_by(tables["unpaired"], ("loss", "pairs"), "kl_to_optimum")
        for j, loss in enumerate(settings.unpaired_losses):
            means = [by[loss, n] for n in settings.sizes]
            color = f"C{len(pair_losses) + 3 + j}"
            axes[0].plot(settings.sizes, means, marker="^", ls=":", color=color, label=f"{loss}, 2n unpaired responses")
    if "lists" in tables:  # K completions per prompt, at the same numbers of prompts
        by = mean_by(tables["lists"], ("loss", "pairs_from_lists", "prompts"), "kl_to_optimum")
        for j, (loss, mode) in enumerate(sorted({(loss, mode) for loss, mode, _ in by})):
            means = [by[loss, mode, n] for n in settings.sizes]
            label = f"{loss}, K = {settings.completions}, {mode}"
            axes[0].plot(settings.sizes, means, marker="s", ls="--", color=f"C{len(pair_losses) + j}", label=label)
    axes[0].set(
        xscale="log",
        yscale="log",
        xlabel="preference pairs (prompts, for K completions)",
        ylabel="KL(π_θ ‖ π*)",
        title="KL to the optimum of Eq. 3 against data",
    )
    rm = mean_by(tables["reward_model"], ("pairs",), "rank_correlation")
    axes[1].plot(settings.sizes, [rm[(n,)] for n in settings.sizes], marker="o", color="k", label="reward model")
    corr = mean_by(tables["bandit"], ("loss", "pairs"), "implicit_reward_rank_correlation")
    for i, loss in enumerate(pair_losses):
        axes[1].plot(
            settings.sizes,
            [corr[loss, n] for n in settings.sizes],
            marker="o",
            ls="--",
            color=f"C{i}",
            label=f"{loss} implicit reward",
        )
    axes[1].set(
        xscale="log",
        xlabel="preference pairs",
        ylabel="Spearman ρ with the true reward",
        title="Rewards recovered (rank, per prompt)",
    )
    bandit = Bandit.make(settings.prompts, settings.responses)
    axes[2].axhline(bandit.prob_of_best(bandit.optimum(settings.beta)), color="gray", ls=":", label="π* (Eq. 4)")
    axes[2].set(xlabel="full-batch step", ylabel="mean π_θ(best response)", title="Deterministic preferences")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["Bandit", "BanditSettings", "kl", "plot_bandit", "run_bandit", "train_policy", "train_reward_model"]
