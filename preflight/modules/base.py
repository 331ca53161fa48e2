"""What every preflight LightningModule shares: the loss, the optimizer and schedule, metrics,
lean checkpoints and the non-finite guard."""

from __future__ import annotations

import logging
import math
from typing import Any, Callable, Literal

import lightning as L
import torch
from torch import Tensor

from ..losses import LossOutput, PreferenceLoss, build_loss
from ..metrics import PreferenceMetrics, best_of_k_accuracy

log = logging.getLogger("preflight")
Scheduler = Literal["constant", "linear", "cosine"]
LossSpec = str | dict[str, Any] | PreferenceLoss


def loss_spec(loss: PreferenceLoss) -> dict[str, Any]:
    """A plain-data description of a loss (for hyperparameters and checkpoints, loadable without pickle)."""
    return (
        {"name": loss.name, **loss.hparams()}
        if loss.registry_names
        else {"class_path": f"{type(loss).__module__}.{type(loss).__qualname__}", "init_args": loss.hparams()}
    )


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
        if not (math.isfinite(learning_rate) and learning_rate >= 0):
            raise ValueError(f"learning_rate must be a finite number >= 0, got {learning_rate}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.loss_fn = build_loss(loss)
        self._loss_spec = loss_spec(self.loss_fn)
        #: keep the reference model's weights in checkpoints (set by `MovingReference`, whose updates change them)
        self.checkpoint_reference = False
        self.learning_rate, self.weight_decay = learning_rate, weight_decay
        self.warmup_steps, self.scheduler_name = warmup_steps, scheduler
        self.on_nonfinite = on_nonfinite
        self.train_metrics, self.val_metrics, self.test_metrics = (
            PreferenceMetrics(s) for s in ("train", "val", "test")
        )
        self._non_finite_message: str | None = None
        self._last_batch_rows: Tensor | None = None

    # ------------------------------------------------------------------ subclass API
    def run_name(self) -> str:
        """The folder name the command gives a run of this module (under ``trainer.default_root_dir``)."""
        return self.loss_fn.name

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, Tensor | None, Tensor | None]:
        """(loss output, chosen log-probs, rejected log-probs or None) for one batch."""
        raise NotImplementedError

    def with_best_of_k(self, output: LossOutput, batch: dict[str, Tensor], rewards: Callable[[], Tensor]) -> LossOutput:
        """In `preflight test` on lists: ``best_of_k_accuracy``, the share of lists whose best-scored completion gets
        the highest of its list's rewards (`rewards()`: one per row of the batch, computed only then)."""
        testing = self._trainer is not None and self.trainer.testing
        if not testing or "scores" not in batch or "list_index" not in batch or "labels" in batch:
            return output
        from ..datamodules.collate import list_grid

        rows, mask = list_grid(batch)
        values = rewards().detach()
        output.metrics["best_of_k_accuracy"] = best_of_k_accuracy(values[rows], batch["scores"][rows], mask)
        return output

    # ------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Tensor], stage: str) -> Tensor | dict[str, Tensor]:
        output, chosen_logps, rejected_logps = self.compute_loss(batch)
        self._last_batch_rows = batch.get("index")
        non_finite = stage == "train" and not torch.isfinite(output.loss)
        if non_finite:  # no metric sees it; the optimizer step is stopped or skipped (on_before_optimizer_step)
            self._flag_non_finite(output)
        logged = {} if non_finite else getattr(self, f"{stage}_metrics").update(output, chosen_logps, rejected_logps)
        if stage != "train":
            for name, (metric, attribute) in logged.items():
                # metric_attribute: metrics a loss adds appear after Lightning has indexed the module's metrics
                self.log(
                    name,
                    metric,
                    on_epoch=True,
                    metric_attribute=f"{stage}_metrics.{attribute}",
                    prog_bar=name.endswith(("/loss", "accuracies")),
                    batch_size=output.losses.shape[0],
                )
            return output.loss
        return {
            "loss": self._loss_for_backward(output, batch),
            "pair_loss_sum": output.losses.detach().sum(),
            "pairs": output.losses.shape[0],
        }

    def _loss_for_backward(self, output: LossOutput, batch: dict[str, Tensor]) -> Tensor:
        """The loss whose gradient is that of the mean over every pair of the optimizer step.

        Lightning divides each micro-batch's loss by `accumulate_grad_batches` (k) and data
        parallelism averages gradients over the W processes. Returning Σ losses · k·W / N, with
        N the pairs of the whole optimizer step (all micro-batches, all ranks), makes the update
        exactly that of one batch of N pairs, also when micro-batches differ in size. N is the
        batch's ``step_pairs`` (the data module's sampler puts it there); without it, the plain
        batch mean is used.
        """
        total = int(batch["step_pairs"]) if "step_pairs" in batch else 0
        if not total or self.loss_fn.batch_level:
            return output.loss
        k, world = self.trainer.accumulate_grad_batches, self.trainer.world_size
        return output.losses.sum() * (k * world / total)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor | dict[str, Tensor] | None:
        out = self._step(batch, "train")
        self._log_train_metrics_of_the_step(batch_idx)
        return out

    def _log_train_metrics_of_the_step(self, batch_idx: int) -> None:
        """On the last micro-batch of an optimizer step, log its train metrics over all its micro-batches and all
        processes (every rank reaches this point together). Logged from the training step, so that the callbacks'
        `on_train_batch_end` of this step read them in `trainer.callback_metrics`."""
        trainer = self.trainer
        last = trainer.fit_loop.epoch_loop.batch_progress.is_last_batch
        if (batch_idx + 1) % trainer.accumulate_grad_batches and not last:
            return
        for name, value in self.train_metrics.compute_and_reset().items():
            self.log(name, value, on_step=True, on_epoch=False, prog_bar=name.endswith(("/loss", "accuracies")))

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    # ------------------------------------------------------------------ non-finite guard
    def _where(self) -> str:
        rows = self._last_batch_rows
        rows_text = "unknown rows" if rows is None else f"dataset rows {rows.tolist()}"
        return f"step {self.global_step} (epoch {self.current_epoch}), batch of {rows_text}"

    def _flag_non_finite(self, output: LossOutput) -> None:
        """Remember a non-finite loss; the decision is taken (on every rank at once) before the optimizer step."""
        bad = (~torch.isfinite(output.losses.detach())).nonzero().flatten().tolist()
        rows = self._last_batch_rows
        detail = f"; non-finite for dataset rows {[rows[i].item() for i in bad]}" if rows is not None and bad else ""
        self._non_finite_message = self._non_finite_message or f"non-finite loss at {self._where()}{detail}"

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        local = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
        norms = torch.stack([g.detach().float().norm() for g in local]) if local else torch.zeros(1)
        finite = not local or bool(torch.isfinite(norms.sum()))
        self._log_optimizer_state(optimizer, norms)
        if not finite and self._non_finite_message is None:
            self._non_finite_message = f"non-finite gradient at {self._where()}"
        skip = self.trainer.strategy.reduce_boolean_decision(self._non_finite_message is not None, all=False)
        if not skip:
            return
        message = (
            self._non_finite_message or f"non-finite loss or gradient on another process at step {self.global_step}"
        )
        self._non_finite_message = None
        if self.on_nonfinite == "error":
            raise NonFiniteError(message + " (set model.on_nonfinite: skip to skip such batches)")
        log.warning("skipping the optimizer step, no weight changes: %s", message)
        optimizer.zero_grad(set_to_none=True)  # parameters without gradients are left as they are
        self._skipped_optimizer_step = True

    def _log_optimizer_state(self, optimizer: torch.optim.Optimizer, norms: Tensor) -> None:
        """``train/grad_norm`` (the global L2 norm of the step's gradients, before any clipping) and
        ``train/learning_rate`` (the rate this step applies), as TRL logs ``grad_norm`` and ``learning_rate``."""
        squares = norms.pow(2).sum()
        if self.device_mesh is not None:  # FSDP2: each process holds a shard of every gradient
            squares = self.trainer.strategy.reduce(squares.to(self.device), reduce_op="sum")
        lr = float(optimizer.param_groups[0]["lr"])
        self.log("train/grad_norm", squares.sqrt().to(self.device), on_step=True, on_epoch=False, sync_dist=False)
        self.log("train/learning_rate", lr, on_step=True, on_epoch=False)

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """A skipped optimizer step (non-finite, ``on_nonfinite: skip``) does not advance the schedule either."""
        if getattr(self, "_skipped_optimizer_step", False):
            self._skipped_optimizer_step = False
            return
        super().lr_scheduler_step(scheduler, metric)

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
    def _rebuilt_keys(self) -> set[str]:
        """State-dict keys left out of checkpoints and rebuilt from the model's source on load:
        frozen weights (PEFT base) and everything of the reference model (its buffers too)."""
        frozen = {name for name, p in self.named_parameters() if not p.requires_grad}
        rebuilt = frozen | {k for k in super().state_dict() if k.startswith("reference_model.")}
        if self.checkpoint_reference:  # a moving reference (`MovingReference`): its weights are state
            rebuilt = {k for k in rebuilt if not k.startswith("reference_model.")}
        return rebuilt

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["preflight_module"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint["preflight_rng"] = {"torch": torch.get_rng_state()}
        if self.device_mesh is not None:
            return  # sharded (distributed) checkpoints are loaded key by key: keep every key
        state = checkpoint.get("state_dict", {})
        for key in self._rebuilt_keys() & state.keys():
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("preflight_rng")
        if rng is not None:
            torch.set_rng_state(rng["torch"])

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # Checkpoints omit frozen weights: take them from the freshly built model.
        own = super().state_dict()
        missing = {k: own[k] for k in self._rebuilt_keys() - state_dict.keys()}
        return super().load_state_dict({**state_dict, **missing}, strict=strict, assign=assign)
