"""A reference model that follows the policy during training: TR-DPO's soft and hard updates, as a Lightning
`Callback` (in a config's ``trainer.callbacks``, or in plain Lightning code)."""

from __future__ import annotations

from typing import Any, Literal

import lightning as L
import torch

from .errors import PreflightConfigError


class MovingReference(L.Callback):
    r"""Trust-region DPO (Gorbatovski et al. 2024, arXiv 2404.09656): every τ optimizer steps the reference model
    moves towards the policy, so the KL constraint of the seed's Eq. 3 is taken to a recent policy instead of the
    initial one:

        soft:  π_ref ← α·π_θ + (1 − α)·π_ref     (every parameter, every τ steps)
        hard:  π_ref ← π_θ                        (every τ steps)

    (TRL's ``sync_ref_model`` with ``ref_model_mixup_alpha`` = α and ``ref_model_sync_steps`` = τ.) The reference's
    weights are then part of every checkpoint (they are normally left out and rebuilt from the model's source), with
    the step of the last update, so a resumed run continues exactly; an update due at the step a checkpoint was
    written is made when the resumed run starts if it had not been made before the save.

    It needs a separate reference model (``reference: copy``, the default for a fully trained policy). Refused in
    one line at the start: ``reference: precomputed`` (the reference's log-probs are fixed before training), a LoRA
    policy (its reference is its adapter-disabled base, which cannot move without moving the policy; or, with
    ``reference: copy``, its weights are a base plus an adapter, not a model to mix in), and a loss without a
    reference.

    Args:
        mode: ``soft`` (mix the policy into the reference) or ``hard`` (copy it).
        alpha: α, the policy's share in a soft update (0 < α ≤ 1; 1 is a hard update).
        every_n_steps: τ, optimizer steps between updates.
    """

    def __init__(self, mode: Literal["soft", "hard"] = "soft", alpha: float = 0.6, every_n_steps: int = 512) -> None:
        if mode not in ("soft", "hard"):
            raise PreflightConfigError(f"MovingReference: mode must be soft or hard, got {mode!r}")
        if not 0 < alpha <= 1:
            raise PreflightConfigError(f"MovingReference: alpha must be in (0, 1], got {alpha}")
        if every_n_steps < 1:
            raise PreflightConfigError(f"MovingReference: every_n_steps must be at least 1, got {every_n_steps}")
        self.mode, self.alpha, self.every_n_steps = mode, alpha, every_n_steps
        self.last_update = 0  # the optimizer step of the last update (0: none yet)
        self.updates = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        from .modules import PreferenceModule

        if not isinstance(pl_module, PreferenceModule):
            raise PreflightConfigError(
                f"MovingReference moves a PreferenceModule's reference, not a {type(pl_module).__name__}'s"
            )
        reason = {
            "precomputed": "reference: precomputed fixes the reference's log-probs before training; use reference: "
            "copy",
            "adapter": "a LoRA policy's reference is its adapter-disabled base, which cannot move without moving the "
            "policy; use reference: copy (a full reference model) or train without peft",
            "none": f"loss '{pl_module.loss_fn.name}' uses no reference",
        }.get(pl_module.reference_mode)
        if reason is None and pl_module.peft_settings:
            reason = (
                "a LoRA policy's weights are its base plus an adapter, not a model to mix into the reference; "
                "train without peft"
            )
        if reason is not None:
            raise PreflightConfigError(f"MovingReference (TR-DPO) cannot run: {reason}")
        pl_module.checkpoint_reference = True  # the reference's weights change: keep them in checkpoints

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            rule = f"soft, α={self.alpha}" if self.mode == "soft" else "hard"
            print(
                f"preflight: reference: moves towards the policy every {self.every_n_steps} steps ({rule}; TR-DPO)"
                + (f", last at step {self.last_update}" if self.last_update else ""),
                flush=True,
            )
        self._maybe_update(trainer, pl_module)  # one due at a resumed checkpoint's step, if not made before it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._maybe_update(trainer, pl_module)

    def _maybe_update(self, trainer: L.Trainer, pl_module) -> None:
        step = trainer.global_step
        if step > 0 and step % self.every_n_steps == 0 and step != self.last_update:
            self.update(pl_module)
            self.last_update = step

    @torch.no_grad()
    def update(self, pl_module) -> None:
        """Move the reference towards the policy once (parameters matched by name)."""
        policy = dict(pl_module.policy.named_parameters())
        alpha = 1.0 if self.mode == "hard" else self.alpha
        for name, reference in pl_module.reference_model.named_parameters():
            current = policy[name].detach()
            if alpha == 1.0:
                reference.copy_(current)
            else:
                reference.mul_(1 - alpha).add_(current.to(reference.dtype), alpha=alpha)
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"last_update": self.last_update, "updates": self.updates}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_update, self.updates = int(state_dict["last_update"]), int(state_dict["updates"])
