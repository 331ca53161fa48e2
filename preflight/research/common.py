"""What the experiments share: a registry loss named with its β, and their CSV tables."""

from __future__ import annotations

import csv
from pathlib import Path

from ..losses.registry import loss_class, loss_hyperparameters


def spec_with_beta(name: str, beta: float) -> dict:
    """The registry spec of loss `name`, with `beta` where the loss takes one."""
    return {"name": name, **({"beta": beta} if "beta" in loss_hyperparameters(loss_class(name)) else {})}


def write_csv(path: Path, rows: list[dict]) -> None:
    """`rows` (dicts with the same keys, in order) as a CSV table with a header."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
