"""TR-DPO's moving reference (`MovingReference`): the reference after training equals the soft or hard update rule
applied by hand to the policies of the update steps; settings it cannot work with are refused in one line."""

import lightning as L
import pytest
import torch

from preflight.datamodules import PreferenceDataModule
from preflight.errors import PreflightConfigError
from preflight.modules import PreferenceModule
from preflight.moving_reference import MovingReference
from tests.conftest import TINY_MODEL, TOKENIZER
from tests.helpers import quiet_trainer

VAL = TINY_MODEL.parent / "data" / "val.jsonl"


class PolicyAt(L.Callback):
    """The policy's parameters after each optimizer step (before any callback listed after it moves anything)."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_start(self, trainer, pl_module):
        self.at[0] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.at[trainer.global_step] = {n: p.detach().clone() for n, p in pl_module.policy.named_parameters()}


def trained(mode, alpha, every, steps=4, **module_kwargs):
    data = PreferenceDataModule(str(TOKENIZER), train=str(VAL), batch_size=4, use_cache=False)
    module = PreferenceModule(str(TINY_MODEL), learning_rate=1e-2, **module_kwargs)
    policies = PolicyAt()
    moving = MovingReference(mode, alpha=alpha, every_n_steps=every)
    quiet_trainer(steps, callbacks=[policies, moving]).fit(module, data)
    return module, policies.at, moving


def test_soft_updates_mix_the_policy_into_the_reference_every_tau_steps():
    module, at, moving = trained("soft", 0.3, 2)
    reference = dict(module.reference_model.named_parameters())
    for name, p0 in at[0].items():
        expected = 0.3 * at[4][name] + 0.7 * (0.3 * at[2][name] + 0.7 * p0)
        assert torch.allclose(reference[name], expected, atol=1e-6, rtol=0), name
    assert (moving.updates, moving.last_update) == (2, 4)
    assert any(not torch.equal(at[4][n], at[0][n]) for n in at[0])  # the policy moved: the check can fail


def test_a_hard_update_copies_the_policy():
    module, at, moving = trained("hard", 0.6, 3, steps=4)
    reference = dict(module.reference_model.named_parameters())
    assert all(torch.equal(reference[name], at[3][name]) for name in at[3]) and moving.updates == 1


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        (dict(reference="precomputed"), "reference: precomputed fixes the reference's log-probs before training"),
        (dict(peft={"r": 4}, reference="adapter"), "a LoRA policy's reference is its adapter-disabled base"),
        (dict(peft={"r": 4}, reference="copy"), "a LoRA policy's weights are its base plus an adapter"),
        (dict(loss="simpo"), "loss 'simpo' uses no reference"),
    ],
)
def test_settings_without_a_movable_reference_are_refused(kwargs, reason):
    with pytest.raises(PreflightConfigError, match=rf"^MovingReference \(TR-DPO\) cannot run: {reason}"):
        trained("soft", 0.5, 2, steps=1, **kwargs)
