"""`RewardModule`: a Bradley-Terry reward model (seed Eq. 2) on a sequence-classification model."""

from __future__ import annotations

from typing import Any, Literal

from torch import Tensor, nn

from ..datamodules.collate import list_grid, pair_rows, row_lengths
from ..losses import LossInputs, LossOutput
from ..losses.registry import check_data_kind
from .base import LossSpec, PreflightModule, Scheduler
from ..pretrained import check_model_source, load_model
from ..wrapped import unwrap_peft
from .models import apply_lora, model_source


class RewardModule(PreflightModule):
    r"""Trains r_φ(x, y) with ``bradley_terry`` (−log σ(r_w − r_l − margin), seed Eq. 2) or any
    registered loss whose ``input_kind`` is ``rewards``, from the same `PreferenceDataModule`.

    The model is a transformers sequence-classification model with one output
    (``num_labels=1``), scoring the last real token of prompt+completion; a causal-LM
    checkpoint gets a fresh one-output score head. Logs ``rewards/accuracies``,
    ``rewards/margins`` and the mean rewards; exports as a Hugging Face sequence-classification folder.

    Args:
        model: a Hugging Face id or local path, or a transformers model instance.
        loss: a reward-model loss (default ``bradley_terry``), in any form `PreferenceModule` accepts.
        peft: optional LoRA settings (the score head stays trainable).
        learning_rate: AdamW's peak learning rate.
        weight_decay: AdamW's decoupled weight decay, applied to matrices (not to biases and norms).
        warmup_steps: optimizer steps of linear warm-up from 0 to ``learning_rate``.
        scheduler: the learning-rate schedule after warm-up: ``linear`` decay to 0, ``cosine``, or ``constant``.
        gradient_checkpointing: recompute decoder activations in backward (less memory, more compute).
        on_nonfinite: ``error`` stops at a non-finite loss or gradient; ``skip`` skips that optimizer step.
        trust_remote_code: allow model (and tokenizer) code from the model's folder or the Hub (off by default).
        init_seed: seed of the random weights of a model folder that holds only a config.
        model_dtype: the dtype the weights are loaded in (``bfloat16``, ``float32``, ...; None: the checkpoint's).
    """

    def __init__(
        self,
        model: Any = "assets/tiny-llama",
        loss: LossSpec = "bradley_terry",
        peft: dict[str, Any] | None = None,
        learning_rate: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        scheduler: Scheduler = "linear",
        gradient_checkpointing: bool = False,
        on_nonfinite: Literal["error", "skip"] = "error",
        trust_remote_code: bool = False,
        init_seed: int = 0,
        model_dtype: str | None = None,
    ) -> None:
        super().__init__(loss, learning_rate, weight_decay, warmup_steps, scheduler, on_nonfinite)
        self.save_hyperparameters(ignore=[] if isinstance(model, str) else ["model"])
        self.hparams["loss"] = self._loss_spec  # plain data, whatever form the loss was given in
        if self.loss_fn.input_kind not in ("rewards", "reward_lists"):
            raise ValueError(
                f"RewardModule trains on reward scores; loss '{self.loss_fn.name}' needs policy log-probs "
                "(use PreferenceModule, or a reward loss such as bradley_terry)"
            )
        if not isinstance(model, str):
            self.hparams["model"] = model_source(model)
        self.__dict__["model_spec"] = model  # an instance becomes `model` in configure_model, registered once
        self.peft_settings = peft
        self._pad_token_id: int | None = None
        self.gradient_checkpointing, self.trust_remote_code = gradient_checkpointing, trust_remote_code
        self.init_seed, self.model_dtype = init_seed, model_dtype
        self.model: nn.Module | None = None
        if isinstance(model, str):
            check_model_source(model, trust_remote_code)

    def run_name(self) -> str:
        """The command's default run folder name."""
        base = "reward_model" if self.loss_fn.name == "bradley_terry" else f"reward_{self.loss_fn.name}"
        return base + ("_lora" if self.peft_settings else "")

    def configure_model(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModelForSequenceClassification

        model = load_model(
            self.model_spec,
            AutoModelForSequenceClassification,
            trust_remote_code=self.trust_remote_code,
            init_seed=self.init_seed,
            dtype=self.model_dtype,
            num_labels=1,
        )
        self._apply_pad_token_id(model)
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if self.peft_settings:
            model = apply_lora(model, {"task_type": "SEQ_CLS", **self.peft_settings})
        self.model = model

    def setup(self, stage: str) -> None:
        """The score is read at the last token that is not padding, which the model finds by its config's
        ``pad_token_id``: make that the data's padding id, as TRL's RewardTrainer does."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if hasattr(datamodule, "data_kind"):
            check_data_kind(self.loss_fn, datamodule.data_kind(stage))
        collator = getattr(datamodule, "collator", None)
        if collator is not None:
            self.use_pad_token_id(collator.pad_token_id)

    def use_pad_token_id(self, pad_token_id: int) -> None:
        """Read the score at the last token that is not `pad_token_id` (the padding of the data scored)."""
        self._pad_token_id = pad_token_id
        if self.model is not None:
            self._apply_pad_token_id(self.model)

    def _apply_pad_token_id(self, model: nn.Module) -> None:
        if self._pad_token_id is not None:
            unwrap_peft(model).config.pad_token_id = self._pad_token_id

    def rewards(self, batch: dict[str, Tensor]) -> Tensor:
        """r_φ for every row [2B] (chosen rows first), float32."""
        out = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        return out.logits[:, 0].float()

    def compute_loss(self, batch: dict[str, Tensor]) -> tuple[LossOutput, None, None]:
        """The loss of the batch's pairs (given as pairs, or formed from lists by ``pairs_from_lists``), or of whole
        lists for a list loss (``plackett_luce_reward``)."""
        whole_lists = "list_index" in batch and "pairs" not in batch
        if whole_lists != (self.loss_fn.input_kind == "reward_lists"):
            check_data_kind(self.loss_fn, "lists" if whole_lists else "pairs")
        scores = self.rewards(batch)
        if whole_lists:
            rows, mask = list_grid(batch)
            inputs = LossInputs(list_rewards=scores[rows], scores=batch["scores"][rows], list_mask=mask)
            return self.with_best_of_k(self.loss_fn(inputs), batch, lambda: scores), None, None
        chosen, rejected = pair_rows(batch)
        lengths = row_lengths(batch)
        inputs = LossInputs(
            chosen_rewards=scores[chosen],
            rejected_rewards=scores[rejected],
            margin=batch.get("margin"),
            chosen_lengths=lengths[chosen],
            rejected_lengths=lengths[rejected],
        )
        return self.with_best_of_k(self.loss_fn(inputs), batch, lambda: scores), None, None
