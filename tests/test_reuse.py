"""preflight's pieces inside other Lightning projects: plain Trainer, own data, own loss."""

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from preflight import PreferenceDataModule, PreferenceModule, RewardModule
from preflight.losses import LossOutput, PreferenceLoss, register_loss
from preflight.metrics import STANDARD
from tests.conftest import TINY_MODEL, TOKENIZER, TRAIN, VAL
from tests.helpers import quiet_trainer


def test_plain_trainer_logs_trl_metric_names():
    data = PreferenceDataModule(str(TOKENIZER), train=str(TRAIN), val=str(VAL), batch_size=8)
    t = quiet_trainer(limit_val_batches=2, val_check_interval=4)
    t.fit(PreferenceModule(str(TINY_MODEL), loss="dpo"), data)
    for stage in ("train", "val"):
        for name in STANDARD:
            value = t.callback_metrics[f"{stage}/{name}"]
            assert torch.isfinite(value)
    assert 0.0 <= float(t.callback_metrics["val/rewards/accuracies"]) <= 1.0


class HandMadeData(L.LightningDataModule):
    """A user's own DataModule that yields the documented batch format, built by hand."""

    def train_dataloader(self):
        # two pairs: prompt [1, 50, 60], chosen [70, 2] / [71, 72, 2], rejected [80, 81, 2] / [90, 2]
        input_ids = torch.tensor(
            [[1, 50, 60, 70, 2, 0], [1, 50, 60, 71, 72, 2], [1, 50, 60, 80, 81, 2], [1, 50, 60, 90, 2, 0]]
        )
        attention = (torch.arange(6) < torch.tensor([[5], [6], [6], [5]])).long()
        completion = attention.clone()
        completion[:, :3] = 0
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention,
            "completion_mask": completion,
            "prompt_lengths": torch.tensor([3, 3]),
            "chosen_lengths": torch.tensor([2, 3]),
            "rejected_lengths": torch.tensor([3, 2]),
            "index": torch.tensor([0, 1]),
        }
        return DataLoader([batch] * 4, batch_size=None)


def test_own_datamodule_with_the_documented_batch_format():
    module = PreferenceModule(str(TINY_MODEL), loss="dpo", learning_rate=1e-2)
    t = quiet_trainer(steps=4)
    t.fit(module, HandMadeData())
    assert float(t.callback_metrics["train/rewards/margins"]) > 0  # it learned to prefer the chosen rows


def test_a_user_registered_loss_is_selected_by_name(monkeypatch):
    import preflight.losses.registry as registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_loss("user_margin")
    class UserMargin(PreferenceLoss):
        """−log σ(π_w − π_l − 1): reference-free, with a unit margin."""

        requires_reference = False

        def compute(self, inputs):
            losses = -F.logsigmoid(inputs.policy_chosen_logps - inputs.policy_rejected_logps - 1.0)
            return LossOutput(losses.mean(), losses)

    module = PreferenceModule(str(TINY_MODEL), loss="user_margin")
    assert isinstance(module.loss_fn, UserMargin) and module.reference_mode == "none"
    quiet_trainer(steps=2).fit(module, HandMadeData())


def test_precomputed_reference_matches_the_copy_and_holds_no_model():
    def run(reference):
        L.seed_everything(0)
        data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=8)
        module = PreferenceModule(str(TINY_MODEL), loss="dpo", reference=reference, learning_rate=1e-3)
        losses = []

        class Record(L.Callback):
            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                losses.append(float(outputs["loss"]))

        quiet_trainer(steps=5, callbacks=[Record()]).fit(module, data)
        return module, data, losses

    precomputed, data, losses_pre = run("precomputed")
    copy, _, losses_copy = run("copy")
    assert precomputed.reference_model is None
    assert torch.allclose(torch.tensor(losses_pre), torch.tensor(losses_copy), atol=1e-5)
    # the attached values are the initial policy's log-probs, row by row
    table = torch.tensor(precomputed.precomputed_reference["train"]["logps"])
    first = data.collator(data.datasets["train"].pairs[:8])
    with torch.no_grad():
        expected = copy.completion_logps(copy.reference_model, first)
    assert torch.allclose(table[:8, 0], expected[:8], atol=1e-4) and torch.allclose(
        table[:8, 1], expected[8:], atol=1e-4
    )


def test_reward_module_learns_the_rule_and_logs_accuracy():
    L.seed_everything(0)
    data = PreferenceDataModule(str(TOKENIZER), train=str(TRAIN), val=str(VAL), batch_size=16)
    module = RewardModule(str(TINY_MODEL), learning_rate=1e-3)
    t = quiet_trainer(steps=40, val_check_interval=40)
    t.fit(module, data)
    assert float(t.callback_metrics["val/rewards/accuracies"]) >= 0.9
    assert "val/rewards/margins" in t.callback_metrics and "val/logps/chosen" not in t.callback_metrics


def test_reward_module_rejects_a_log_prob_loss():
    import pytest

    with pytest.raises(ValueError, match="needs policy log-probs"):
        RewardModule(str(TINY_MODEL), loss="dpo")


def test_precomputed_reference_is_cached_on_disk(tmp_path, monkeypatch):
    calls = []

    def run():
        data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=8, cache_dir=str(tmp_path / "tok"))
        module = PreferenceModule(str(TINY_MODEL), loss="dpo", reference="precomputed")
        real = module.completion_logps

        def counting(model, batch):
            calls.append(torch.is_grad_enabled())
            return real(model, batch)

        module.completion_logps = counting
        quiet_trainer(steps=1).fit(module, data)
        return module

    first = run()
    no_grad_passes = calls.count(False)
    assert no_grad_passes >= 200 // 32  # the precompute pass: 200 pairs in batches of 32
    assert list((tmp_path / "reference").glob("*.json"))  # the table is on disk, as JSON
    calls.clear()
    second = run()
    assert calls.count(False) == 0  # read back, not recomputed
    assert second.precomputed_reference["train"] == first.precomputed_reference["train"]
