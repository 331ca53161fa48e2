"""`preflight fit ... --trainer.devices 2 --trainer.strategy ddp` (and FSDP2) from the shell, 2 CPU processes."""

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

PREFLIGHT = str(Path(sys.executable).parent / "preflight")
STRATEGIES = {"ddp": "ddp", "fsdp2": '{"class_path": "lightning.pytorch.strategies.ModelParallelStrategy"}'}


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_two_process_fit_through_the_command(tmp_path, strategy):
    (tmp_path / "assets").symlink_to(ROOT / "assets")
    result = subprocess.run(
        [PREFLIGHT, "fit", "--config", str(ROOT / "configs" / "dpo.yaml"), "--trainer.devices", "2",
         "--trainer.strategy", STRATEGIES[strategy], "--trainer.max_steps", "2", "--trainer.val_check_interval", "2",
         "--trainer.limit_val_batches", "2", "--data.batch_size", "4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("preflight: fit finished") == 1  # the summary comes from rank 0 alone
    assert "val/rewards/accuracies" in result.stdout
    assert (tmp_path / "runs" / "dpo" / "checkpoints" / "last.ckpt").exists()
