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

from ..reference import PrecomputedReference
from ..losses import LossInputs, LossOutput
from .base import LossSpec, PreflightModule, Scheduler
from .fast_paths import FastPathError, LogpsPath, analyze_attention, analyze_head, analyze_layers, decide_path
from .logps import logps_from_hidden, logps_from_logits, token_logps_from_hidden
from .packing import Layout, additive_mask, layout
from ..pretrained import check_model_source, load_model
from .models import (
    apply_lora,
    inside_forward,
    is_fsdp2_unit,
    is_peft,
    model_source,
    shard_fsdp2,
    unwrap_peft,
)

log = logging.getLogger("preflight")
# The frozen reference model is in eval mode on purpose; Lightning's notice about it is noise.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode at the start of training")
LOGITS_PER_CHUNK = 8 * 2**20  # vocabulary × tokens of one lm_head chunk (32 MiB of float32 logits)
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
        if not isinstance(model, str):
            self.hparams["model"] = model_source(model)
        if reference not in ("auto", "copy", "adapter", "precomputed", "none"):
            raise ValueError(f"reference must be auto, copy, adapter, precomputed or none; got {reference!r}")
        for name, value in (
            ("fused_lm_head", fused_lm_head),
            ("shared_prompt", shared_prompt),
            ("padding_free", padding_free),
        ):
            if value not in ("auto", "on", "off"):
                raise ValueError(f"{name} must be auto, on or off; got {value!r}")
        self.reference_mode = self._resolve_reference(reference, peft, reference_model)
        self.__dict__["model_spec"] = model  # an instance becomes `policy` in configure_model, registered once
        self.reference_spec, self.peft_settings = reference_model, peft
        self.gradient_checkpointing, self.fused_lm_head, self.shared_prompt = (
            gradient_checkpointing,
            fused_lm_head,
            shared_prompt,
        )
        self.lm_head_chunk_size, self.precompute_batch_size = lm_head_chunk_size, precompute_batch_size
        self.padding_free, self.max_tokens_per_row = padding_free, max_tokens_per_row
        self.dense_mask_max_length = dense_mask_max_length
        if max_tokens_per_row is not None and max_tokens_per_row < 1:
            raise ValueError(
                f"max_tokens_per_row must be a positive number of tokens or None, got {max_tokens_per_row}"
            )
        self.trust_remote_code, self.init_seed, self.model_dtype = trust_remote_code, init_seed, model_dtype
        self.attn_implementation = attn_implementation
        self.policy: nn.Module | None = None
        self.reference_model: nn.Module | None = None
        self._paths: dict[int, LogpsPath] = {}  # per model (by identity): decided once, from its code and config
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
        """The fast paths this model's log-probs take (`fast_paths.decide_path`), decided once per model."""
        lm = unwrap_peft(model)
        key = id(lm)
        if key not in self._paths:
            self._paths[key] = decide_path(lm, self.fused_lm_head, self.shared_prompt, self.padding_free)
        return self._paths[key]

    def describe_paths(self) -> str:
        """One line: the paths of the policy, and of the reference model when it is another model."""
        path = self.path_for(self.policy)
        text = f"log-probs: {path.describe()}"
        if path.uses_layout and path.rendering == "dense" and self.dense_mask_max_length:
            text += f"; rows over {self.dense_mask_max_length} tokens go unshared (dense_mask_max_length)"
        if self.reference_model is not None and (
            self.reference_spec or self.path_for(self.reference_model) != self.path_for(self.policy)
        ):
            text += f"; reference: {self.path_for(self.reference_model).describe()}"
        return text

    def completion_logps(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Summed completion log-probs of every row of the batch [2B] (chosen rows first), float32, one forward."""
        path = self.path_for(model)
        return self._logps(model, batch, path.fused, path.shared, path.padding_free)

    def _logps(
        self, model: nn.Module, batch: dict[str, Tensor], fused: bool, shared: bool, padding_free: bool = False
    ) -> Tensor:
        """The log-probs through the given paths (the model's own logit transform and attention
        patterns applied where a fast path needs them)."""
        lm = unwrap_peft(model)
        path = self.path_for(model)  # its transform and patterns, analyzed once; re-analyzed only for a forced path
        transform = None
        if fused:
            transform = path.transform if path.fused else analyze_head(lm)[0]
            if transform is None:
                raise FastPathError(f"the fused lm_head is not exact for {type(lm).__name__}")
        if shared or padding_free:
            patterns, problem = path.patterns, None
            if not path.uses_layout or (shared and not path.shared):  # a forced path: analyzed now
                patterns, problem = analyze_attention(lm) if shared else analyze_layers(lm)
            if problem:
                raise FastPathError(f"rows of several sequences are not exact for {type(lm).__name__}: {problem}")
            tokens_per_row = 0 if not padding_free else None if path.rendering == "varlen" else self.max_tokens_per_row
            rows = layout(batch, shared, tokens_per_row)
            limit = self.dense_mask_max_length
            if path.rendering != "dense" or limit is None or rows.input_ids.shape[1] <= limit:
                return self._layout_logps(model, lm, batch, rows, path.rendering, transform, patterns)
            # rows too long for a dense mask: each sequence in its own row, as the plain forward
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if fused:
            return as_forward(
                model,
                _decoder_then_head,
                lm,
                kwargs,
                batch["input_ids"],
                batch["completion_mask"],
                self._chunk_size(lm),
                transform,
            )
        return logps_from_logits(model(**kwargs).logits, batch["input_ids"], batch["completion_mask"])

    def _layout_logps(
        self,
        model: nn.Module,
        lm: nn.Module,
        batch: dict[str, Tensor],
        rows: Layout,
        rendering: str,
        transform,
        patterns,
    ) -> Tensor:
        """The forward of rows holding several sequences (`packing.Layout`); `transform` is None for full
        logits, else the fused head's transform."""
        dtype = next(lm.parameters()).dtype
        implementation = lm.config._attn_implementation
        if rendering == "varlen":  # flash kernels: one row, sequences told apart by their position ids
            render = lambda pattern: None  # noqa: E731
        elif rendering == "block":
            render = rows.block_mask
        elif implementation == "sdpa":
            render = rows.mask
        else:
            render = lambda pattern: additive_mask(rows.mask(pattern), dtype)  # noqa: E731
        if isinstance(patterns, dict):  # one mask per layer type, as the model's own mask mapping
            mask = {layer_type: render(pattern) for layer_type, pattern in patterns.items()}
        else:
            mask = render(patterns)
        kwargs = dict(input_ids=rows.input_ids, attention_mask=mask, position_ids=rows.position_ids, use_cache=False)
        if transform is not None:
            token = as_forward(
                model,
                _packed_decoder_then_head,
                lm,
                kwargs,
                rows.rows,
                rows.sources,
                rows.targets,
                self._chunk_size(lm),
                transform,
            )
        else:
            logits = model(**kwargs).logits[rows.rows, rows.sources].float()
            token = torch.log_softmax(logits, -1).gather(1, rows.targets[:, None]).squeeze(1)
        out = torch.zeros(batch["input_ids"].shape[0], dtype=torch.float32, device=token.device)
        return out.index_add(0, rows.slots, token)

    def _chunk_size(self, lm: nn.Module) -> int:
        if self.lm_head_chunk_size:
            return self.lm_head_chunk_size
        return max(16, LOGITS_PER_CHUNK // lm.get_output_embeddings().out_features)

    @torch.no_grad()
    def reference_logps(self, batch: dict[str, Tensor]) -> Tensor:
        if self.reference_mode == "precomputed":
            if "reference_chosen_logps" not in batch:
                raise RuntimeError("reference: precomputed, but the batch carries no reference_chosen_logps")
            return torch.cat([batch["reference_chosen_logps"], batch["reference_rejected_logps"]]).float()
        if self.reference_mode == "adapter":
            with self.policy.disable_adapter():
                return self.completion_logps(self.policy, batch)
        return self.completion_logps(self.reference_model, batch)

    # ------------------------------------------------------------------ the loss
    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, Tensor, Tensor]:
        B = batch["chosen_lengths"].shape[0]
        policy = self.completion_logps(self.policy, batch)
        inputs = LossInputs(
            policy_chosen_logps=policy[:B],
            policy_rejected_logps=policy[B:],
            chosen_lengths=batch["chosen_lengths"],
            rejected_lengths=batch["rejected_lengths"],
            margin=batch.get("margin"),
        )
        if self.loss_fn.requires_reference:
            reference = self.reference_logps(batch)
            inputs.reference_chosen_logps, inputs.reference_rejected_logps = reference[:B], reference[B:]
        output = self.loss_fn(inputs)
        return output, policy[:B], policy[B:]

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


def as_forward(module: nn.Module, function, *args):
    """`function(*args)`, run as the module's forward where the module is an FSDP2 unit. The fused head reads
    the lm_head weight directly, which FSDP2 gathers only inside its unit's forward (and reduces after its
    backward); the decoder's own units are gathered by their forwards as usual, inside the root's."""
    return inside_forward(module, function, *args) if is_fsdp2_unit(module) else function(*args)


def _decoder_then_head(
    lm: nn.Module, kwargs: dict, input_ids: Tensor, completion_mask: Tensor, chunk_size: int, transform
) -> Tensor:
    hidden = lm.get_decoder()(**kwargs).last_hidden_state
    head = lm.get_output_embeddings()
    return as_forward(head, logps_from_hidden, hidden, head, input_ids, completion_mask, chunk_size, transform)


def _packed_decoder_then_head(
    lm: nn.Module, kwargs: dict, rows: Tensor, sources: Tensor, targets: Tensor, chunk_size: int, transform
) -> Tensor:
    hidden = lm.get_decoder()(**kwargs).last_hidden_state
    head = lm.get_output_embeddings()
    return as_forward(head, token_logps_from_hidden, hidden[rows, sources], head, targets, chunk_size, transform)
