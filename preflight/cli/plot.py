"""`preflight plot RUN`: a run's logged metrics as PNG curves."""

from __future__ import annotations

import argparse

from .command import ArgparseCommand


class PlotCommand(ArgparseCommand):
    name = "plot"
    summary = (
        "draw a run's logged metrics:     preflight plot runs/dpo  (needs pip install 'preflight-lightning[plots]')"
    )
    description = "Draw a run's logged metrics as PNG curves."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "run", help="a run folder (runs/dpo: its newest version), a version folder, or a metrics.csv"
        )
        parser.add_argument("--out", help="the folder to write the PNGs to (default: plots/ beside metrics.csv)")

    def execute(self, ns: argparse.Namespace) -> None:
        from ..plots import PANEL_PER_METRIC, plot_run

        for name, (file, series) in plot_run(ns.run, ns.out).items():
            panels = "one panel each: " if name in PANEL_PER_METRIC else ""
            print(f"preflight: plot: {file} ({panels}{', '.join(series)})")
