"""The types every preference loss speaks: `LossInputs` in, `LossOutput` out.

A loss never touches a model. A training module computes only the fields that the
loss declares it needs (`PreferenceLoss.required_fields`), packs them into a
`LossInputs` and reads the `LossOutput` for its metrics.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

LOGP_FIELDS = ("policy_chosen_logps", "policy_rejected_logps")
REFERENCE_FIELDS = ("reference_chosen_logps", "reference_rejected_logps")
LENGTH_FIELDS = ("chosen_lengths", "rejected_lengths")
REWARD_FIELDS = ("chosen_rewards", "rejected_rewards")
LIST_FIELDS = ("policy_logps", "scores", "list_mask")
LIST_REFERENCE_FIELDS = ("reference_logps",)
REWARD_LIST_FIELDS = ("list_rewards", "scores", "list_mask")
UNPAIRED_FIELDS = ("policy_logps", "labels")
KL_FIELDS = ("policy_kl_logps", "reference_kl_logps")
#: what each input kind receives: pairs of log-probs, pairs of reward-model scores, whole lists, or unpaired
#: completions labelled desirable or undesirable
INPUT_KINDS = {"logps": "pairs", "rewards": "pairs", "lists": "lists", "reward_lists": "lists", "unpaired": "unpaired"}


@dataclass
class LossInputs:
    """Per-pair (or per-list) inputs of a preference loss; every tensor is optional.

    Pairs, every tensor [B]: `*_logps` are sums of completion-token log-probabilities, `*_lengths` completion
    token counts, `*_rewards` scores of an explicit reward model, `margin` a per-pair margin (reward models).

    Lists (losses with ``input_kind = "lists"``), every tensor [B, K] for B lists of at most K completions:
    `policy_logps` / `reference_logps` the summed log-probs of each completion, `scores` its score in the data,
    `list_mask` True where a completion exists (shorter lists are padded), `completion_lengths` its tokens;
    `list_rewards` a reward model's score of each completion (losses with ``input_kind = "reward_lists"``).

    Unpaired completions (losses with ``input_kind = "unpaired"``), every tensor [B] for B (prompt, completion) rows:
    `policy_logps` / `reference_logps` the completion's summed log-probs, `labels` True for a desirable completion,
    `policy_kl_logps` / `reference_kl_logps` those of the mismatched row (prompt i with completion i − 1 of the
    micro-batch, as TRL's KTO pairs them) that KTO's reference point is estimated from.
    """

    policy_chosen_logps: Tensor | None = None
    policy_rejected_logps: Tensor | None = None
    reference_chosen_logps: Tensor | None = None
    reference_rejected_logps: Tensor | None = None
    chosen_lengths: Tensor | None = None
    rejected_lengths: Tensor | None = None
    chosen_rewards: Tensor | None = None
    rejected_rewards: Tensor | None = None
    margin: Tensor | None = None
    policy_logps: Tensor | None = None
    reference_logps: Tensor | None = None
    scores: Tensor | None = None
    list_mask: Tensor | None = None
    completion_lengths: Tensor | None = None
    labels: Tensor | None = None
    policy_kl_logps: Tensor | None = None
    reference_kl_logps: Tensor | None = None
    list_rewards: Tensor | None = None

    def to_float32(self) -> "LossInputs":
        """A copy with every floating tensor at least float32 (bf16/fp16 are upcast)."""
        changes = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None or value.dtype == torch.bool:
                continue
            if not value.is_floating_point() or value.dtype in (torch.float16, torch.bfloat16):
                changes[f.name] = value.float()
        return dataclasses.replace(self, **changes)

    def detach_reference(self) -> "LossInputs":
        """A copy whose reference log-probs carry no gradient: the reference is frozen."""
        names = REFERENCE_FIELDS + LIST_REFERENCE_FIELDS + ("reference_kl_logps",)
        changes = {name: getattr(self, name).detach() for name in names if getattr(self, name) is not None}
        return dataclasses.replace(self, **changes)

    @property
    def batch_size(self) -> int:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                return value.shape[0]
        raise ValueError("LossInputs is empty: every field is None")


@dataclass
class LossOutput:
    """What a loss returns.

    `loss` is the scalar to optimize (the batch mean of `losses` unless the loss says
    otherwise), `losses` the per-pair values [B], `chosen_rewards`/`rejected_rewards`
    the detached implicit or explicit rewards used for metrics (None where they mean
    nothing), `metrics` extra scalars named by the loss.
    """

    loss: Tensor
    losses: Tensor
    chosen_rewards: Tensor | None = None
    rejected_rewards: Tensor | None = None
    metrics: dict[str, Tensor] = field(default_factory=dict)


class PreferenceLoss(nn.Module):
    """Base class of every registered loss.

    Subclasses take their hyperparameters as typed keyword arguments with defaults,
    declare what they need through the class attributes below, and implement
    `compute(inputs) -> LossOutput`. `forward` validates the inputs, upcasts them to
    float32 and detaches the reference before calling `compute`.
    """

    #: The loss reads `reference_*_logps`: the module must run (or precompute) a reference.
    requires_reference: ClassVar[bool] = True
    #: The loss reads `chosen_lengths` / `rejected_lengths`.
    requires_lengths: ClassVar[bool] = False
    #: "logps" for pairs of policy log-probs (DPO family), "rewards" for reward-model scores, "lists" for whole
    #: lists of scored completions (`LossInputs` list fields), "reward_lists" for a reward model's scores of whole
    #: lists, "unpaired" for labelled single completions.
    input_kind: ClassVar[str] = "logps"
    #: (unpaired) The loss reads the mismatched rows' log-probs (`LossInputs.policy_kl_logps`): KTO's reference point.
    uses_kl_rows: ClassVar[bool] = False
    #: The loss keeps running state (buffers in its state_dict, so in checkpoints), updated in training mode only.
    stateful: ClassVar[bool] = False
    #: Raising the chosen log-prob (or reward) never raises the loss, raising the rejected never lowers it.
    monotonic: ClassVar[bool] = True
    #: The per-pair values depend on the whole batch (AOT sorts across it): the batch is the unit.
    batch_level: ClassVar[bool] = False
    #: Filled in by `register_loss`: the names this class answers to.
    registry_names: ClassVar[tuple[str, ...]] = ()

    def required_fields(self) -> tuple[str, ...]:
        if self.input_kind == "reward_lists":
            return REWARD_LIST_FIELDS
        if self.input_kind == "lists":
            return LIST_FIELDS + (LIST_REFERENCE_FIELDS if self.requires_reference else ())
        if self.input_kind == "unpaired":
            fields = UNPAIRED_FIELDS + (LIST_REFERENCE_FIELDS if self.requires_reference else ())
            return fields + (KL_FIELDS if self.uses_kl_rows else ())
        fields: tuple[str, ...] = REWARD_FIELDS if self.input_kind == "rewards" else LOGP_FIELDS
        if self.requires_reference:
            fields += REFERENCE_FIELDS
        if self.requires_lengths:
            fields += LENGTH_FIELDS
        return fields

    @property
    def name(self) -> str:
        return self.registry_names[0] if self.registry_names else type(self).__name__

    def forward(self, inputs: LossInputs) -> LossOutput:
        missing = [f for f in self.required_fields() if getattr(inputs, f) is None]
        if missing:
            raise ValueError(
                f"loss '{self.name}' needs LossInputs.{missing[0]}, which is None"
                f" (required: {', '.join(self.required_fields())})"
            )
        return self.compute(inputs.detach_reference().to_float32())

    def compute(self, inputs: LossInputs) -> LossOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.hparams().items())

    def hparams(self) -> dict:
        """The hyperparameters this instance was built with (its `__init__` keywords)."""
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names if hasattr(self, n)}


def per_token(logps: Tensor, lengths: Tensor) -> Tensor:
    """Average log-prob per completion token, guarding against empty completions."""
    return logps / lengths.clamp(min=1).to(logps.dtype)


def mean_output(
    losses: Tensor,
    chosen_rewards: Tensor | None = None,
    rejected_rewards: Tensor | None = None,
    **metrics: Tensor,
) -> LossOutput:
    """The usual `LossOutput`: mean over pairs, rewards detached."""
    return LossOutput(
        loss=losses.mean(),
        losses=losses,
        chosen_rewards=None if chosen_rewards is None else chosen_rewards.detach(),
        rejected_rewards=None if rejected_rewards is None else rejected_rewards.detach(),
        metrics={k: v.detach() for k, v in metrics.items()},
    )
