"""`preflight export CKPT OUT` and the HFExport callback: a Hugging Face folder with identical logits."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from preflight import PreferenceDataModule, PreferenceModule, RewardModule
from preflight.cli import main
from preflight.export import HFExport
from tests.conftest import TINY_MODEL, TOKENIZER, TRAIN


def fit(module, tmp_path, steps=3, callbacks=()):
    data = PreferenceDataModule(str(TOKENIZER), train=str(TRAIN), batch_size=4)
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[checkpoint, *callbacks],
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(module, data)
    return tmp_path / "ckpt" / "last.ckpt"


IDS = torch.tensor([[1, 40, 52, 77, 90, 101, 2], [1, 33, 34, 35, 2, 0, 0]])
MASK = (IDS != 0).long()


@pytest.mark.parametrize("peft", [None, {"r": 4, "lora_alpha": 8}], ids=["full", "lora"])
def test_export_command_gives_identical_logits(tmp_path, peft, capsys):
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-2, peft=peft)
    ckpt = fit(module, tmp_path)
    out = tmp_path / "hf"
    main(["export", str(ckpt), str(out)])
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    assert not list(out.glob("*.bin")) and not list(out.glob("*.pt"))
    loaded = AutoModelForCausalLM.from_pretrained(out).eval()
    module.policy.eval()
    with torch.no_grad():
        expected = module.policy(input_ids=IDS, attention_mask=MASK).logits
        got = loaded(input_ids=IDS, attention_mask=MASK).logits
    assert torch.allclose(got, expected, atol=1e-5)
    fresh = PreferenceModule(str(TINY_MODEL))
    fresh.configure_model()
    with torch.no_grad():  # and training changed the weights, so the test can fail
        assert not torch.allclose(fresh.policy(input_ids=IDS, attention_mask=MASK).logits, got, atol=1e-4)
    assert (
        AutoTokenizer.from_pretrained(out)("Hi")["input_ids"]
        == AutoTokenizer.from_pretrained(TOKENIZER)("Hi")["input_ids"]
    )


def test_lora_checkpoints_hold_only_trainable_weights(tmp_path):
    module = PreferenceModule(str(TINY_MODEL), peft={"r": 4})
    ckpt = fit(module, tmp_path, steps=1)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(state) == trainable and all("lora_" in k for k in state)


def test_full_checkpoints_leave_out_the_frozen_reference(tmp_path):
    module = PreferenceModule(str(TINY_MODEL))
    ckpt = fit(module, tmp_path, steps=1)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert state and not any(k.startswith("reference_model.") for k in state)


def test_reward_model_exports_as_sequence_classification(tmp_path):
    module = RewardModule(str(TINY_MODEL), learning_rate=1e-2)
    fit(module, tmp_path, callbacks=[HFExport(str(tmp_path / "hf"))])
    loaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    module.model.eval()
    with torch.no_grad():
        assert torch.allclose(
            loaded(input_ids=IDS, attention_mask=MASK).logits,
            module.model(input_ids=IDS, attention_mask=MASK).logits,
            atol=1e-5,
        )
    assert loaded.config.num_labels == 1


def test_export_of_a_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path / "nope.ckpt"), str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip() == f"preflight: error: {tmp_path / 'nope.ckpt'}: checkpoint not found"
    assert not (tmp_path / "out").exists()
