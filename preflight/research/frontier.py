"""`preflight experiment frontier`: the true reward against the KL to the reference, for every loss and β.

On the known-reward task (`known_reward.KnownRewardTask`: a base policy, pairs sampled from it and
labelled by the Bradley-Terry model of the politeness reward), each chosen loss of the registry (plugins
included) trains the base policy at each β and seed through `PreferenceModule`, as `preflight fit` does.
Each trained policy is then evaluated by `GenerationEval`: one sample per validation prompt, scored by
the true reward, and the Monte-Carlo KL(π_θ ‖ π_base) from those samples (the seed's objective, Eq. 3,
trades exactly these two; DPO, arXiv 2305.18290, §6.1 and Fig. 2, measured this frontier). With
``--with-trl``, TRL's DPOTrainer trains on the same pairs, from the same base, with the same seeds and
optimizer settings, as one more curve. The optimum of Eq. 3 (`known_reward.optimal_frontier`) is drawn
for comparison. With ``--completions K`` (K > 2) the training prompts carry K sampled completions each, ranked
by the Plackett–Luce model of the true reward: pair losses learn from the pairs ``pairs_from_lists`` forms
(best against worst by default, as best-of-N recipes), list-wise losses from whole lists, at the same number of
prompts as the K = 2 pairs. With ``--iterative R``, DPO also trains by R rounds of `preflight iterate` (each round
samples ``iterative_samples`` completions for the next 1/R of the training prompts from the current policy, ranks
them by the Plackett–Luce model of the true reward, and trains on the best against the worst, the reference fixed at
the base policy): the same number of pairs, β grid, epochs and learning rate as offline DPO, as one more curve.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .common import spec_with_beta, write_csv
from .known_reward import KnownRewardTask, optimal_frontier, read_rows

REWARD = "preflight.rewards:politeness"
MIN_EFFECTIVE_SAMPLES = 30  # the optimum's estimate is shown only where at least this many samples carry it
TRL = "trl"  # the trainer column of TRL's runs (their loss is TRL's sigmoid DPO)
ITERATIVE = "iterative"  # the trainer column of the iterative DPO runs
NOISY_REWARD = "preflight.research.known_reward:plackett_luce_politeness"


@dataclass
class FrontierSettings:
    """What `preflight experiment frontier` runs.

    Args:
        losses: registry names of the policy losses compared (plugins included).
        betas: the β of each run (each loss's own β: DPO's and IPO's regularisation, SimPO's reward scale).
        seeds: training seeds per loss and β (the task, base policy and pairs are fixed).
        epochs: epochs over the sampled pairs per run.
        batch_size: pairs per optimizer step.
        learning_rate: AdamW's learning rate, decayed linearly to 0 (as TRL's default schedule).
        eval_prompts: validation prompts sampled once each from every trained policy (and once from the base).
        with_trl: also train TRL's DPOTrainer at each β and seed.
        completions: completions sampled per training prompt (2: pairs labelled by Bradley-Terry; more: lists
            ranked by Plackett–Luce, for list-wise losses and for the pairs of ``pairs_from_lists``).
        pairs_from_lists: the pairs the pair losses learn from when ``completions`` > 2: best_worst, all or
            consecutive.
        iterative: R > 0 also trains DPO by R rounds on its own samples (`preflight iterate`), one block of the
            training prompts per round, the best against the worst of each prompt's samples.
        iterative_samples: completions each iterative round samples per prompt.
        task: how the known-reward task is built.
    """

    losses: tuple[str, ...] = ("dpo", "ipo", "simpo")
    betas: tuple[float, ...] = (0.05, 0.1, 0.3, 1.0)
    seeds: int = 1
    epochs: int = 1
    batch_size: int = 16
    learning_rate: float = 1e-4
    eval_prompts: int = 200
    with_trl: bool = False
    completions: int = 2
    pairs_from_lists: str = "best_worst"
    iterative: int = 0
    iterative_samples: int = 4
    task: KnownRewardTask = field(default_factory=KnownRewardTask)

    @classmethod
    def quick(cls, **overrides) -> "FrontierSettings":
        """About a minute on 2 CPU cores: DPO at one small β, a smaller task, and a larger learning rate for its
        fewer steps."""
        task = KnownRewardTask(base_epochs=1, train_pairs=400, val_pairs=48)
        return replace(cls(losses=("dpo",), betas=(0.05,), eval_prompts=48, learning_rate=5e-4, task=task), **overrides)


def run_frontier(settings: FrontierSettings, out: Path, log=print) -> dict:
    """Build the task, train and evaluate every (trainer, loss, β, seed), and write ``frontier.csv``,
    ``optimum.csv`` and ``summary.md`` into `out`; returns the rows and the task's measurements."""
    from transformers.utils import logging as transformers_logging

    bars = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()  # a bar per model load would bury the runs' lines
    try:
        return _run_frontier(settings, out, log)
    finally:
        if bars:
            transformers_logging.enable_progress_bar()


def _run_frontier(settings: FrontierSettings, out: Path, log) -> dict:
    from ..evaluation import GenerationEval

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    task = replace(settings.task, completions=settings.completions).build(out / "task")
    sampled = (
        f"{task['train_pairs']} training pairs"
        if settings.completions <= 2
        else f"{task['train_pairs']} training prompts with {settings.completions} completions each"
    )
    log(
        f"preflight: experiment: base policy fine-tuned {settings.task.base_epochs} epoch(s) (loss per epoch: "
        f"{', '.join(f'{v:.3f}' for v in task['base_losses'])}); {sampled} sampled "
        f"from it (mean true reward {task['train_base_reward']:.3f})"
    )
    runs = [("preflight", loss) for loss in settings.losses] + ([(TRL, "dpo")] if settings.with_trl else [])
    runs += [(ITERATIVE, "dpo")] if settings.iterative else []
    trainers = {"preflight": train_preflight, TRL: train_trl, ITERATIVE: train_iterative}
    # one callback for every run: the base policy's samples are drawn once and every policy is compared with them
    evaluation = GenerationEval(
        reward=REWARD, num_prompts=settings.eval_prompts, max_new_tokens=settings.task.max_new_tokens, seed=0
    )
    rows = []
    for trainer, loss in runs:
        for beta in settings.betas:
            for seed in range(settings.seeds):
                clock = time.perf_counter()
                policy = trainers[trainer](out / "task", loss, beta, seed, settings)
                row = {
                    "trainer": trainer,
                    "loss": loss,
                    "beta": beta,
                    "seed": seed,
                    **evaluate(
                        policy,
                        out / "task",
                        out / "runs" / f"{trainer}_{loss}_beta{beta}_seed{seed}",
                        settings,
                        evaluation,
                    ),
                }
                row["seconds"] = round(time.perf_counter() - clock, 1)
                rows.append(row)
                log(
                    f"preflight: experiment: {trainer} {loss} β={beta} seed {seed}: true reward "
                    f"{row['reward']:.3f} (base {row['reference_reward']:.3f}), KL {row['kl']:.3f}, "
                    f"win rate {row['win_rate']:.3f} ({row['seconds']} s)"
                )
    write_csv(out / "frontier.csv", rows)
    if settings.completions > 2:
        base_rewards = [r for row in read_rows(out / "task/lists/train.jsonl") for r in row["rewards"]]
    else:
        base_rewards = [
            pair[k] for pair in read_rows(out / "task/pairs/train.jsonl") for k in ("chosen_reward", "rejected_reward")
        ]
    optimum = optimal_frontier(base_rewards, [round(0.02 * 1.25**k, 4) for k in range(40)])
    write_csv(out / "optimum.csv", optimum)
    result = {
        "rows": rows,
        "optimum": optimum,
        "task": task,
        "samples": len(base_rewards),
        "seconds": time.perf_counter() - started,
        "iterative": settings.iterative,
    }
    (out / "summary.md").write_text(summary(settings, result))
    return result


def _trainer(root: Path, **kwargs):
    import lightning as L

    return L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        **kwargs,
    )


def _data(task: Path, settings: FrontierSettings, list_loss: bool = False, training: bool = False):
    """The task's data: the training pairs (or lists, with ``completions`` > 2, made into what the loss takes)
    and, for evaluation, the validation pairs."""
    from ..datamodules import PreferenceDataModule

    lists = settings.completions > 2
    return PreferenceDataModule(
        str(task / "base"),
        train=str(task / ("lists/train.jsonl" if lists else "pairs/train.jsonl")),
        val=None if training else str(task / "pairs/val.jsonl"),
        batch_size=settings.batch_size,
        use_cache=False,
        pairs_from_lists="list" if list_loss else settings.pairs_from_lists,
    )


def train_preflight(task: Path, loss: str, beta: float, seed: int, settings: FrontierSettings):
    """The base policy trained by `PreferenceModule` with the registry's `loss` at `beta`; returns the policy."""
    import lightning as L

    from ..modules import PreferenceModule

    L.seed_everything(seed, verbose=False)
    module = PreferenceModule(
        str(task / "base"), loss=spec_with_beta(loss, beta), learning_rate=settings.learning_rate, scheduler="linear"
    )
    data = _data(task, settings, list_loss=module.loss_fn.input_kind == "lists", training=True)
    _trainer(task, max_epochs=settings.epochs, limit_val_batches=0).fit(module, data)
    return module.policy


def train_trl(task: Path, loss: str, beta: float, seed: int, settings: FrontierSettings):
    """The base policy trained by TRL's DPOTrainer on the same pairs, seed and optimizer settings."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    pairs = [{k: row[k] for k in ("prompt", "chosen", "rejected")} for row in read_rows(task / "pairs/train.jsonl")]
    with tempfile.TemporaryDirectory() as scratch:
        args = DPOConfig(
            output_dir=scratch,
            per_device_train_batch_size=settings.batch_size,
            num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            beta=beta,
            lr_scheduler_type="linear",
            warmup_steps=0,
            weight_decay=0.0,
            seed=seed,
            report_to=[],
            save_strategy="no",
            use_cpu=True,
            logging_steps=10_000,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        model = AutoModelForCausalLM.from_pretrained(task / "base")
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            processing_class=AutoTokenizer.from_pretrained(task / "base"),
        )
        trainer.train()
    return trainer.model.eval()


def train_iterative(task: Path, loss: str, beta: float, seed: int, settings: FrontierSettings):
    """The base policy trained by ``settings.iterative`` rounds of `preflight iterate` (`rounds.run_rounds`): each
    round samples ``iterative_samples`` completions for its block of the training prompts from the current policy,
    ranks them by `plackett_luce_politeness`, and trains `loss` at `beta` on the best against the worst, the
    reference fixed at the base policy; as many prompts (so pairs) in all as offline DPO. Returns the last policy."""
    from transformers import AutoModelForCausalLM

    from ..rounds import IterateSettings, run_rounds

    prompts = task / ("lists/train.jsonl" if settings.completions > 2 else "pairs/train.jsonl")
    count = len(read_rows(prompts))
    base = str(task / "base")
    fit = {
        "seed_everything": seed,
        "model": {
            "class_path": "preflight.PreferenceModule",
            "init_args": {
                "model": base,
                "loss": spec_with_beta(loss, beta),
                "learning_rate": settings.learning_rate,
                "scheduler": "linear",
            },
        },
        "data": {"tokenizer": base, "batch_size": settings.batch_size, "use_cache": False},
        "trainer": {
            "accelerator": "cpu",
            "devices": 1,
            "max_epochs": settings.epochs,
            "logger": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "limit_val_batches": 0,
        },
    }
    out = task.parent / "runs" / f"{ITERATIVE}_{loss}_beta{beta}_seed{seed}"
    rounds = IterateSettings(
        fit=fit,
        prompts=str(prompts),
        rounds=settings.iterative,
        out=str(out),
        samples_per_prompt=settings.iterative_samples,
        prompts_per_round=math.ceil(count / settings.iterative),
        eval_prompts=0,
        max_new_tokens=settings.task.max_new_tokens,
        seed=seed,
        reward=NOISY_REWARD,
        pairs_from_lists="best_worst",
        checkpoint_every_n_steps=10**6,
        sample_batch=32,
    )
    run_rounds(rounds, log=lambda line: None)
    return AutoModelForCausalLM.from_pretrained(out / "rounds" / str(settings.iterative) / "policy").eval()


def evaluate(policy, task: Path, folder: Path, settings: FrontierSettings, callback) -> dict:
    """`callback` (a `GenerationEval`) on the validation prompts: the policy's true reward, KL to the base
    policy, win rate against the base's samples, length; and the base's own true reward on the same prompts."""
    from ..modules import PreferenceModule

    module = PreferenceModule(policy, loss="dpo", reference="copy", reference_model=str(task / "base"))
    _trainer(folder, callbacks=[callback], limit_val_batches=1).validate(module, _data(task, settings), verbose=False)
    values, rows = callback.last_values, callback.last_rows
    return {
        "reward": values["val/gen/reward"],
        "kl": values["val/gen/kl"],
        "win_rate": values["val/gen/win_rate"],
        "length": values["val/gen/length"],
        "prompts": len(rows),
        "reference_reward": sum(r["reference_reward"] for r in rows) / len(rows),
    }


def curves(rows: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(trainer, loss) → one point per β: the mean and standard deviation over seeds of reward and KL."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["trainer"], row["loss"], float(row["beta"])), []).append(row)
    out: dict[tuple[str, str], list[dict]] = {}
    for (trainer, loss, beta), runs in sorted(groups.items()):
        point = {"beta": beta, "seeds": len(runs)}
        for key in ("reward", "kl", "win_rate", "reference_reward"):
            values = [float(r[key]) for r in runs]
            mean = sum(values) / len(values)
            point[key], point[key + "_sd"] = mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        out.setdefault((trainer, loss), []).append(point)
    return out


def label(trainer: str, loss: str, rounds: int = 0) -> str:
    if trainer == ITERATIVE:
        return f"{loss} (iterative, {rounds} rounds on its own samples)"
    return f"{loss} (TRL DPOTrainer)" if trainer == TRL else loss


def reliable(optimum: list[dict]) -> list[dict]:
    """The optimum's points whose importance-sampling estimate rests on enough samples, by KL."""
    return sorted((p for p in optimum if p["effective_samples"] >= MIN_EFFECTIVE_SAMPLES), key=lambda p: p["kl"])


def optimum_at(optimum: list[dict], kl: float) -> float | None:
    """The optimum's true reward at a KL budget, interpolated linearly between its reliable points; None past
    the last of them (the samples cannot say)."""
    points = [(p["kl"], p["reward"]) for p in reliable(optimum)]
    if not points or kl > points[-1][0]:
        return None
    if kl <= points[0][0]:
        return points[0][1]
    for (k0, r0), (k1, r1) in zip(points, points[1:]):
        if k0 <= kl <= k1:
            return r0 + (r1 - r0) * (kl - k0) / max(k1 - k0, 1e-12)
    return None


def trainers_named(settings: FrontierSettings) -> str:
    """``dpo, ipo and TRL DPO``: the losses, TRL's trainer and iterative DPO, as the runs compared them."""
    names = [*settings.losses] + (["TRL DPO"] if settings.with_trl else [])
    names += [f"iterative DPO ({settings.iterative} rounds)"] if settings.iterative else []
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def summary(settings: FrontierSettings, result: dict) -> str:
    task, rows = result["task"], result["rows"]
    base = sum(float(r["reference_reward"]) for r in rows) / len(rows)
    lines = [
        f"# Reward–KL frontier: {trainers_named(settings)}, "
        f"β ∈ {{{', '.join(map(str, settings.betas))}}}, {settings.seeds} seed(s)",
        "",
        f"Task: base policy fine-tuned {settings.task.base_epochs} epoch(s) on the shipped replies; "
        + (
            f"{task['train_pairs']} training pairs sampled from it, labelled by Bradley-Terry on the politeness reward"
            if settings.completions <= 2
            else f"{task['train_pairs']} training prompts with {settings.completions} completions each sampled from "
            f"it, ranked by Plackett–Luce on the politeness reward (pair losses: {settings.pairs_from_lists} pairs; "
            "list-wise losses: whole lists)"
        )
        + f"; {settings.epochs} epoch(s) of batch {settings.batch_size}, learning rate "
        f"{settings.learning_rate}; evaluated on {rows[0]['prompts']} validation prompts, one sample each. "
        f"The base policy's true reward on them: {base:.3f}."
        + (
            f" Iterative DPO (trainer `{ITERATIVE}`): {settings.iterative} rounds, each sampling "
            f"{settings.iterative_samples} completions from the current policy for the next 1/{settings.iterative} "
            "of the training prompts, ranked by Plackett–Luce on the politeness reward, best against worst, the "
            "reference fixed at the base policy: as many pairs in all as offline DPO."
            if settings.iterative
            else ""
        ),
        "",
        "| trainer | loss | β | true reward | KL(π‖π_base) | win rate vs base | optimum's reward at that KL |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for (trainer, loss), points in curves(rows).items():
        for p in points:
            spread = lambda key: f" ± {p[key + '_sd']:.3f}" if p["seeds"] > 1 else ""  # noqa: E731
            best = optimum_at(result["optimum"], max(p["kl"], 0.0))
            lines.append(
                f"| {trainer} | {loss} | {p['beta']} | {p['reward']:.3f}{spread('reward')} | "
                f"{p['kl']:.3f}{spread('kl')} | {p['win_rate']:.3f} | "
                f"{'—' if best is None else f'{best:.3f}'} |"
            )
    edge = reliable(result["optimum"])
    lines += [
        "",
        f"{len(rows)} runs in {result['seconds']:.0f} s. The optimum of Eq. 3 is estimated from the "
        f"{result['samples']} sampled completions by importance sampling (`optimum.csv`), shown where at "
        f"least {MIN_EFFECTIVE_SAMPLES} samples carry the estimate"
        + (f" (up to a KL of {edge[-1]['kl']:.2f}, reward {edge[-1]['reward']:.3f}; — past it)" if edge else "")
        + ". The KL of a trained policy is a Monte-Carlo estimate from its samples, so it can be slightly "
        "negative near 0.",
    ]
    return "\n".join(lines) + "\n"


def plot_frontier(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    rows = result["rows"]
    kls = [float(r["kl"]) for r in rows]
    limit = max(kls + [0.1]) * 1.15
    optimum = [p for p in reliable(result["optimum"]) if p["kl"] <= limit]
    ax.plot(
        [p["kl"] for p in optimum],
        [p["reward"] for p in optimum],
        color="gray",
        ls="--",
        label=f"optimum of Eq. 3 (importance-sampled, ≥ {MIN_EFFECTIVE_SAMPLES} effective samples)",
    )
    base = sum(float(r["reference_reward"]) for r in rows) / len(rows)
    ax.axhline(base, color="gray", ls=":", label="base policy (the reference)")
    for i, ((trainer, loss), points) in enumerate(curves(rows).items()):
        points = sorted(points, key=lambda p: p["kl"])
        ax.errorbar(
            [p["kl"] for p in points],
            [p["reward"] for p in points],
            xerr=[p["kl_sd"] for p in points],
            yerr=[p["reward_sd"] for p in points],
            marker="o",
            capsize=3,
            color=f"C{i}",
            label=label(trainer, loss, result.get("iterative", 0)),
            ls={TRL: "-.", ITERATIVE: "--"}.get(trainer, "-"),
        )
        for p in points:
            ax.annotate(
                f"β={p['beta']:g}",
                (p["kl"], p["reward"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
                color=f"C{i}",
            )
    ax.set(
        xlabel="KL(π_θ ‖ π_base), Monte-Carlo from the policy's samples",
        ylabel="true reward (politeness)",
        title="Reward–KL frontier on the known-reward task",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["FrontierSettings", "curves", "plot_frontier", "run_frontier"]
