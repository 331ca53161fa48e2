"""Loss plugins: a broken one breaks nothing else; a user's own file is usable from the command."""

import warnings
from importlib.metadata import EntryPoint

import pytest
import torch

import preflight.losses.registry as registry
from preflight.losses import LossInputs, get_loss

GOOD = """
import torch.nn.functional as F
from preflight.losses import PreferenceLoss, LossOutput, register_loss

@register_loss("good_plugin_loss")
class GoodPluginLoss(PreferenceLoss):
    requires_reference = False
    def compute(self, x):
        losses = -F.logsigmoid(x.policy_chosen_logps - x.policy_rejected_logps)
        return LossOutput(losses.mean(), losses)
"""


class FakeDistribution:
    name = "broken-losses-dist"


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    (tmp_path / "good_plugin.py").write_text(GOOD)
    (tmp_path / "broken_plugin.py").write_text("import a_package_that_is_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    broken = EntryPoint("broken", "broken_plugin", registry.ENTRY_POINT_GROUP)
    object.__setattr__(broken, "dist", FakeDistribution())  # EntryPoint is frozen; installed ones carry their dist
    eps = [broken, EntryPoint("good", "good_plugin", registry.ENTRY_POINT_GROUP)]
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "entry_points", lambda group: eps if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)


def test_a_broken_plugin_breaks_nothing_else(plugins):
    x = LossInputs(
        policy_chosen_logps=torch.tensor([-3.0]),
        policy_rejected_logps=torch.tensor([-4.0]),
        reference_chosen_logps=torch.tensor([-3.0]),
        reference_rejected_logps=torch.tensor([-3.0]),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dpo = get_loss("dpo", beta=1.0)
        good = get_loss("good_plugin_loss")
        get_loss("ipo")  # the second query warns no more
    assert dpo(x).loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item())
    assert good(x).loss.item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(1.0)).item())
    messages = [str(w.message) for w in caught if "plugin" in str(w.message)]
    assert messages == [
        "preflight: loss plugin not loaded: entry point 'broken' = broken_plugin (broken-losses-dist): "
        "ModuleNotFoundError: No module named 'a_package_that_is_not_installed'"
    ]
    with pytest.raises(ValueError, match="Plugins that failed to load: entry point 'broken'"):
        get_loss("from_the_broken_plugin")


MY_LOSSES = """
import torch.nn.functional as F
from preflight.losses import PreferenceLoss, LossOutput, register_loss

@register_loss("margin_dpo_here", "mdpo_here")
class MarginDPO(PreferenceLoss):
    def __init__(self, beta: float = 0.1, gamma: float = 0.5):
        super().__init__()
        self.beta, self.gamma = beta, gamma

    def compute(self, x):
        rho_w = x.policy_chosen_logps - x.reference_chosen_logps
        rho_l = x.policy_rejected_logps - x.reference_rejected_logps
        losses = -F.logsigmoid(self.beta * (rho_w - rho_l) - self.gamma)
        return LossOutput(losses.mean(), losses, (self.beta * rho_w).detach(), (self.beta * rho_l).detach())
"""


@pytest.mark.parametrize(
    "how",
    [
        ["--imports", "my_losses_here", "--model.loss", "mdpo_here"],
        ["--imports", "my_losses_here.py", "--model.loss", "{name: margin_dpo_here, gamma: 1.0}"],
        ["--model.loss", '{"class_path": "my_losses_here.MarginDPO"}'],
    ],
    ids=["name", "file", "class_path"],
)
def test_a_loss_in_your_own_file_works_from_the_command(preflight, workdir, monkeypatch, how):
    from tests.flows.conftest import QUICK

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.delitem(__import__("sys").modules, "my_losses_here", raising=False)
    (workdir / "my_losses_here.py").write_text(MY_LOSSES)
    result = preflight("fit", "--config", "configs/dpo.yaml", *QUICK, *how)
    assert result.code == 0, result.err[-2000:]
    assert (workdir / "runs" / "dpo" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_an_unknown_import_is_one_line(preflight):
    result = preflight("fit", "--config", "configs/dpo.yaml", "--imports", "no_such_module_here")
    assert result.code == 2
    assert result.preflight_lines()[-1] == (
        "preflight: error: imports: cannot import 'no_such_module_here' (No module named 'no_such_module_here')"
    )
