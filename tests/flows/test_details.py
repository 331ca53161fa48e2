"""Smaller things a user meets: model instances, reward-model padding, skipped steps and the schedule,
the progress bar, and `check_loss` saying what it checked."""

import lightning as L
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification

from preflight import PreferenceDataModule, PreferenceModule, RewardModule
from preflight.reporting import StepProgressBar
from preflight.testing import check_loss
from tests.conftest import TINY_MODEL, TOKENIZER, VAL
from tests.helpers import quiet_trainer, tiny_causal_lm
from tests.modules.test_nonfinite_guard import PoisonOnStep


def test_a_model_instance_is_registered_once_and_named_in_the_hyperparameters():
    model = tiny_causal_lm()
    module = PreferenceModule(model, peft={"r": 4})
    module.configure_model()
    keys = module.state_dict().keys()
    assert not [k for k in keys if k.startswith("model_spec")]
    assert module.hparams["model"] == str(TINY_MODEL)  # where the instance's config came from
    checkpoint = {"state_dict": module.state_dict()}
    module.on_save_checkpoint(checkpoint)
    trainable = {n for n, p in module.named_parameters() if p.requires_grad}
    assert set(checkpoint["state_dict"]) == trainable  # a lean LoRA checkpoint: no frozen tensor kept


def test_reward_is_read_at_the_last_real_token_whatever_the_model_config_says():
    config = AutoConfig.from_pretrained(TINY_MODEL, num_labels=1, pad_token_id=5)  # not the data's padding (0)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(config)
    module = RewardModule(model, learning_rate=0.0)
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=4)
    quiet_trainer(1).fit(module, data)
    batch = data.collator(data.dataset("train").pairs[:4])
    assert module.model.config.pad_token_id == data.collator.pad_token_id == 0
    with torch.no_grad():
        scores = module.rewards(batch)
        for row in range(batch["input_ids"].shape[0]):
            length = int(batch["attention_mask"][row].sum())
            alone = module.model(input_ids=batch["input_ids"][row : row + 1, :length]).logits[0, 0]
            assert torch.allclose(scores[row], alone, atol=1e-5), row


def test_a_skipped_step_does_not_advance_the_schedule():
    lrs = []

    class RecordLR(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=4)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-2, on_nonfinite="skip", warmup_steps=10)
    quiet_trainer(4, callbacks=[PoisonOnStep(step=1, value=float("nan")), RecordLR()]).fit(module, data)
    # linear warm-up over 10 steps: 1e-3 per scheduler step; the poisoned second batch moves nothing
    assert [round(lr, 8) for lr in lrs] == [1e-3, 1e-3, 2e-3, 3e-3]


def test_the_progress_bar_counts_steps_when_steps_bound_the_run(preflight):
    from tests.flows.conftest import QUICK

    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK[:-2])  # the progress bar left on
    assert result.code == 0
    assert "Epoch 0, max steps 2" in result.out and "0/-2" not in result.out


def test_the_progress_bar_counts_epochs_from_one_when_epochs_bound_the_run():
    bar = StepProgressBar()
    bar._trainer = L.Trainer(max_epochs=3, callbacks=[bar], logger=False, accelerator="cpu")  # as Lightning sets it
    assert bar._get_train_description(1) == "Epoch 2/3"


def test_check_loss_says_what_passed(capsys):
    passed = check_loss("dpo", beta=0.2)
    line = capsys.readouterr().out.strip()
    assert line == f"check_loss('dpo'): {len(passed)} checks passed: {', '.join(passed)}"
    assert "monotonic" in passed and len(passed) == 7
    check_loss("dpo", label_smoothing=0.1)  # cDPO is not monotonic in the margin
    assert "monotonicity not checked" in capsys.readouterr().out


def test_a_huge_row_is_a_located_bad_row_not_gigabytes(preflight, workdir):
    import json

    ok = {"prompt": "Is it in stock?", "chosen": " Yes, happily.", "rejected": " Yes."}
    huge = {**ok, "chosen": " Yes" + "!" * 3_000_000}
    (workdir / "big.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [ok, huge, ok, ok]))
    result = preflight("fit", "--config", "configs/dpo.yaml", "--data.train", "big.jsonl", "--trainer.max_steps", "1")
    assert result.code == 2
    size = len(huge["prompt"]) + len(huge["chosen"]) + len(huge["rejected"])
    assert result.preflight_lines() == [
        f"preflight: error: big.jsonl, line 2: the row holds {size:,} characters, more than max_row_chars (1,000,000)"
    ]
    data = PreferenceDataModule(str(TOKENIZER), train="big.jsonl", on_bad_rows="skip")
    assert len(data.dataset("train")) == 3 and data.reports["train"].bad == 1
    assert (
        len(PreferenceDataModule(str(TOKENIZER), train="big.jsonl", max_row_chars=None, max_length=64).dataset("train"))
        == 4
    )


def test_fit_prints_and_logs_the_log_prob_paths(preflight, workdir):
    from tests.flows.conftest import QUICK

    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK)
    assert result.code == 0
    assert (
        "preflight: log-probs: fused lm_head on (plain logits), shared prompt on (full attention), padding-free off "
        "(sdpa would need a dense mask over each packed row, quadratic in its length (flex_attention or "
        "flash_attention_2 take packed rows; set on to pack anyway)); rows over 4096 tokens go unshared "
        "(dense_mask_max_length)" in result.preflight_lines()
    )
    import yaml

    hparams = yaml.safe_load((workdir / "runs/dpo/version_0/hparams.yaml").read_text())
    assert hparams["logps_path"] == {
        "fused_lm_head": True,
        "fused_lm_head_reason": "plain logits",
        "shared_prompt": True,
        "shared_prompt_reason": "full attention",
        "padding_free": False,
        "padding_free_reason": hparams["logps_path"]["padding_free_reason"],
    }
    assert hparams["logps_path"]["padding_free_reason"].startswith("sdpa would need a dense mask")
