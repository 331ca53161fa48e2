import sys
import textwrap
from importlib.metadata import EntryPoint

import pytest
import torch

import preflight.losses.registry as registry
from preflight.losses import (
    LossInputs,
    LossOutput,
    PreferenceLoss,
    available_losses,
    build_loss,
    get_loss,
    register_loss,
)

ISSUE_NAMES = [
    "bradley_terry",
    "bt",
    "reward",
    "dpo",
    "sigmoid",
    "robust",
    "ipo",
    "hinge",
    "rso",
    "exo_pair",
    "nca_pair",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sigmoid_norm",
    "dpop",
    "length_regularized",
    "simpo",
    "cpo",
    "orpo",
    "sft",
    "nll",
    "weighted",
]


def test_every_published_loss_is_registered():
    missing = set(ISSUE_NAMES) - set(available_losses())
    assert not missing


def test_aliases_resolve_to_the_same_class():
    assert type(get_loss("sigmoid")) is type(get_loss("dpo"))
    assert type(get_loss("bt")) is type(get_loss("reward")) is type(get_loss("bradley_terry"))


@pytest.fixture
def scratch_registry(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def test_user_loss_by_decorator(scratch_registry):
    @register_loss("double_margin", "dm")
    class DoubleMargin(PreferenceLoss):
        """−log σ(2·k·(π_w − π_l)), reference-free."""

        requires_reference = False

        def __init__(self, k: float = 1.0):
            super().__init__()
            self.k = k

        def compute(self, inputs):
            z = 2 * self.k * (inputs.policy_chosen_logps - inputs.policy_rejected_logps)
            losses = -torch.nn.functional.logsigmoid(z)
            return LossOutput(losses.mean(), losses)

    assert "double_margin" in available_losses() and "dm" in available_losses()
    loss = get_loss("dm", k=0.5)
    out = loss(LossInputs(policy_chosen_logps=torch.tensor([-1.0]), policy_rejected_logps=torch.tensor([-2.0])))
    assert out.loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item())
    assert build_loss({"name": "double_margin", "k": 2.0}).k == 2.0


def test_registering_a_taken_name_names_both_classes(scratch_registry):
    with pytest.raises(ValueError) as err:

        @register_loss("fresh_name", "ipo")
        class Impostor(PreferenceLoss):
            pass

    assert "IPOLoss" in str(err.value) and "Impostor" in str(err.value)
    assert "fresh_name" not in available_losses()  # nothing half-registered


def test_unknown_name_lists_names_and_closest_match():
    with pytest.raises(ValueError) as err:
        get_loss("simpoo")
    message = str(err.value)
    assert "'simpo'" in message.split("Available")[0]
    assert "simpo" in message and "ipo" in message


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(ValueError) as err:
        get_loss("dpo", bta=0.2)
    assert "bta" in str(err.value) and "beta" in str(err.value) and "label_smoothing" in str(err.value)


def test_invalid_hyperparameter_values_are_rejected():
    for name, hp in [
        ("dpo", {"beta": 0.0}),
        ("robust", {"label_smoothing": 0.5}),
        ("exo_pair", {"label_smoothing": 0.0}),
    ]:
        with pytest.raises(ValueError):
            get_loss(name, **hp)


def test_build_loss_forms():
    assert build_loss("ipo").beta == 0.1
    assert build_loss({"name": "ipo", "beta": 0.5}).beta == 0.5
    spec = {"class_path": "preflight.losses.margin.IPOLoss", "init_args": {"beta": 0.25}}
    assert build_loss(spec).beta == 0.25
    instance = get_loss("hinge")
    assert build_loss(instance) is instance
    with pytest.raises(ValueError, match="name"):
        build_loss({"beta": 0.5})


def test_missing_required_input_names_the_field():
    loss = get_loss("dpo")
    with pytest.raises(ValueError, match="reference_chosen_logps"):
        loss(LossInputs(policy_chosen_logps=torch.zeros(2), policy_rejected_logps=torch.zeros(2)))


def test_declared_needs_drive_what_a_module_computes():
    assert not get_loss("simpo").requires_reference and not get_loss("orpo").requires_reference
    assert not get_loss("cpo").requires_reference
    assert get_loss("bradley_terry").required_fields() == ("chosen_rewards", "rejected_rewards")
    assert "chosen_lengths" in get_loss("ipo").required_fields()
    assert "chosen_lengths" not in get_loss("ipo", length_normalize=False).required_fields()


def test_entry_point_plugins_are_discovered_lazily(tmp_path, monkeypatch, scratch_registry):
    plugin = tmp_path / "my_plugin_losses.py"
    plugin.write_text(
        textwrap.dedent("""
        import torch
        from preflight.losses import PreferenceLoss, LossOutput, register_loss

        @register_loss("plugin_by_module")
        class ByModule(PreferenceLoss):
            requires_reference = False
            def compute(self, inputs):
                losses = -inputs.policy_chosen_logps
                return LossOutput(losses.mean(), losses)

        class ByClass(ByModule.__mro__[1]):
            requires_reference = False
            def compute(self, inputs):
                losses = -2 * inputs.policy_chosen_logps
                return LossOutput(losses.mean(), losses)
    """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        EntryPoint("module_plugin", "my_plugin_losses", registry.ENTRY_POINT_GROUP),
        EntryPoint("plugin_by_class", "my_plugin_losses:ByClass", registry.ENTRY_POINT_GROUP),
    ]
    monkeypatch.setattr(registry, "entry_points", lambda group: [e for e in eps if e.group == group])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    assert "my_plugin_losses" not in sys.modules  # nothing imported before the first query
    names = available_losses()
    assert "plugin_by_module" in names and "plugin_by_class" in names
    x = LossInputs(policy_chosen_logps=torch.tensor([-3.0]), policy_rejected_logps=torch.tensor([-4.0]))
    assert get_loss("plugin_by_class")(x).loss.item() == 6.0
    sys.modules.pop("my_plugin_losses", None)
