"""Every shipped fit config parses; every offline one runs a one-step fast_dev_run through the CLI. (The
`preflight iterate` config runs through that command in tests/flows/test_iterate.py.)"""

import pytest

from preflight.cli import PreflightCLI, build_cli
from tests.conftest import ROOT

ITERATE = {"iterative_dpo.yaml"}  # `preflight iterate` configs, not fit configs
CONFIGS = sorted(c for c in (ROOT / "configs").glob("*.yaml") if c.name not in ITERATE)
NEEDS_INTERNET = {"smollm2_ultrafeedback_dpo.yaml", "fsdp_gpu.yaml"}
OFFLINE = [c for c in CONFIGS if c.name not in NEEDS_INTERNET]


class ParseOnly(PreflightCLI):
    """Parses (interpolation included) and type-checks, but builds nothing: GPU and Hub configs too."""

    def instantiate_classes(self) -> None:
        pass


def test_the_expected_configs_ship():
    names = {c.name for c in CONFIGS}
    assert {
        "dpo.yaml",
        "ipo.yaml",
        "cdpo.yaml",
        "robust.yaml",
        "simpo.yaml",
        "orpo.yaml",
        "reward_model.yaml",
        "lora_dpo.yaml",
        "kto.yaml",
        "tr_dpo.yaml",
    } | NEEDS_INTERNET <= names
    assert ITERATE <= {c.name for c in (ROOT / "configs").glob("*.yaml")}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.name)
def test_config_parses(config, monkeypatch):
    monkeypatch.chdir(ROOT)
    parsed = build_cli(["--config", str(config)], run=False, cli_class=ParseOnly).config
    assert parsed.model.class_path in ("preflight.PreferenceModule", "preflight.RewardModule")
    assert "${" not in str(parsed)  # every interpolation resolved
    if config.name == "fsdp_gpu.yaml":
        from transformers.models.llama.modeling_llama import LlamaDecoderLayer

        strategy = parsed.trainer.strategy
        assert strategy.class_path == "lightning.pytorch.strategies.FSDPStrategy"
        assert LlamaDecoderLayer in strategy.init_args.auto_wrap_policy
        assert LlamaDecoderLayer in strategy.init_args.activation_checkpointing_policy


@pytest.mark.parametrize("config", OFFLINE, ids=lambda c: c.name)
def test_offline_config_runs_one_step_and_ends_with_its_last_checkpoint(config, tmp_path, monkeypatch):
    """One step of every shipped fit config (no validation), which ends with ``last.ckpt`` at that step, whatever the
    config's checkpoint callbacks."""
    import torch

    monkeypatch.chdir(ROOT)
    quick = ["--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false"]
    cli = build_cli(["fit", "--config", str(config), *quick, "--trainer.default_root_dir", str(tmp_path)], run=True)
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 1
    (last,) = tmp_path.glob("*/version_0/checkpoints/last.ckpt")
    assert torch.load(last, weights_only=True)["global_step"] == 1
