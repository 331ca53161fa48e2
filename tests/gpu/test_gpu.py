"""GPU checks: run by benchmarks/gpu_check.sh on a machine with CUDA; marked and skipped elsewhere (CI has no GPU)."""

import lightning as L
import pytest
import torch

from preflight import PreferenceDataModule, PreferenceModule
from preflight.logps import CompletionLogps
from tests.conftest import TINY_MODEL, TOKENIZER, VAL
from tests.helpers import batch_of, forced, random_pairs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu_check.sh)")


def test_bf16_mixed_logps_are_float32_and_match_fp32():
    module = PreferenceModule(str(TINY_MODEL))
    module.configure_model()
    module.policy.cuda()
    batch = {k: v.cuda() for k, v in batch_of(random_pairs(6, seed=3)).items()}
    with torch.no_grad():
        exact = forced(False, False)(module.policy, batch)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            for path in [(False, False), (True, False), (False, True), (True, True)]:
                got = forced(*path)(module.policy, batch)
                assert got.dtype == torch.float32
                assert torch.allclose(got, exact, rtol=2e-2, atol=0.5), path


def test_bf16_mixed_training_learns_on_gpu():
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), val=str(VAL), batch_size=16)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-3)
    trainer = L.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=40,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        val_check_interval=40,
    )
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
        [
            str(Path(sys.executable).parent / "preflight"),
            "fit",
            "--config",
            str(ROOT / "configs" / "dpo.yaml"),
            "--trainer.accelerator",
            "gpu",
            "--trainer.devices",
            "2",
            "--trainer.strategy",
            "fsdp",
            "--trainer.max_steps",
            "3",
            "--trainer.precision",
            "bf16-mixed",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]


def _grads_and_logps(module, batch):
    logps = module.completion_logps(module.policy, batch)
    (logps * torch.linspace(-1, 1, logps.shape[0], device=logps.device)).sum().backward()
    return logps.detach(), {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}


def _assert_same(fast, plain, atol=1e-4):
    torch.testing.assert_close(fast[0], plain[0], atol=atol, rtol=0)
    for name, g in plain[1].items():
        assert (fast[1][name] - g).abs().max() <= 1e-3 * g.abs().max().clamp(min=1e-6), name


@pytest.mark.parametrize("kind", ["pairs", "lists"])
@pytest.mark.parametrize("arch", ["llama", "gemma2", "mistral"])
def test_compiled_flex_attention_block_masks_have_the_plain_values_and_gradients(arch, kind):
    """The CPU suite checks flex values with the eager kernel; here the compiled kernel trains (fp32), on pairs and
    on K-segment rows of lists (K = 4, one list of 3)."""
    from tests.architectures.test_exact_paths import list_batch
    from tests.architectures.tiny import tiny_model

    cpu_batch = batch_of(random_pairs(6, seed=5)) if kind == "pairs" else list_batch(5)
    batch = {k: v.cuda() for k, v in cpu_batch.items()}
    results = {}
    for attention, kwargs in (
        ("eager", dict(fused_lm_head="off", shared_prompt="off", padding_free="off")),
        ("flex_attention", dict(max_tokens_per_row=64)),
    ):
        module = PreferenceModule(tiny_model(arch, attention), reference="none", loss="simpo", **kwargs)
        module.configure_model()
        module.policy.cuda()
        if attention == "flex_attention":
            path = module.path_for(module.policy)
            assert path.shared and path.padding_free and path.rendering == "block"
        results[attention] = _grads_and_logps(module, batch)
    _assert_same(results["flex_attention"], results["eager"])


def test_flash_attention_packed_row_has_the_plain_values_and_gradients():
    pytest.importorskip("flash_attn", reason="flash_attention_2 needs the flash-attn package")
    batch = {k: v.cuda() for k, v in batch_of(random_pairs(6, seed=6)).items()}
    results = {}
    for attention in ("sdpa", "flash_attention_2"):
        module = PreferenceModule(
            str(TINY_MODEL),
            reference="none",
            loss="simpo",
            model_dtype="bfloat16",
            shared_prompt="off",
            fused_lm_head="off",
            padding_free="auto" if attention != "sdpa" else "off",
        )
        module.configure_model()
        module.policy.config._attn_implementation = attention
        module.logps = CompletionLogps(module.logps.settings)  # planned again, for the switched attention
        module.policy.cuda()
        if attention != "sdpa":
            assert module.path_for(module.policy).rendering == "varlen" and module.path_for(module.policy).padding_free
        results[attention] = _grads_and_logps(module, batch)
    torch.testing.assert_close(results["flash_attention_2"][0], results["sdpa"][0], atol=0.5, rtol=2e-2)


def test_fsdp_strategy_runs_the_fused_head_inside_the_root_unit():
    """Lightning's FSDPStrategy runs each step inside the root unit's forward: the fused head reads the gathered
    head weight there, and its losses equal the plain head's."""
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer

    losses = {}
    for fused in ("on", "off"):
        L.seed_everything(0)
        data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=8, use_cache=False)
        module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-3, fused_lm_head=fused)
        record = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                record.append(float(outputs["loss"]))

        strategy = L.pytorch.strategies.FSDPStrategy(auto_wrap_policy=ModuleWrapPolicy({LlamaDecoderLayer}))
        trainer = L.Trainer(
            accelerator="gpu",
            devices=1,
            strategy=strategy,
            max_steps=4,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            callbacks=[Record()],
            limit_val_batches=0,
        )
        trainer.fit(module, data)
        losses[fused] = record
    assert len(losses["on"]) == 4
    assert losses["on"] == pytest.approx(losses["off"], abs=1e-4)
