"""GPU checks: run by benchmarks/gpu_check.sh on a machine with CUDA; marked and skipped elsewhere (CI has no GPU)."""

import lightning as L
import pytest
import torch

from preflight import PreferenceDataModule, PreferenceModule
from tests.conftest import TINY_MODEL, TOKENIZER, VAL
from tests.helpers import batch_of, random_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")


def test_bf16_mixed_logps_are_float32_and_match_fp32():
    module = PreferenceModule(str(TINY_MODEL))
    module.configure_model()
    module.policy.cuda()
    batch = {k: v.cuda() for k, v in batch_of(random_pairs(6, seed=3)).items()}
    with torch.no_grad():
        exact = module._logps(module.policy, batch, False, False)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for path in [(False, False), (True, False), (False, True), (True, True)]:
                got = module._logps(module.policy, batch, *path)
                assert got.dtype == torch.float32
                assert torch.allclose(got, exact, rtol=2e-2, atol=0.5), path


def test_bf16_mixed_training_learns_on_gpu():
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), val=str(VAL), batch_size=16)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-3)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=40, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, val_check_interval=40)
    trainer.fit(module, data)
    assert float(trainer.callback_metrics["val/rewards/accuracies"]) >= 0.9


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="FSDPStrategy needs 2 GPUs")
def test_fsdp_strategy_parses_and_runs_from_the_example_config(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import ROOT

    (tmp_path / "assets").symlink_to(ROOT / "assets")
    result = subprocess.run(
        [str(Path(sys.executable).parent / "preflight"), "fit", "--config", str(ROOT / "configs" / "dpo.yaml"),
         "--trainer.accelerator", "gpu", "--trainer.devices", "2", "--trainer.strategy", "fsdp",
         "--trainer.max_steps", "3", "--trainer.precision", "bf16-mixed"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
