"""What every preflight LightningModule shares: the loss, the optimizer and schedule, metrics,
lean checkpoints and the non-finite guard."""

from __future__ import annotations

import logging
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor

from ..losses import LossOutput, PreferenceLoss, build_loss
from ..metrics import PreferenceMetrics

log = logging.getLogger("preflight")
Scheduler = Literal["constant", "linear", "cosine"]
LossSpec = str | dict[str, Any] | PreferenceLoss


def loss_spec(loss: PreferenceLoss) -> dict[str, Any]:
    """A plain-data description of a loss (for hyperparameters and checkpoints, loadable without pickle)."""
    return {"name": loss.name, **loss.hparams()} if loss.registry_names else {
        "class_path": f"{type(loss).__module__}.{type(loss).__qualname__}", "init_args": loss.hparams()}


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient; the message names the step and the batch rows."""


class PreflightModule(L.LightningModule):
    """Base of `PreferenceModule` and `RewardModule`; not used on its own."""

    def __init__(
        self,
        loss: LossSpec,
        learning_rate: float,
        weight_decay: float,
        warmup_steps: int,
        scheduler: Scheduler,
        on_nonfinite: Literal["error", "skip"],
    ) -> None:
        super().__init__()
        if scheduler not in ("constant", "linear", "cosine"):
            raise ValueError(f"scheduler must be constant, linear or cosine; got {scheduler!r}")
        if on_nonfinite not in ("error", "skip"):
            raise ValueError(f"on_nonfinite must be 'error' or 'skip', got {on_nonfinite!r}")
        self.loss_fn = build_loss(loss)
        self._loss_spec = loss_spec(self.loss_fn)
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.warmup_steps, self.scheduler_name = warmup_steps, scheduler
        self.on_nonfinite = on_nonfinite
        self.train_metrics, self.val_metrics, self.test_metrics = (PreferenceMetrics(s) for s in ("train", "val", "test"))
        self._skip_step = False
        self._last_batch_rows: Tensor | None = None

    # ------------------------------------------------------------------ subclass API
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, Tensor | None, Tensor | None]:
        """(loss output, chosen log-probs, rejected log-probs or None) for one batch."""
        raise NotImplementedError

    # ------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor:
        output, chosen_logps, rejected_logps = self.compute_loss(batch)
        self._last_batch_rows = batch.get("index")
        if stage == "train" and not torch.isfinite(output.loss):
            return self._non_finite("loss", output.losses)
        logged = getattr(self, f"{stage}_metrics").update(output, chosen_logps, rejected_logps)
        on_step = stage == "train"
        for name, (metric, attribute) in logged.items():
            # metric_attribute: metrics a loss adds appear after Lightning has indexed the module's metrics
            self.log(name, metric, on_step=on_step, on_epoch=not on_step, metric_attribute=f"{stage}_metrics.{attribute}",
                     prog_bar=name.endswith(("/loss", "accuracies")), batch_size=output.losses.shape[0])
        return output.loss

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | None:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    # ------------------------------------------------------------------ non-finite guard
    def _where(self) -> str:
        rows = self._last_batch_rows
        rows_text = "unknown rows" if rows is None else f"dataset rows {rows.tolist()}"
        return f"step {self.global_step} (epoch {self.current_epoch}), {rows_text}"

    def _non_finite(self, what: str, values: Tensor | None = None) -> None:
        detail = ""
        if values is not None and values.dim() == 1 and self._last_batch_rows is not None:
            bad = (~torch.isfinite(values.detach())).nonzero().flatten().tolist()
            detail = f"; non-finite for dataset rows {[self._last_batch_rows[i].item() for i in bad]}"
        message = f"non-finite {what} at {self._where()}{detail}"
        if self.on_nonfinite == "error":
            raise NonFiniteError(message + " (set model.on_nonfinite: skip to skip such batches)")
        log.warning("skipping the batch: %s", message)
        return None  # Lightning skips the optimizer step when training_step returns None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if grads and not torch.isfinite(torch.stack([g.detach().float().norm() for g in grads]).sum()):
            if self.on_nonfinite == "error":
                self._non_finite("gradient")
            log.warning("skipping the optimizer step: non-finite gradient at %s", self._where())
            optimizer.zero_grad(set_to_none=True)  # with no gradients the step leaves every weight as it is

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self):
        from transformers import get_scheduler

        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.learning_rate,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        name = {"constant": "constant_with_warmup"}.get(self.scheduler_name, self.scheduler_name)
        schedule = get_scheduler(name, optimizer, num_warmup_steps=self.warmup_steps, num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    # ------------------------------------------------------------------ lean checkpoints
    def frozen_state_keys(self) -> set[str]:
        """State-dict keys of frozen weights (reference model, PEFT base): rebuilt, not saved."""
        return {name for name, p in self.named_parameters() if not p.requires_grad}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["preflight_module"] = f"{type(self).__module__}.{type(self).__qualname__}"
        frozen = self.frozen_state_keys()
        state = checkpoint.get("state_dict", {})
        for key in [k for k in state if k in frozen or k.startswith("reference_model.")]:
            del state[key]

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Checkpoints omit frozen weights: take them from the freshly built model.
        own = super().state_dict()
        missing = {k: v for k, v in own.items() if k not in state_dict and (k in self.frozen_state_keys() or k.startswith("reference_model."))}
        return super().load_state_dict({**state_dict, **missing}, strict=strict, assign=assign)
