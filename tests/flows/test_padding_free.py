"""Padding-free rows from the command: the same pairs per step and the same losses as padded rows."""

import csv

from tests.flows.conftest import QUICK


def train_metrics(workdir, run):
    rows = list(csv.DictReader(open(workdir / "runs" / run / "version_0" / "metrics.csv")))
    return {
        int(r["step"]): {k: float(v) for k, v in r.items() if k.startswith("train/")}
        for r in rows
        if r.get("train/loss")
    }


def test_packed_rows_train_to_the_padded_losses(preflight, workdir):
    three_steps = ["--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1"]
    padded = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, *three_steps, "--run_name", "padded")
    packed = preflight(
        "fit",
        "--config",
        "configs/dpo.yaml",
        *QUICK,
        *three_steps,
        "--run_name",
        "packed",
        "--model.padding_free",
        "on",
        "--model.max_tokens_per_row",
        "160",
    )
    assert padded.code == 0 and packed.code == 0, packed.stderr[-2000:]
    assert any("padding-free on (dense mask); rows over 4096 tokens" in line for line in packed.preflight_lines())
    expected, got = train_metrics(workdir, "padded"), train_metrics(workdir, "packed")
    steps = sorted(expected)
    assert len(steps) == 3 and expected.keys() == got.keys()
    # it trains: the later steps compared are not copies of the first
    assert expected[steps[-1]]["train/loss"] < expected[steps[0]]["train/loss"] - 1e-3
    for step, metrics in expected.items():
        for key, value in metrics.items():
            assert abs(got[step][key] - value) <= 1e-4 * max(1.0, abs(value)), f"step {step}, {key}: {got[step][key]}"
