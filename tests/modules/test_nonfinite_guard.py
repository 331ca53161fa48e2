"""A non-finite loss or gradient stops training (or skips the batch) before any weight moves."""

import json

import lightning as L
import pytest
import torch

from preflight import PreferenceDataModule, PreferenceModule
from preflight.losses import LossInputs
from preflight.modules import NonFiniteError
from tests.conftest import TINY_MODEL, TOKENIZER, VAL
from tests.helpers import quiet_trainer


class PoisonOnStep(L.Callback):
    """Makes the policy's chosen log-prob of one pair non-finite at one step, and snapshots the weights."""

    def __init__(self, step: int, value: float) -> None:
        self.step, self.value = step, value
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            self.before = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}
            original = pl_module.loss_fn.forward

            def poisoned(inputs: LossInputs):
                chosen = inputs.policy_chosen_logps.clone()
                chosen[1] = chosen[1] * self.value  # keeps the graph: the gradient is poisoned too
                pl_module.loss_fn.forward = original
                return original(LossInputs(**{**inputs.__dict__, "policy_chosen_logps": chosen}))

            pl_module.loss_fn.forward = poisoned

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step in (self.step, self.step + 1) and not self.after:
            self.after = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}
            self.rows = batch["index"].tolist()


def fit(on_nonfinite, poison, steps=4):
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=4)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-2, on_nonfinite=on_nonfinite)
    trainer = quiet_trainer(steps, callbacks=[poison])
    trainer.fit(module, data)
    return trainer, module


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_error_names_the_step_and_rows(value):
    poison = PoisonOnStep(step=2, value=value)
    with pytest.raises(NonFiniteError) as err:
        fit("error", poison)
    message = str(err.value)
    assert "non-finite loss at step 2" in message and "on_nonfinite: skip" in message
    batch_rows = json.loads(message.split("batch of dataset rows ")[1].split("]")[0] + "]")
    bad_rows = json.loads(message.split("non-finite for dataset rows ")[1].split("]")[0] + "]")
    assert len(batch_rows) == 4 and bad_rows == [batch_rows[1]]  # the poisoned pair, by its dataset row


def test_error_leaves_the_weights_of_the_last_good_step():
    poison = PoisonOnStep(step=2, value=float("nan"))
    trainer_module = {}

    class Keep(L.Callback):
        def on_exception(self, trainer, pl_module, exception):
            trainer_module["weights"] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}

    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=4)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-2)
    trainer = L.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        callbacks=[poison, Keep()],
    )
    with pytest.raises(NonFiniteError):
        trainer.fit(module, data)
    assert trainer.global_step == 2
    for name, before in poison.before.items():
        assert torch.equal(before, trainer_module["weights"][name]), name
        assert torch.isfinite(trainer_module["weights"][name]).all()


def test_skip_mode_skips_the_batch_and_goes_on():
    poison = PoisonOnStep(step=2, value=float("nan"))
    trainer, module = fit("skip", poison, steps=4)
    assert trainer.global_step == 4  # training went on
    changed_later = False
    for name, before in poison.before.items():
        assert torch.equal(before, poison.after[name]), name  # the poisoned step moved nothing
        changed_later |= not torch.equal(before, module.policy.state_dict()[name])
    assert changed_later  # the next steps trained as usual
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
