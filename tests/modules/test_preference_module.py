"""PreferenceModule: model building, references, and the loss wiring, without a Trainer."""

import pytest
import torch

from preflight import PreferenceModule
from preflight.losses import LossInputs, get_loss
from preflight.pretrained import ModelLoadError
from tests.conftest import TINY_MODEL
from tests.helpers import batch_of, naive_sequence_logps, random_pairs


def built(**kw):
    module = PreferenceModule(str(TINY_MODEL), **kw)
    module.configure_model()
    return module


def test_configure_model_is_idempotent_and_deterministic():
    module = built()
    policy = module.policy
    module.configure_model()
    assert module.policy is policy
    other = built()
    assert all(torch.equal(a, b) for a, b in zip(policy.parameters(), other.policy.parameters()))


def test_dropout_is_off():
    module = PreferenceModule(str(TINY_MODEL))
    module.configure_model()
    assert module.policy.config.attention_dropout == 0.0
    assert all(layer.self_attn.attention_dropout == 0.0 for layer in module.policy.model.layers)


def test_dpo_loss_from_the_module_equals_the_formula_on_naive_logps():
    module = built(loss={"name": "dpo", "beta": 0.2})
    with torch.no_grad():  # make the policy differ from its reference
        for p in module.policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
    pairs = random_pairs(3, seed=4)
    output, chosen, rejected = module.compute_loss(batch_of(pairs))
    naive = lambda m, which: torch.tensor([naive_sequence_logps(m, p.prompt_ids, getattr(p, which)) for p in pairs])  # noqa: E731
    expected = get_loss("dpo", beta=0.2)(
        LossInputs(
            naive(module.policy, "chosen_ids"),
            naive(module.policy, "rejected_ids"),
            naive(module.reference_model, "chosen_ids"),
            naive(module.reference_model, "rejected_ids"),
        )
    )
    assert output.loss.item() == pytest.approx(expected.loss.item(), abs=1e-5)
    assert chosen.tolist() == pytest.approx(naive(module.policy, "chosen_ids").tolist(), abs=1e-4)


def test_the_reference_never_receives_gradients():
    module = built()
    output, _, _ = module.compute_loss(batch_of(random_pairs(3)))
    output.loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in module.reference_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.policy.parameters())


def test_auto_reference_follows_the_loss_and_peft():
    assert built(loss="dpo").reference_mode == "copy"
    simpo = built(loss="simpo")
    assert simpo.reference_mode == "none" and simpo.reference_model is None
    assert PreferenceModule(str(TINY_MODEL), loss="dpo", peft={"r": 4}).reference_mode == "adapter"
    with pytest.raises(ValueError, match="needs a reference"):
        PreferenceModule(str(TINY_MODEL), loss="ipo", reference="none")
    with pytest.raises(ValueError, match="peft"):
        PreferenceModule(str(TINY_MODEL), reference="adapter")


def test_adapter_reference_is_the_base_model():
    module = built(loss="dpo", peft={"r": 4, "lora_alpha": 8})
    assert module.reference_model is None
    with torch.no_grad():
        for name, p in module.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # the adapter now changes the outputs
    pairs = random_pairs(3, seed=6)
    batch = batch_of(pairs)
    base = PreferenceModule(str(TINY_MODEL))
    base.configure_model()
    expected = base.completion_logps(base.policy, batch)
    assert torch.allclose(module.reference_logps(batch), expected, atol=1e-5)
    assert not torch.allclose(module.completion_logps(module.policy, batch).detach(), expected, atol=1e-3)


def test_loss_specification_forms():
    assert built(loss="ipo").loss_fn.name == "ipo"
    assert built(loss={"name": "ipo", "beta": 0.5}).loss_fn.beta == 0.5
    spec = {"class_path": "preflight.losses.margin.IPOLoss", "init_args": {"beta": 0.3}}
    assert built(loss=spec).loss_fn.beta == 0.3
    instance = get_loss("hinge", beta=0.2)
    module = built(loss=instance)
    assert module.loss_fn is instance and module.hparams["loss"] == {"name": "hinge", "beta": 0.2}


def test_missing_model_folder_is_a_clear_error():
    with pytest.raises(ModelLoadError, match="'./no-such-model': no such folder"):
        PreferenceModule("./no-such-model")


def test_dpo_starts_at_log_2_with_the_policy_equal_to_its_reference():
    import math

    output, _, _ = built().compute_loss(batch_of(random_pairs(4, seed=9)))
    assert output.loss.item() == pytest.approx(math.log(2), abs=1e-6)
    assert output.chosen_rewards.abs().max().item() < 1e-6


def test_the_reference_pass_gives_every_process_an_equal_block_covering_every_row():
    from preflight.reference import shard

    for n, world in ((28, 2), (27, 2), (5, 4), (1, 3), (10, 3)):
        blocks = [shard(n, world, rank) for rank in range(world)]
        assert len({len(b) for b in blocks}) == 1  # the same number of forwards on every process
        flat = [row for block in blocks for row in block]
        assert flat[:n] == list(range(n))  # gathered in rank order, the first n are the rows in order
        assert all(0 <= row < n for row in flat)
