"""`preflight experiment {bandit,frontier}`: the research tools of `preflight.research`, with flags generated from
their settings dataclasses (`settings_flags`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import PreflightConfigError
from ..losses.registry import build_loss, load_entry_points
from .command import ArgparseCommand
from ..user_imports import import_user_modules
from .settings_flags import add_settings_arguments, settings_from


class ExperimentCommand(ArgparseCommand):
    name = "experiment"
    summary = "experiments against a known reward: preflight experiment {bandit,frontier} --losses dpo,ipo"
    description = "Experiments against a known reward (research tools: preflight.research)."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from ..research.bandit import BanditSettings
        from ..research.frontier import FrontierSettings

        experiments = parser.add_subparsers(dest="experiment", required=True)
        bandit = experiments.add_parser(
            "bandit", help="the exact case: KL to the optimum of Eq. 3 against data, per loss"
        )
        add_settings_arguments(bandit, BanditSettings, quick=BanditSettings.quick())
        bandit.add_argument("--quick", action="store_true", help="3 sizes, 1 seed, fewer steps: about 10 seconds")
        bandit.add_argument("--out", default="experiments/bandit", help="the folder for the CSVs, summary and plot")
        bandit.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")
        frontier = experiments.add_parser(
            "frontier",
            help="true reward against KL to the reference, per loss and β, on a language task with a known reward",
        )
        add_settings_arguments(frontier, FrontierSettings, quick=FrontierSettings.quick())
        frontier.add_argument("--quick", action="store_true", help="DPO at one β on a smaller task: about a minute")
        frontier.add_argument("--out", default="experiments/frontier", help="the folder for the CSVs, summary and plot")
        frontier.add_argument("--imports", nargs="*", default=[], help="modules that register more losses")

    def execute(self, ns: argparse.Namespace) -> None:
        load_entry_points()
        import_user_modules(ns.imports)
        if ns.experiment == "bandit":
            from ..research.bandit import BanditSettings

            settings = settings_from(ns, BanditSettings.quick() if ns.quick else BanditSettings())
        else:
            from ..research.frontier import FrontierSettings

            settings = settings_from(ns, FrontierSettings.quick() if ns.quick else FrontierSettings())
        check_settings(settings)
        (run_bandit if ns.experiment == "bandit" else run_frontier)(settings, Path(ns.out))


def check_settings(settings) -> None:
    """Refuse, before any work, what cannot run: a loss that is unknown or not a policy loss, β ≤ 0, no seed."""
    for name in settings.losses:
        kind = build_loss({"name": name}).input_kind  # an unknown name fails here
        if kind == "rewards":
            raise PreflightConfigError(f"loss {name!r} trains a reward model, not a policy")
        if kind == "unpaired":
            raise PreflightConfigError(f"loss {name!r} learns from unpaired responses: name it in --unpaired-losses")
        if kind == "lists" and settings.completions <= 2:
            raise PreflightConfigError(
                f"loss {name!r} takes whole lists: add --completions K with K > 2 (responses per prompt)"
            )
    for name in getattr(settings, "unpaired_losses", ()):
        if build_loss({"name": name}).input_kind != "unpaired":
            raise PreflightConfigError(f"--unpaired-losses: loss {name!r} does not learn from unpaired responses")
    if getattr(settings, "unpaired_labels", "mean") not in ("mean", "bernoulli"):
        raise PreflightConfigError(f"--unpaired-labels {settings.unpaired_labels!r}: give mean or bernoulli")
    if not settings.losses and not getattr(settings, "iterative", 0):
        raise PreflightConfigError("--losses: name at least one loss (or add --iterative R)")
    betas = getattr(settings, "betas", None) or (settings.beta,)
    if any(not b > 0 for b in betas):
        raise PreflightConfigError(f"--beta{'s' if hasattr(settings, 'betas') else ''}: every β must be positive")
    if settings.seeds < 1:
        raise PreflightConfigError("--seeds must be at least 1")
    if settings.completions < 2:
        raise PreflightConfigError("--completions must be at least 2")
    if getattr(settings, "pairs_from_lists", "all") not in ("all", "best_worst", "consecutive"):
        raise PreflightConfigError(
            f"--pairs-from-lists {settings.pairs_from_lists!r}: give all, best_worst or consecutive (list-wise "
            "losses take whole lists by themselves)"
        )
    if getattr(settings, "iterative", 0) < 0 or getattr(settings, "iterative_samples", 2) < 2:
        raise PreflightConfigError("--iterative must be 0 or more rounds, --iterative-samples at least 2")
    if getattr(settings, "with_trl", False) and settings.completions > 2:
        raise PreflightConfigError("--with-trl compares on pairs: leave --completions at 2")
    if getattr(settings, "with_trl", False):
        try:
            import trl  # noqa: F401
        except ImportError:
            raise PreflightConfigError("--with-trl needs TRL: pip install trl") from None


def run_bandit(settings, out: Path) -> None:
    from ..research.bandit import plot_bandit, run_bandit as run

    tables = run(settings, out)
    print((out / "summary.md").read_text(), end="")
    for name in tables:
        print(f"preflight: experiment: wrote {out / (name + '.csv')}")
    _plot(plot_bandit, tables, settings, out / "bandit.png")


def run_frontier(settings, out: Path) -> None:
    from ..research.frontier import plot_frontier, run_frontier as run

    result = run(settings, out)
    print((out / "summary.md").read_text(), end="")
    for name in ("frontier", "optimum"):
        print(f"preflight: experiment: wrote {out / (name + '.csv')}")
    _plot(plot_frontier, result, out / "frontier.png")


def _plot(function, *args) -> None:
    try:
        print(f"preflight: experiment: wrote {function(*args)}")
    except ImportError:
        print("preflight: experiment: no plot: pip install 'preflight-lightning[plots]' for matplotlib")
