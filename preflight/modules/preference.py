"""`PreferenceModule`: a causal-LM policy trained with any registered preference loss."""

from __future__ import annotations

import contextlib
import copy
import logging
import warnings
from typing import Any, Literal

import lightning as L
import torch
from torch import Tensor, nn

from ..datamodules.collate import list_grid, pair_rows, row_lengths, unpaired_rows
from ..reference import PrecomputedReference, PrecomputedReferenceError
from ..losses import LossInputs, LossOutput
from ..losses.registry import check_data_kind
from ..logps import CompletionLogps, LogpsPath, LogpsSettings, RowPacking
from ..pretrained import check_model_source, load_model
from ..strategies import check_no_tensor_parallelism
from ..wrapped import is_peft
from .base import LossSpec, PreflightModule, Scheduler
from .models import apply_lora, model_source, shard_fsdp2

log = logging.getLogger("preflight")
# The frozen reference model is in eval mode on purpose; Lightning's notice about it is noise.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
Reference = Literal["auto", "copy", "adapter", "precomputed", "none"]


class PreferenceModule(PreflightModule):
    r"""Trains a causal LM on preference pairs with a loss from the registry.

    Data flows one way: batch → completion log-probs of the policy (and of the reference,
    when the loss declares ``requires_reference``) → `LossInputs` → loss → `LossOutput` →
    metrics. The module knows no formula; the loss never sees the model.

    Args:
        model: a Hugging Face id or local path of a causal LM, or a transformers model instance.
            A local folder holding only a config is built with random weights (seeded by ``init_seed``).
        loss: a registry name (``dpo``), a mapping ``{name: ipo, beta: 0.5}``, a
            ``class_path``/``init_args`` mapping, or a `PreferenceLoss` instance (``preflight losses`` lists them).
        reference: ``auto`` (none when the loss needs no reference, ``adapter`` with PEFT, else
            ``copy``), ``copy`` (a frozen copy of the initial policy), ``adapter`` (the policy with
            its LoRA adapter disabled), ``precomputed`` (reference log-probs computed once before
            training and kept with the data; no reference model in memory), ``none``.
        reference_model: a different reference checkpoint (id or path), for ``copy`` or ``precomputed``.
        peft: LoRA settings (fields of ``peft.LoraConfig``); None trains all weights.
        learning_rate: AdamW's peak learning rate.
        weight_decay: AdamW's decoupled weight decay, applied to matrices (not to biases and norms).
        warmup_steps: optimizer steps of linear warm-up from 0 to ``learning_rate``.
        scheduler: the learning-rate schedule after warm-up: ``linear`` decay to 0, ``cosine``, or ``constant``.
        gradient_checkpointing: recompute decoder activations in backward (less memory, more compute).
        fused_lm_head: compute the lm_head only at completion positions, in chunks recomputed in backward.
            ``auto``: on where it is exact, decided from the model's code (its logit transform: soft-capping,
            scaling); ``on``: on, or an error saying why it is not exact; ``off``.
        shared_prompt: compute the prompt once per pair, in one row with a block mask. ``auto``: on where
            it is exact (attention-only layers whose full, sliding-window or chunked pattern the mask applies;
            sdpa or eager attention); ``on``: on, or an error saying why not; ``off``.
        padding_free: pack the micro-batch's sequences (or shared-prompt pairs) into rows of real tokens, each
            attending only within its own sequence. ``auto``: on where the attention implementation takes packed
            rows without a dense mask (``flex_attention``: a block mask; ``flash_attention_2``/``_3``: one row
            by position ids) and the layers are attention-only; ``on``: also with sdpa/eager (a dense mask per
            packed row); ``off``. The pairs of a step and the loss are the same either way.
        max_tokens_per_row: the token budget of a packed row (rows are filled to similar lengths, longest
            sequence first; one longer than the budget gets its own row); None packs the whole micro-batch into
            one row. Flash kernels always take one row.
        dense_mask_max_length: the longest row (tokens) a dense [L, L] mask is built for (sdpa, eager): a batch
            whose shared-prompt or packed rows are longer takes separate rows instead (the same values; measured
            on CPU, the dense mask costs more than the shared prompt saves at 8k-token rows). None: no limit.
        lm_head_chunk_size: completion tokens per lm_head chunk; None sizes chunks to about 8M logits
            (32 MB in float32) whatever the vocabulary, so memory stays flat as the vocabulary grows.
        precompute_batch_size: pairs per batch of the ``precomputed`` reference pass.
        on_nonfinite: ``error`` stops at a non-finite loss or gradient, naming the step and rows; ``skip``
            skips that optimizer step (no weight and no schedule moves).
        trust_remote_code: allow model (and tokenizer) code from the model's folder or the Hub (off by default).
        init_seed: seed of the random weights of a model folder that holds only a config.
        model_dtype: the dtype the weights are loaded in (``bfloat16``, ``float32``, ...; None: the checkpoint's).
        attn_implementation: the transformers attention implementation (``sdpa``, ``eager``, ``flex_attention``,
            ``flash_attention_2``; None: transformers' default). It decides how rows of several sequences reach
            attention: a dense mask (sdpa, eager), a block mask (flex) or position ids (flash).
    """

    def __init__(
        self,
        model: Any = "assets/tiny-llama",
        loss: LossSpec = "dpo",
        reference: Reference = "auto",
        reference_model: str | None = None,
        peft: dict[str, Any] | None = None,
        learning_rate: float = 5e-6,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        scheduler: Scheduler = "linear",
        gradient_checkpointing: bool = False,
        fused_lm_head: Literal["auto", "on", "off"] = "auto",
        shared_prompt: Literal["auto", "on", "off"] = "auto",
        padding_free: Literal["auto", "on", "off"] = "auto",
        max_tokens_per_row: int | None = None,
        dense_mask_max_length: int | None = 4096,
        lm_head_chunk_size: int | None = None,
        precompute_batch_size: int = 32,
        on_nonfinite: Literal["error", "skip"] = "error",
        trust_remote_code: bool = False,
        init_seed: int = 0,
        model_dtype: str | None = None,
        attn_implementation: str | None = None,
    ) -> None:
        super().__init__(loss, learning_rate, weight_decay, warmup_steps, scheduler, on_nonfinite)
        self.save_hyperparameters(ignore=[] if isinstance(model, str) else ["model"])
        self.hparams["loss"] = self._loss_spec  # plain data, whatever form the loss was given in
        if self.loss_fn.input_kind in ("rewards", "reward_lists"):
            raise ValueError(
                f"PreferenceModule trains a policy on log-probs; loss '{self.loss_fn.name}' takes a reward model's "
                "scores (use RewardModule: --model.class_path preflight.RewardModule)"
            )
        if not isinstance(model, str):
            self.hparams["model"] = model_source(model)
        if reference not in ("auto", "copy", "adapter", "precomputed", "none"):
            raise ValueError(f"reference must be auto, copy, adapter, precomputed or none; got {reference!r}")
        self.reference_mode = self._resolve_reference(reference, peft, reference_model)
        self.__dict__["model_spec"] = model  # an instance becomes `policy` in configure_model, registered once
        self.reference_spec, self.peft_settings = reference_model, peft
        self.gradient_checkpointing, self.precompute_batch_size = gradient_checkpointing, precompute_batch_size
        # every setting of how log-probs are computed, in one object that plans each model's paths once
        self.logps = CompletionLogps(
            LogpsSettings(
                fused_lm_head=fused_lm_head,
                shared_prompt=shared_prompt,
                padding_free=padding_free,
                packing=RowPacking.from_max_tokens(max_tokens_per_row),
                dense_mask_max_length=dense_mask_max_length,
                lm_head_chunk_size=lm_head_chunk_size,
            )
        )
        self.trust_remote_code, self.init_seed, self.model_dtype = trust_remote_code, init_seed, model_dtype
        self.attn_implementation = attn_implementation
        self.policy: nn.Module | None = None
        self.reference_model: nn.Module | None = None
        # split -> {"data": digest of its pairs, "logps": [[chosen, rejected], ...]} (`PrecomputedReference`)
        self.precomputed_reference: dict[str, dict] = {}
        if isinstance(model, str):
            check_model_source(model, trust_remote_code)
            if reference_model:
                check_model_source(reference_model, trust_remote_code)

    def run_name(self) -> str:
        """The command's default run folder name: the loss, with ``_lora`` when training an adapter."""
        return self.loss_fn.name + ("_lora" if self.peft_settings else "")

    # ------------------------------------------------------------------ building
    def _resolve_reference(self, reference: str, peft: dict | None, reference_model: str | None) -> str:
        needs = self.loss_fn.requires_reference
        if reference == "auto":
            return "none" if not needs else ("adapter" if peft and not reference_model else "copy")
        if needs and reference == "none":
            raise ValueError(
                f"loss '{self.loss_fn.name}' needs a reference: set reference to auto, copy, adapter or precomputed"
            )
        if reference == "adapter" and not peft:
            raise ValueError("reference: adapter needs a peft (LoRA) configuration")
        if reference == "adapter" and reference_model:
            raise ValueError("reference: adapter uses the policy's own base weights; drop reference_model or use copy")
        return reference if needs else "none"

    def _load(self, spec: Any) -> nn.Module:
        from transformers import AutoModelForCausalLM

        return load_model(
            spec,
            AutoModelForCausalLM,
            trust_remote_code=self.trust_remote_code,
            init_seed=self.init_seed,
            dtype=self.model_dtype,
            attn_implementation=self.attn_implementation,
        )

    def configure_model(self) -> None:
        """Build the policy (and reference). Idempotent, so sharded strategies may call it on their devices."""
        if self.policy is not None:
            return
        base = self._load(self.model_spec)
        if self.reference_mode == "copy":
            reference = self._load(self.reference_spec) if self.reference_spec else copy.deepcopy(base)
            self.reference_model = reference.eval().requires_grad_(False)
        if self.gradient_checkpointing:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            base.config.use_cache = False
        self.policy = apply_lora(base, dict(self.peft_settings)) if self.peft_settings else base
        self.hparams["logps_path"] = self.path_for(self.policy).as_dict()  # decided before any step, logged
        mesh = self.device_mesh
        if mesh is not None:  # ModelParallelStrategy: FSDP2 over the data-parallel dimension
            check_no_tensor_parallelism(mesh)
            dp_mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
            self.policy = shard_fsdp2(self.policy, dp_mesh)
            if self.reference_model is not None:
                self.reference_model = shard_fsdp2(self.reference_model, dp_mesh)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference_model is not None:
            self.reference_model.eval()  # the reference never trains
        return self

    # ------------------------------------------------------------------ log-probs
    def path_for(self, model: nn.Module) -> LogpsPath:
        """The fast paths this model's log-probs take (`logps.CompletionLogps.plan`), decided once per model."""
        return self.logps.plan(model)

    def describe_paths(self) -> str:
        """One line: the paths of the policy, and of the reference model when it is another model."""
        text = f"log-probs: {self.logps.describe(self.policy)}"
        if self.reference_model is not None and (
            self.reference_spec or self.path_for(self.reference_model) != self.path_for(self.policy)
        ):
            text += f"; reference: {self.path_for(self.reference_model).describe()}"
        return text

    def completion_logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Summed completion log-probs of every row of the batch [2B] (chosen rows first), float32, one forward."""
        return self.logps(model, batch)

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, Tensor]) -> Tensor:
        if self.reference_mode == "precomputed":
            if "list_index" in batch:
                raise PrecomputedReferenceError("reference: precomputed keeps one value per pair, not lists")
            if "reference_chosen_logps" not in batch:
                raise RuntimeError("reference: precomputed, but the batch carries no reference_chosen_logps")
            return torch.cat([batch["reference_chosen_logps"], batch["reference_rejected_logps"]]).float()
        if self.reference_mode == "adapter":
            with self.policy.disable_adapter():
                return self.completion_logps(self.policy, batch)
        return self.completion_logps(self.reference_model, batch)

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, Tensor, Tensor]:
        """The loss of a batch of pairs, of pairs formed from lists, or of whole lists (as the loss's input kind
        declares), with the chosen and rejected log-probs its metrics show (for whole lists: the best's and the
        worst's)."""
        policy = self.completion_logps(self.policy, batch)  # every row: a completion of a pair or of a list
        reference = self.reference_logps(batch) if self.loss_fn.requires_reference else None
        output, chosen, rejected = self._loss_of_kind(batch, policy, reference)

        def implicit_rewards() -> (
            Tensor
        ):  # their order: log π_θ − log π_ref, or (reference-free) the per-token log-prob
            return policy - reference if reference is not None else policy / batch["completion_lengths"].clamp(min=1)

        return self.with_best_of_k(output, batch, implicit_rewards), chosen, rejected

    def _loss_of_kind(self, batch: dict[str, Tensor], policy: Tensor, reference: Tensor | None):
        if self.loss_fn.input_kind == "lists":
            return self._list_loss(batch, policy, reference)
        if self.loss_fn.input_kind == "unpaired":
            return self._unpaired_loss(batch, policy, reference)
        if "kl_rows" in batch:
            check_data_kind(self.loss_fn, "unpaired")
        if "list_index" in batch and "pairs" not in batch:
            check_data_kind(self.loss_fn, "lists")
        chosen, rejected = pair_rows(batch)
        lengths = row_lengths(batch)
        inputs = LossInputs(
            policy_chosen_logps=policy[chosen],
            policy_rejected_logps=policy[rejected],
            chosen_lengths=lengths[chosen],
            rejected_lengths=lengths[rejected],
            margin=batch.get("margin"),
        )
        if reference is not None:
            inputs.reference_chosen_logps, inputs.reference_rejected_logps = reference[chosen], reference[rejected]
        return self.loss_fn(inputs), policy[chosen], policy[rejected]

    def _unpaired_loss(self, batch: dict[str, Tensor], policy: Tensor, reference: Tensor | None):
        """The loss of unpaired rows, with the desirable and the undesirable rows' log-probs for the metrics."""
        if "kl_rows" not in batch:
            check_data_kind(self.loss_fn, "lists" if "list_index" in batch and "pairs" not in batch else "pairs")
        matched, mismatched = unpaired_rows(batch)
        labels = batch["labels"]
        inputs = LossInputs(
            policy_logps=policy[matched],
            labels=labels,
            completion_lengths=batch["completion_lengths"][matched],
            policy_kl_logps=policy[mismatched],
        )
        if reference is not None:
            inputs.reference_logps, inputs.reference_kl_logps = reference[matched], reference[mismatched]
        return self.loss_fn(inputs), policy[matched][labels], policy[matched][~labels]

    def _list_loss(self, batch: dict[str, Tensor], policy: Tensor, reference: Tensor | None):
        if "pairs" in batch or "list_index" not in batch:
            check_data_kind(self.loss_fn, "pairs")
        rows, mask = list_grid(batch)
        scores = batch["scores"][rows]
        inputs = LossInputs(
            policy_logps=policy[rows],
            reference_logps=None if reference is None else reference[rows],
            scores=scores,
            list_mask=mask,
            completion_lengths=batch["completion_lengths"][rows],
        )
        output = self.loss_fn(inputs)
        best = torch.where(mask, scores, float("-inf")).argmax(-1, keepdim=True)
        worst = torch.where(mask, scores, float("inf")).argmin(-1, keepdim=True)
        return output, policy[rows].gather(1, best).squeeze(1), policy[rows].gather(1, worst).squeeze(1)

    def setup(self, stage: str) -> None:
        """Refuse, before any step, data of a kind the loss does not take (pairs for a list loss, whole lists for a
        pair loss), and a precomputed reference for lists."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "data_kind"):
            return
        check_data_kind(self.loss_fn, datamodule.data_kind(stage))
        if self.reference_mode == "precomputed" and (
            datamodule.holds_lists(stage) or datamodule.data_kind(stage) == "unpaired"
        ):
            raise PrecomputedReferenceError(
                "reference: precomputed keeps one value per pair; list and unpaired data need reference: copy or "
                "adapter"
            )

    # ------------------------------------------------------------------ precomputed reference
    def configure_callbacks(self) -> list[L.Callback]:
        """``reference: precomputed``: the `PrecomputedReference` callback computes and attaches the table."""
        if self.reference_mode != "precomputed":
            return []
        return [PrecomputedReference(batch_size=self.precompute_batch_size)]

    def on_fit_start(self) -> None:
        decided = self.path_for(self.policy).as_dict()
        if self.trainer.strategy.broadcast(decided, src=0) != decided:  # decided from code and config: never expected
            raise RuntimeError(f"process {self.global_rank} decided other log-prob paths than process 0: {decided}")
        for logger in self.loggers:
            logger.log_hyperparams({"logps_path": decided})
        if self.trainer.is_global_zero:
            print(f"preflight: {self.describe_paths()}", flush=True)

    def reference_is_rebuildable(self) -> bool:
        """Whether the reference can still be computed now: a separate reference model, or a LoRA
        policy whose disabled adapter is the reference; a fully fine-tuned policy is not its own start."""
        return bool(self.reference_spec) or is_peft(self.policy)

    @contextlib.contextmanager
    def initial_reference(self):
        """The model whose log-probs are the reference, in eval mode: `reference_model` loaded, or the policy (with
        its LoRA adapter disabled when it has one)."""
        model = self._load(self.reference_spec).to(self.device) if self.reference_spec else self.policy
        was_training = model.training
        model.eval()
        disabled = self.policy.disable_adapter() if model is self.policy and is_peft(self.policy) else None
        try:
            with disabled if disabled is not None else contextlib.nullcontext():
                yield model
        finally:
            model.train(was_training)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        if self.precomputed_reference:
            checkpoint["preflight_reference_logps"] = self.precomputed_reference

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.precomputed_reference = checkpoint.get("preflight_reference_logps", {})
