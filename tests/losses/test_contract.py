"""The public contract suite (`preflight.testing.check_loss`) over every registered loss."""

import pytest
import torch

from preflight.losses import LossOutput, PreferenceLoss, available_losses, loss_class
from preflight.testing import check_loss

HYPERPARAMETERS = {
    "WeightedLoss": {"terms": [{"name": "dpo", "weight": 0.8}, {"name": "bco_pair", "weight": 0.2}, {"name": "sft"}]},
}


def distinct_classes():
    seen = {}
    for name in available_losses():
        seen.setdefault(loss_class(name), name)
    return sorted(seen.values())


@pytest.mark.parametrize("name", distinct_classes())
def test_contract(name):
    check_loss(name, **HYPERPARAMETERS.get(loss_class(name).__name__, {}))


@pytest.mark.parametrize(
    "options",
    [
        {"label_smoothing": 0.1},
        {"divergence": "forward_kl"},
        {"divergence": "js_divergence"},
        {"divergence": "alpha_divergence"},
    ],
)
def test_contract_dpo_options(options):
    check_loss("dpo", **options)


def test_smoothed_dpo_is_not_monotonic_and_says_so():
    from preflight.losses import get_loss

    assert get_loss("dpo").monotonic and not get_loss("dpo", label_smoothing=0.1).monotonic


def test_the_contract_catches_a_broken_loss():
    class NaiveLogOfSigmoid(PreferenceLoss):
        """log(sigmoid(x)) underflows to log(0) = -inf at extreme margins."""

        def compute(self, inputs):
            h = (inputs.policy_chosen_logps - inputs.reference_chosen_logps) - (
                inputs.policy_rejected_logps - inputs.reference_rejected_logps
            )
            losses = -torch.log(torch.sigmoid(0.1 * h))
            return LossOutput(losses.mean(), losses)

    with pytest.raises(AssertionError, match="non-finite"):
        check_loss(NaiveLogOfSigmoid)

    class Backwards(PreferenceLoss):
        requires_reference = False

        def compute(self, inputs):
            losses = inputs.policy_chosen_logps - inputs.policy_rejected_logps
            return LossOutput(losses.mean(), losses)

    with pytest.raises(AssertionError, match="raising policy_chosen_logps"):
        check_loss(Backwards)
