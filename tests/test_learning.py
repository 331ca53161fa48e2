"""The main job learns: `preflight fit --config configs/dpo.yaml`, offline, as shipped."""

import csv

from preflight.cli import build_cli
from tests.conftest import ROOT


def test_dpo_config_learns_the_shipped_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's relative run folder lands here
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    cli = build_cli(["fit", "--config", str(ROOT / "configs" / "dpo.yaml")])
    metrics = cli.trainer.callback_metrics
    assert float(metrics["val/rewards/accuracies"]) >= 0.9
    assert float(metrics["val/rewards/margins"]) > 0
    assert (tmp_path / "runs" / "dpo" / "version_0" / "checkpoints" / "last.ckpt").is_file()
    rows = list(csv.DictReader(open(tmp_path / "runs" / "dpo" / "version_0" / "metrics.csv")))
    train_loss = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert train_loss[-1] < 0.1 and train_loss[0] > 3 * train_loss[-1]  # it started at log 2 (see test_preference_module)
