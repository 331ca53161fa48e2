"""What one generation evaluation reports: its values (``val/gen/*``), logged, and its rows, in ``generations.csv``
(and as a text table to TensorBoard or W&B)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.distributed as dist


def gather_rows(rows: list[dict[str, Any]], world: int) -> list[dict[str, Any]]:
    """Every process's rows, one per prompt (a prompt sampled twice by the padding of `share_of` counts once),
    by prompt index."""
    everyone = [None] * world
    if world > 1 and dist.is_available() and dist.is_initialized():
        dist.all_gather_object(everyone, rows)
    else:
        everyone = [rows]
    by_prompt = {row["index"]: row for part in everyone for row in part}
    return [by_prompt[i] for i in sorted(by_prompt)]


def summarize(rows: list[dict[str, Any]], with_reference: bool) -> dict[str, float]:
    """Mean reward and length; against the reference, the win rate (ties one half) and the KL estimate."""
    values = {
        "val/gen/reward": mean([r["policy_reward"] for r in rows]),
        "val/gen/length": mean([r["policy_tokens"] for r in rows]),
    }
    if with_reference:
        values["val/gen/win_rate"] = mean([win(r["policy_reward"], r["reference_reward"]) for r in rows])
        values["val/gen/kl"] = mean([r["log_ratio"] for r in rows])
    return values


def log_values(trainer: L.Trainer, values: dict[str, float]) -> None:
    """Straight to the loggers (and callback_metrics, which checkpoint monitors read): the values are already the
    same on every process, and this also works when called outside Lightning's loops."""
    trainer.callback_metrics.update({k: torch.tensor(v) for k, v in values.items()})
    for logger in trainer.loggers:  # at the step of the weights sampled (`runs.RunLogger.log_metrics_at`)
        getattr(logger, "log_metrics_at", logger.log_metrics)(values, step=trainer.global_step)


def write_generations(trainer: L.Trainer, folder: Path, rows: list[dict[str, Any]]) -> None:
    """Append the rows to ``folder/generations.csv`` (with the step), and show them to TensorBoard or W&B."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "generations.csv"
    fields = ["step", *rows[0].keys()]
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({"step": trainer.global_step, **row})
    for logger in trainer.loggers:
        experiment = getattr(logger, "experiment", None)
        if hasattr(experiment, "add_text"):  # TensorBoard
            table = "\n".join(
                f"| {r['prompt'][:200]} | {r['policy_completion'][:400]} | {r['policy_reward']:.3f} |" for r in rows
            )
            experiment.add_text(
                "val/gen/samples", "| prompt | policy | reward |\n|---|---|---|\n" + table, trainer.global_step
            )
        elif hasattr(logger, "log_text"):  # W&B
            logger.log_text("val/gen/samples", columns=fields, data=[[trainer.global_step, *r.values()] for r in rows])


def win(policy: float, reference: float) -> float:
    return 1.0 if policy > reference else 0.5 if policy == reference else 0.0


def mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)
