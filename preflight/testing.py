"""A contract suite for preference losses, for preflight's own losses and for plugin authors.

    from preflight.testing import check_loss
    check_loss("my_loss")                 # a registered name
    check_loss(MyLoss, beta=0.3)          # or a class, with hyperparameters

`check_loss` raises `AssertionError` naming the first broken property:

- output types and shapes ([B] per-pair losses, scalar loss, detached rewards);
- finite loss and gradients at extreme inputs (log-probs down to −1e4, lengths 1 to 300)
  in float32 and bfloat16, with float32 outputs;
- no gradient reaches the reference log-probs;
- for losses that declare ``monotonic``: raising a chosen log-prob (reward) never raises
  the loss and raising a rejected one never lowers it (for list losses: the best-scored and
  the worst-scored completion of a list; for unpaired losses: a desirable and an undesirable row);
- determinism: the same inputs give the same outputs (a ``stateful`` loss in eval mode, where its state is
  read, not updated);
- a missing required input raises a `ValueError` naming the field.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from .losses import LossInputs, LossOutput, PreferenceLoss, get_loss
from .losses.base import LENGTH_FIELDS, LIST_REFERENCE_FIELDS, REFERENCE_FIELDS

LIST_SIZE = 4  # completions per list in the contract's inputs (some lists shorter)


def make_inputs(
    loss: PreferenceLoss,
    batch_size: int = 6,
    dtype: torch.dtype = torch.float32,
    logp_low: float = -60.0,
    logp_high: float = -1.0,
    seed: int = 0,
    requires_grad: bool = True,
) -> LossInputs:
    """Random inputs holding every field `loss` needs (and a margin), as leaf tensors."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch_size, LIST_SIZE) if loss.input_kind in ("lists", "reward_lists") else (batch_size,)

    def uniform(low: float, high: float) -> torch.Tensor:
        t = (low + (high - low) * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)
        return t.requires_grad_(requires_grad)

    if loss.input_kind == "lists":
        return _list_inputs(loss, batch_size, lambda: uniform(logp_low, logp_high), g)
    if loss.input_kind == "reward_lists":
        return _list_inputs(loss, batch_size, lambda: uniform(-5.0, 5.0), g)
    if loss.input_kind == "unpaired":
        values = {name: uniform(logp_low, logp_high) for name in loss.required_fields() if name != "labels"}
        labels = torch.arange(batch_size) % 2 == 0  # both kinds in every batch
        return LossInputs(**values, labels=labels, completion_lengths=torch.randint(1, 301, (batch_size,), generator=g))

    values: dict[str, torch.Tensor] = {}
    for name in loss.required_fields():
        if name in LENGTH_FIELDS:
            values[name] = torch.randint(1, 301, (batch_size,), generator=g)
        elif name.endswith("_rewards"):
            values[name] = uniform(-5.0, 5.0)
        else:
            values[name] = uniform(logp_low, logp_high)
    values["margin"] = torch.rand(batch_size, generator=g).to(dtype)
    return LossInputs(**values)


def _list_inputs(loss: PreferenceLoss, batch_size: int, logps, g: torch.Generator) -> LossInputs:
    """Lists of 2 to `LIST_SIZE` completions with integer scores 0..3 (ties included, never all tied)."""
    mask = torch.ones(batch_size, LIST_SIZE, dtype=torch.bool)
    for b in range(batch_size):
        mask[b, 2 + b % (LIST_SIZE - 1) :] = False
    scores = torch.randint(0, 4, (batch_size, LIST_SIZE), generator=g).float()
    scores[:, 0], scores[:, 1] = 3.0, 0.0  # every list has a best and a worst
    ranked = "list_rewards" if loss.input_kind == "reward_lists" else "policy_logps"
    values = {ranked: logps(), "scores": scores, "list_mask": mask}
    if loss.requires_reference:
        values["reference_logps"] = logps()
    values["completion_lengths"] = torch.randint(1, 301, (batch_size, LIST_SIZE), generator=g)
    return LossInputs(**values)


def _resolve(loss: str | type[PreferenceLoss] | PreferenceLoss, hyperparameters: dict[str, Any]) -> PreferenceLoss:
    if isinstance(loss, PreferenceLoss):
        return loss
    if isinstance(loss, str):
        return get_loss(loss, **hyperparameters)
    return loss(**hyperparameters)


def _check_output(out: LossOutput, batch_size: int, where: str) -> None:
    assert isinstance(out, LossOutput), f"{where}: returned {type(out).__name__}, not LossOutput"
    assert out.loss.dim() == 0, f"{where}: loss has shape {tuple(out.loss.shape)}, expected a scalar"
    assert out.losses.shape == (batch_size,), (
        f"{where}: losses has shape {tuple(out.losses.shape)}, expected ({batch_size},)"
    )
    assert out.loss.dtype in (torch.float32, torch.float64), (
        f"{where}: loss is {out.loss.dtype}, expected float32 or wider"
    )
    for name in ("chosen_rewards", "rejected_rewards"):
        rewards = getattr(out, name)
        if rewards is not None:
            assert rewards.shape == (batch_size,), f"{where}: {name} has shape {tuple(rewards.shape)}"
            assert not rewards.requires_grad, f"{where}: {name} is not detached"
    assert isinstance(out.metrics, dict), f"{where}: metrics is {type(out.metrics).__name__}, not a dict"


def _leaf_tensors(inputs: LossInputs) -> dict[str, torch.Tensor]:
    return {
        f.name: getattr(inputs, f.name)
        for f in dataclasses.fields(inputs)
        if getattr(inputs, f.name) is not None and getattr(inputs, f.name).requires_grad
    }


def check_finite_at_extremes(loss: PreferenceLoss, dtype: torch.dtype) -> None:
    for low, high in ((-1e4, -1e3), (-1e4, -1e-3), (-1e-3, -1e-6)):
        inputs = make_inputs(loss, batch_size=8, dtype=dtype, logp_low=low, logp_high=high, seed=3)
        # Pit the extremes against each other: reference at the opposite end from the policy.
        for ref in REFERENCE_FIELDS + LIST_REFERENCE_FIELDS + ("reference_kl_logps",):
            if getattr(inputs, ref) is not None:
                flipped = (low + high) - getattr(inputs, ref).detach()
                inputs = dataclasses.replace(inputs, **{ref: flipped.requires_grad_(True)})
        where = f"{loss.name} [{dtype}, log-probs in ({low}, {high})]"
        out = loss(inputs)
        _check_output(out, 8, where)
        assert torch.isfinite(out.losses).all(), f"{where}: non-finite losses {out.losses.tolist()}"
        out.loss.backward()
        for name, tensor in _leaf_tensors(inputs).items():
            if tensor.grad is not None:
                assert torch.isfinite(tensor.grad.float()).all(), f"{where}: non-finite gradient for {name}"


def check_no_reference_gradient(loss: PreferenceLoss) -> None:
    inputs = make_inputs(loss)
    loss(inputs).loss.backward()
    for name in REFERENCE_FIELDS + LIST_REFERENCE_FIELDS + ("reference_kl_logps",):
        tensor = getattr(inputs, name)
        if tensor is not None:
            assert tensor.grad is None, f"{loss.name}: the gradient reached {name}"


def check_monotonic(loss: PreferenceLoss) -> None:
    if loss.input_kind in ("lists", "reward_lists"):
        return check_monotonic_lists(loss)
    if loss.input_kind == "unpaired":
        return check_monotonic_unpaired(loss)
    field = "rewards" if loss.input_kind == "rewards" else "logps"
    chosen_name, rejected_name = (
        ("chosen_rewards", "rejected_rewards")
        if field == "rewards"
        else ("policy_chosen_logps", "policy_rejected_logps")
    )
    inputs = make_inputs(loss, batch_size=16, requires_grad=False, logp_low=-30.0, logp_high=-5.0, seed=7)
    base = loss(inputs).losses
    for name, sign in ((chosen_name, +1), (rejected_name, -1)):
        # One pair raised at a time: batch-level losses (AOT) may move other entries.
        for i in range(16):
            bumped = getattr(inputs, name).clone()
            bumped[i] += 0.5
            moved = loss(dataclasses.replace(inputs, **{name: bumped})).loss
            change = (moved - base.mean()) * sign
            assert change <= 1e-6, (
                f"{loss.name}: raising {name}[{i}] by 0.5 changed the loss by {float(moved - base.mean()):+.3g}, "
                f"expected {'≤' if sign > 0 else '≥'} 0"
            )


def check_monotonic_lists(loss: PreferenceLoss) -> None:
    """Raising a list's best-scored completion never raises the loss; raising its worst never lowers it."""
    inputs = make_inputs(loss, batch_size=8, requires_grad=False, seed=7)
    ranked = "list_rewards" if loss.input_kind == "reward_lists" else "policy_logps"
    base = loss(inputs).loss
    for b in range(8):
        for position, sign, which in ((0, +1, "best"), (1, -1, "worst")):  # `_list_inputs`: 0 scores 3, 1 scores 0
            bumped = getattr(inputs, ranked).clone()
            bumped[b, position] += 0.5
            moved = loss(dataclasses.replace(inputs, **{ranked: bumped})).loss
            assert (moved - base) * sign <= 1e-6, (
                f"{loss.name}: raising the {which} completion of list {b} by 0.5 changed the loss by "
                f"{float(moved - base):+.3g}, expected {'≤' if sign > 0 else '≥'} 0"
            )


def check_monotonic_unpaired(loss: PreferenceLoss) -> None:
    """Raising a desirable row's log-prob never raises the loss; raising an undesirable row's never lowers it."""
    training = loss.training
    loss.eval()  # a stateful loss's state stays put between the calls compared
    try:
        inputs = make_inputs(loss, batch_size=8, requires_grad=False, seed=7)
        base = loss(inputs).loss
        for b in range(8):
            sign = +1 if bool(inputs.labels[b]) else -1
            bumped = inputs.policy_logps.clone()
            bumped[b] += 0.5
            moved = loss(dataclasses.replace(inputs, policy_logps=bumped)).loss
            assert (moved - base) * sign <= 1e-6, (
                f"{loss.name}: raising the {'desirable' if sign > 0 else 'undesirable'} row {b} by 0.5 changed the "
                f"loss by {float(moved - base):+.3g}, expected {'≤' if sign > 0 else '≥'} 0"
            )
    finally:
        loss.train(training)


def check_deterministic(loss: PreferenceLoss) -> None:
    inputs = make_inputs(loss, requires_grad=False)
    training = loss.training
    if loss.stateful:
        loss.eval()
    try:
        first, second = loss(inputs), loss(inputs)
    finally:
        loss.train(training)
    assert torch.equal(first.losses, second.losses), f"{loss.name}: two calls on the same inputs differ"


def check_missing_input(loss: PreferenceLoss) -> None:
    inputs = make_inputs(loss, requires_grad=False)
    field = loss.required_fields()[-1]
    try:
        loss(dataclasses.replace(inputs, **{field: None}))
    except ValueError as err:
        assert field in str(err), f"{loss.name}: the error for a missing {field} does not name it: {err}"
    else:
        raise AssertionError(f"{loss.name}: no error when the required input {field} is None")


def check_loss(
    loss: str | type[PreferenceLoss] | PreferenceLoss, verbose: bool = True, **hyperparameters: Any
) -> list[str]:
    """Run the whole contract on one loss; raises `AssertionError` on the first broken property.

    Returns the names of the checks that passed, and prints them in one line unless `verbose` is False."""
    instance = _resolve(loss, hyperparameters)
    assert isinstance(instance, PreferenceLoss), f"{instance!r} is not a PreferenceLoss"
    inputs = make_inputs(instance)
    _check_output(instance(inputs), inputs.batch_size, instance.name)
    passed = ["output shapes"]
    for dtype in (torch.float32, torch.bfloat16):
        check_finite_at_extremes(instance, dtype)
        passed.append(f"finite at extremes ({str(dtype).removeprefix('torch.')})")
    check_no_reference_gradient(instance)
    passed.append("no reference gradient")
    if instance.monotonic:
        check_monotonic(instance)
        passed.append("monotonic")
    check_deterministic(instance)
    check_missing_input(instance)
    passed += ["deterministic", "missing input named"]
    if verbose:
        skipped = "" if instance.monotonic else " (monotonicity not checked: monotonic = False)"
        print(f"check_loss({instance.name!r}): {len(passed)} checks passed: {', '.join(passed)}{skipped}")
    return passed
