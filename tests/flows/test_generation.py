"""Generation evaluation from the shipped config: logged, tabled, and drawn by `preflight plot`."""

import csv

import pytest

from tests.flows.conftest import QUICK


def test_the_generation_config_logs_samples_and_plots_them(preflight, workdir):
    fit = preflight("fit", "--config", "configs/dpo_generate.yaml", *QUICK)
    assert fit.code == 0, fit.err[-2000:]
    version = workdir / "runs/dpo_generate/version_0"
    metrics = list(csv.DictReader(open(version / "metrics.csv")))
    gen = [r for r in metrics if r.get("val/gen/reward")]
    assert gen and all(r["val/gen/win_rate"] and r["val/gen/kl"] and r["val/gen/length"] for r in gen)
    table = list(csv.DictReader(open(version / "generations.csv", newline="")))
    assert len(table) == 16 * len(gen)  # 16 prompts at each evaluation (the baseline's included)
    final = [r for r in table if int(r["step"]) == int(gen[-1]["step"])]
    mean_reward = sum(float(r["policy_reward"]) for r in final) / 16
    assert float(gen[-1]["val/gen/reward"]) == pytest.approx(mean_reward, abs=1e-5)
    plot = preflight("plot", "runs/dpo_generate")
    assert any(
        "generation.png (one panel each: val/gen/reward, val/gen/win_rate, val/gen/kl, val/gen/length)" in line
        for line in plot.preflight_lines()
    )
    # one panel per metric, each with its own y-axis: four panels side by side (the PNG header's width and height)
    width, height = png_size(version / "plots/generation.png")
    assert (width, height) == (4 * 360, 340) and png_size(version / "plots/loss.png") == (640, 400)


def png_size(path):
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    header = open(path, "rb").read(24)
    return int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
