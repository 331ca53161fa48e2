"""`preflight plot RUN_DIR`: a run's logged metrics (its CSVLogger ``metrics.csv``) as PNG curves.

One figure per group of metrics (loss; rewards chosen/rejected/margins; reward accuracy; log-probs;
the generation metrics ``gen/*`` when the run logged them; then one per remaining metric), each with
its train and val curves against the optimizer step. A group whose metrics have different units (the
generation metrics: reward, win rate, KL, length) gets one panel per metric, each with its own y-axis.
matplotlib is an optional extra (``pip install 'preflight-lightning[plots]'``).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .errors import PreflightConfigError

GROUPS = {  # figure name: the metric names (without train/ or val/) it draws
    "loss": ["loss"],
    "rewards": ["rewards/chosen", "rewards/rejected", "rewards/margins"],
    "accuracy": ["rewards/accuracies"],
    "logps": ["logps/chosen", "logps/rejected"],
    "generation": ["gen/reward", "gen/win_rate", "gen/kl", "gen/length"],
}
#: groups drawn one panel per metric: their metrics do not share a unit (a length of 32 would flatten a KL of 0.1)
PANEL_PER_METRIC = {"generation"}
PANEL_WIDTH, PANEL_HEIGHT = 3.6, 3.4  # inches, at 100 dpi
SPLITS = ("train", "val")
Series = dict[str, tuple[list[int], list[float]]]  # "train/loss": (steps, values)


class PlotError(PreflightConfigError):
    """A run folder without logged metrics, or plotting without matplotlib."""


def metrics_file(path: str | Path) -> Path:
    """The ``metrics.csv`` a user names: the file, a version folder, or a run folder (its newest version)."""
    given = path
    path = Path(path).absolute()
    if path.is_file():
        return path
    if (path / "metrics.csv").is_file():
        return path / "metrics.csv"
    versions = sorted(path.glob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime_ns)
    if versions:
        return versions[-1]
    raise PlotError(f"{given}: no metrics.csv here or in a version_N folder below it (runs/<run name>/version_N)")


def read_series(path: Path) -> Series:
    """Every logged train/ and val/ metric as (steps, values), in the file's order, empty cells skipped."""
    series: Series = {}
    with open(path, newline="") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            try:
                step = int(float(row["step"]))
            except (KeyError, TypeError, ValueError):
                raise PlotError(f"{path}, line {line}: no step number") from None
            for key, value in row.items():
                if key and key.split("/", 1)[0] in SPLITS and value not in ("", None):
                    steps, values = series.setdefault(key, ([], []))
                    steps.append(step)
                    values.append(float(value))
    if not series:
        raise PlotError(f"{path}: no train/ or val/ metrics logged yet")
    return series


def figures(series: Series) -> dict[str, Series]:
    """The series of each figure: the known groups first, then one figure per other metric."""
    names = sorted({key.split("/", 1)[1] for key in series})
    grouped = {name: [m for m in members if m in names] for name, members in GROUPS.items()}
    placed = {m for members in grouped.values() for m in members}
    grouped.update({other.replace("/", "_"): [other] for other in names if other not in placed})
    return {
        figure: {
            f"{split}/{m}": series[f"{split}/{m}"] for m in members for split in SPLITS if f"{split}/{m}" in series
        }
        for figure, members in grouped.items()
        if members
    }


def plot_run(path: str | Path, out: str | Path | None = None) -> dict[str, tuple[Path, Series]]:
    """Write one PNG per figure into `out` (default: ``plots/`` beside the metrics); {figure: (file, its series)}."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotError("preflight plot needs matplotlib: pip install 'preflight-lightning[plots]'") from None
    source = metrics_file(path)
    folder = Path(out) if out is not None else source.parent / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, members in figures(read_series(source)).items():
        metrics = list(dict.fromkeys(label.split("/", 1)[1] for label in members))
        groups = [[m] for m in metrics] if name in PANEL_PER_METRIC else [metrics]
        size = (PANEL_WIDTH * len(groups), PANEL_HEIGHT) if len(groups) > 1 else (6.4, 4)
        fig, axes = plt.subplots(1, len(groups), figsize=size, squeeze=False)
        for ax, shown in zip(axes[0], groups):
            for label, (steps, values) in members.items():
                split, metric = label.split("/", 1)
                if metric not in shown:
                    continue
                finite = [(s, v) for s, v in zip(steps, values) if math.isfinite(v)]
                ax.plot(
                    [s for s, _ in finite],
                    [v for _, v in finite],
                    "-" if split == "train" else "o--",
                    label=label,
                    markersize=3,
                    color=f"C{metrics.index(metric)}",
                    alpha=0.6 if split == "train" else 1.0,
                )
            ax.set_xlabel("optimizer step")
            ax.set_title(shown[0] if len(groups) > 1 else f"{source.parent.parent.name}/{source.parent.name}: {name}")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        if len(groups) > 1:
            fig.suptitle(f"{source.parent.parent.name}/{source.parent.name}: {name}")
        fig.tight_layout()
        file = folder / f"{name}.png"
        fig.savefig(file, dpi=100)
        plt.close(fig)
        written[name] = (file, members)
    return written
