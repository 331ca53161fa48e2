"""`preflight plot`: a run that `preflight fit` wrote, drawn as PNGs of exactly its logged values."""

import csv
import sys

from tests.flows.conftest import QUICK

PNG = b"\x89PNG\r\n\x1a\n"


def logged(path):
    """{metric: [(step, value)]} read straight from the CSV."""
    out = {}
    for row in csv.DictReader(open(path)):
        for key, value in row.items():
            if key.startswith(("train/", "val/")) and value:
                out.setdefault(key, []).append((int(row["step"]), float(value)))
    return out


def test_plot_draws_every_logged_metric_of_a_fit(preflight, workdir):
    fit = preflight(
        "fit", "--config", "configs/dpo.yaml", *QUICK, "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1"
    )
    assert fit.code == 0
    result = preflight("plot", "runs/dpo")
    assert result.code == 0, result.err
    version = workdir / "runs/dpo/version_0"
    lines = result.preflight_lines()
    assert lines[0] == f"preflight: plot: {version / 'plots/loss.png'} (train/loss, val/loss)"
    assert (
        f"preflight: plot: {version / 'plots/rewards.png'} (train/rewards/chosen, val/rewards/chosen, "
        "train/rewards/rejected, val/rewards/rejected, train/rewards/margins, val/rewards/margins)" in lines
    )
    expected = logged(version / "metrics.csv")
    drawn = set()
    for line in lines:
        png = line.split("plot: ", 1)[1].split(" (")[0]
        assert open(png, "rb").read(8) == PNG
        drawn |= set(line.split(" (", 1)[1].rstrip(")").split(", "))
    assert drawn == set(expected)  # every logged metric is drawn, none invented

    from preflight.plots import plot_run

    for name, (file, series) in plot_run(version).items():
        for key, (steps, values) in series.items():
            assert list(zip(steps, values)) == expected[key], key


def test_plot_errors_are_one_line(preflight, workdir, monkeypatch):
    result = preflight("plot", "runs/nothing")
    assert result.code == 2
    assert result.preflight_lines() == [
        "preflight: error: runs/nothing: no metrics.csv here or in a version_N folder "
        "below it (runs/<run name>/version_N)"
    ]
    (workdir / "metrics.csv").write_text("epoch,step,train/loss\n0,1,0.5\n")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if the plots extra were not installed
    result = preflight("plot", "metrics.csv")
    assert result.code == 2
    assert result.preflight_lines() == [
        "preflight: error: preflight plot needs matplotlib: pip install 'preflight-lightning[plots]'"
    ]
