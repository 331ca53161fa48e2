"""`preflight export` on checkpoints that `preflight fit` wrote, and on crafted ones."""

import stat
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from preflight import PreferenceModule, RewardModule
from preflight.pretrained import load_tokenizer
from preflight.pretrained import load_model
from tests.conftest import TINY_MODEL, TOKENIZER
from tests.flows.conftest import QUICK

TEXTS = ["Customer: Is the lamp in stock? Assistant: Yes, it is.", "Customer: Hi! Assistant: Hello there."]


def sequence_logps(model, ids, mask):
    """Σ log p(token_t | tokens_<t) per row, float64, from the model's logits."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.double()
    logps = torch.log_softmax(logits[:, :-1], -1).gather(2, ids[:, 1:, None]).squeeze(-1)
    return (logps * mask[:, 1:]).sum(-1)


def encoded():
    batch = load_tokenizer(str(TOKENIZER))(TEXTS, return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"]


def checkpoint_policy(ckpt_path, peft=None):
    """The policy a checkpoint holds, rebuilt by hand from its state dict (not through preflight's loaders)."""
    state = torch.load(ckpt_path, weights_only=True)["state_dict"]
    base = load_model(str(TINY_MODEL), AutoModelForCausalLM)  # the seeded random build, as fit started from
    if peft is None:
        own = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
        assert base.load_state_dict(own, strict=True)
        return base.eval()
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(base, LoraConfig(task_type="CAUSAL_LM", target_modules="all-linear", **peft))
    own = {k.removeprefix("policy."): v for k, v in state.items() if k.startswith("policy.")}
    missing, unexpected = model.load_state_dict(own, strict=False)
    assert not unexpected and all("lora_" not in k for k in missing)  # every adapter weight came from the file
    return model.eval()


@pytest.mark.parametrize("kind", ["full", "precomputed", "lora_merged", "lora_adapter"])
def test_export_of_a_fit_checkpoint_reproduces_its_policy(preflight, workdir, kind):
    extra = {
        "full": [],
        "precomputed": ["--model.reference", "precomputed"],
        "lora_merged": ["--model.peft", "{r: 4, lora_alpha: 8}"],
        "lora_adapter": ["--model.peft", "{r: 4, lora_alpha: 8}"],
    }[kind]
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.learning_rate", "0.01", *extra).code == 0
    run = workdir / "runs" / "dpo"  # named for its config, LoRA or not
    export_args = ["--no-merge-lora"] if kind == "lora_adapter" else []
    result = preflight("export", run, workdir / "out", *export_args)
    ckpt = run / "version_0" / "checkpoints" / "last.ckpt"
    assert result.code == 0 and result.out.strip().endswith(f"exported {ckpt} (step 2) to {workdir / 'out'}")
    assert stat.S_IMODE((workdir / "out").stat().st_mode) == 0o755  # the usual mode, not mkdtemp's 0700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in (workdir / "out").iterdir())
    ids, mask = encoded()
    expected = sequence_logps(checkpoint_policy(ckpt, {"r": 4, "lora_alpha": 8} if "lora" in kind else None), ids, mask)
    if kind == "lora_adapter":
        from peft import PeftModel

        assert (workdir / "out" / "adapter_model.safetensors").is_file()
        exported = PeftModel.from_pretrained(load_model(str(TINY_MODEL), AutoModelForCausalLM), workdir / "out").eval()
    else:
        exported = AutoModelForCausalLM.from_pretrained(workdir / "out").eval()
    assert torch.allclose(sequence_logps(exported, ids, mask), expected, atol=1e-4)
    untrained = sequence_logps(load_model(str(TINY_MODEL), AutoModelForCausalLM).eval(), ids, mask)
    assert not torch.allclose(untrained, expected, atol=1e-2)  # training moved it, so the comparison can fail


def test_export_of_a_reward_model_fit_reproduces_its_scores(preflight, workdir):
    assert preflight("fit", "--config", "configs/reward_model.yaml", *QUICK).code == 0
    assert preflight("export", workdir / "runs" / "reward_model", workdir / "out").code == 0
    ckpt = workdir / "runs/reward_model/version_0/checkpoints/last.ckpt"
    module = RewardModule.load_from_checkpoint(ckpt).eval()
    exported = AutoModelForSequenceClassification.from_pretrained(workdir / "out").eval()
    ids, mask = encoded()
    assert exported.config.pad_token_id == load_tokenizer(str(TOKENIZER)).pad_token_id
    with torch.no_grad():
        got = exported(input_ids=ids, attention_mask=mask).logits[:, 0]
        want = module.model(input_ids=ids, attention_mask=mask).logits[:, 0]
    assert torch.allclose(got, want, atol=1e-5)


def test_load_from_checkpoint_of_a_cli_checkpoint(preflight, workdir):
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK, "--model.learning_rate", "0.01").code == 0
    ckpt = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    module = PreferenceModule.load_from_checkpoint(ckpt).eval()
    ids, mask = encoded()
    assert torch.allclose(
        sequence_logps(module.policy, ids, mask), sequence_logps(checkpoint_policy(ckpt), ids, mask), atol=1e-6
    )


# ---------------------------------------------------------------------- crafted checkpoints
def craft(path, module, hparams):
    torch.save({"preflight_module": module, "hyper_parameters": hparams, "state_dict": {}}, path)
    return path


def test_export_builds_only_preflight_modules(preflight, workdir):
    marker = workdir / "pwned"
    ckpt = craft(workdir / "evil.ckpt", "os.system", {"command": f"touch {marker}"})
    result = preflight("export", ckpt, workdir / "out")
    assert result.code == 2 and not marker.exists() and not (workdir / "out").exists()
    assert result.preflight_lines() == [
        f"preflight: error: {ckpt}: refusing to build 'os.system': not a preflight module class "
        "(a subclass of your own needs --imports MODULE)"
    ]


def test_export_imports_nothing_a_checkpoint_names(preflight, workdir, monkeypatch):
    (workdir / "planted.py").write_text(f"open({str(workdir / 'pwned')!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(workdir))
    ckpt = craft(
        workdir / "evil.ckpt",
        "preflight.modules.preference.PreferenceModule",
        {"model": "assets/tiny-llama", "loss": {"class_path": "planted.Loss"}},
    )
    result = preflight("export", ckpt, workdir / "out")
    assert result.code == 2 and not (workdir / "pwned").exists()
    assert "refusing to import 'planted.Loss' named by the checkpoint" in result.err


def remote_code_model(folder, marker):
    """A model folder whose config asks for its own code; that code, if ever run, creates `marker`."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(TINY_MODEL)
    config.auto_map = {"AutoConfig": "configuration_evil.EvilConfig", "AutoModelForCausalLM": "modeling_evil.EvilModel"}
    config.save_pretrained(folder)
    code = f"open({str(marker)!r}, 'w').close()\nfrom transformers import LlamaConfig, LlamaForCausalLM\n"
    # subclasses, so that loading them (which registers them for the auto classes) changes no real class
    (folder / "configuration_evil.py").write_text(code + "class EvilConfig(LlamaConfig):\n    pass\n")
    (folder / "modeling_evil.py").write_text(
        code + "from .configuration_evil import EvilConfig\n"
        "class EvilModel(LlamaForCausalLM):\n    config_class = EvilConfig\n"
    )
    return folder


@pytest.mark.parametrize("command", ["export", "validate", "fit"])
def test_a_checkpoint_never_turns_trust_remote_code_on(preflight, workdir, command):
    marker = workdir / "remote-code-ran"
    folder = remote_code_model(workdir / "custom-model", marker)
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    real = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(real, weights_only=True)
    checkpoint["hyper_parameters"].update(model=str(folder), trust_remote_code=True)
    torch.save(checkpoint, real)
    if command == "export":
        result = preflight("export", real, workdir / "out")
    else:
        result = preflight(
            command,
            "--config",
            "configs/dpo.yaml",
            *QUICK,
            "--trainer.max_steps",
            "3",
            "--ckpt_path",
            real,
            "--model.trust_remote_code",
            "false",
        )
    assert not marker.exists()
    if command == "export":  # the model source comes from the checkpoint; its code never runs unless the user says so
        assert result.code == 0
        preflight("export", real, workdir / "out2", "--trust-remote-code")  # (saving this stub model may fail)
        assert marker.exists()  # the positive control: the planted code is real and runs when allowed
    else:  # the config's model is used, and the checkpoint's other model is refused
        assert result.code == 2
        assert f"was trained with model='{folder}', this config sets 'assets/tiny-llama'" in result.err


@pytest.mark.parametrize("how", ["load_from_checkpoint", "validate", "export"])
def test_a_checkpoints_instantiator_is_never_called(preflight, workdir, monkeypatch, how):
    """GHSA-qqmf-gpg7-g8gw: Lightning 2.6.0-2.6.5 import and call the callable a checkpoint's ``_instantiator``
    hyper-parameter names from ``load_from_checkpoint``; preflight requires 2.6.6, and its own loaders never read it."""
    marker = workdir / "pwned"
    (workdir / "planted.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "def build(cls, kwargs):\n    return cls(**kwargs)\n"
        "class Evil:\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(workdir))
    monkeypatch.delitem(sys.modules, "planted", raising=False)  # imported afresh from this test's folder
    assert preflight("fit", "--config", "configs/dpo.yaml", *QUICK).code == 0
    real = workdir / "runs/dpo/version_0/checkpoints/last.ckpt"
    checkpoint = torch.load(real, weights_only=True)
    checkpoint["hyper_parameters"].update(_instantiator="planted.build", _class_path="planted.Evil")
    torch.save(checkpoint, real)
    if how == "load_from_checkpoint":  # a user's own script
        with pytest.raises(ValueError, match="not in the allowlist of trusted instantiators"):
            PreferenceModule.load_from_checkpoint(real)
    elif how == "validate":
        result = preflight("validate", "--config", "configs/dpo.yaml", *QUICK, "--ckpt_path", real)
        assert result.code == 0 and "val/loss" in result.out
    else:
        result = preflight("export", real, workdir / "out")
        assert result.code == 0 and (workdir / "out" / "model.safetensors").is_file()
    assert not marker.exists()
    import planted  # noqa: F401  the positive control: the planted module is real and writes the marker when imported

    assert marker.exists()
