"""`CompletionLogps`: plans the paths for a model once, then computes Σ_t log π(y_t | x, y_<t) over the completion
tokens of every row of a batch, in float32, through them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..wrapped import as_forward, unwrap_peft
from .head import logps_from_hidden, logps_from_logits, token_logps_from_hidden
from .plan import LogpsPath, decide_path
from .rows import Layout, additive_mask, layout
from .settings import LogpsSettings, RowPacking

LOGITS_PER_CHUNK = 8 * 2**20  # vocabulary × tokens of one lm_head chunk (32 MiB of float32 logits)


class CompletionLogps:
    """Completion log-probs of a causal LM for the documented batch (`preflight.datamodules.collate`), through the
    fastest paths that are exact for that model.

    The plan (`plan`) is decided once per model from its code and configuration (`plan.decide_path`): the fused
    lm_head, the shared prompt and padding-free rows, each ``auto`` / ``on`` / ``off`` in `settings`. A batch then
    runs as planned: the model's own forward (full logits, or the decoder then the fused head), or one forward over
    rows of several sequences (`rows.layout`) whose attention rule reaches the model as a dense mask (sdpa, eager),
    a FlexAttention block mask, or position ids alone (flash kernels). A batch whose rows would exceed
    ``dense_mask_max_length`` under a dense mask takes the model's own forward instead (the same values).

    Args:
        settings: the paths allowed and their sizes.
    """

    def __init__(self, settings: LogpsSettings | None = None) -> None:
        self.settings = settings or LogpsSettings()
        self._plans: dict[int, LogpsPath] = {}  # by the identity of the model under any PEFT wrapper

    def plan(self, model: nn.Module) -> LogpsPath:
        """The paths this model's log-probs take (a PEFT model and its base share one plan)."""
        lm = unwrap_peft(model)
        if id(lm) not in self._plans:
            s = self.settings
            self._plans[id(lm)] = decide_path(lm, s.fused_lm_head, s.shared_prompt, s.padding_free)
        return self._plans[id(lm)]

    def describe(self, model: nn.Module) -> str:
        """The plan in words, with the dense-mask limit where it applies."""
        path = self.plan(model)
        text = path.describe()
        limit = self.settings.dense_mask_max_length
        if path.uses_layout and path.rendering == "dense" and limit:
            text += f"; rows over {limit} tokens go unshared (dense_mask_max_length)"
        return text

    def __call__(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Summed completion log-probs of every row of the batch (pairs: [2B], chosen rows first; lists: one per
        completion row), float32, one forward."""
        lm = unwrap_peft(model)
        path = self.plan(model)
        transform = path.transform if path.fused else None
        if path.uses_layout:
            rows = layout(batch, path.shared, self.packing(path))
            limit = self.settings.dense_mask_max_length
            if path.rendering != "dense" or limit is None or rows.input_ids.shape[1] <= limit:
                return self._layout_logps(model, lm, batch, rows, path, transform)
            # rows too long for a dense mask: each sequence in its own row, as the plain forward
        kwargs = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if path.fused:
            chunk = self.chunk_size(lm)
            return as_forward(
                model, decoder_then_head, lm, kwargs, batch["input_ids"], batch["completion_mask"], chunk, transform
            )
        return logps_from_logits(model(**kwargs).logits, batch["input_ids"], batch["completion_mask"])

    def packing(self, path: LogpsPath) -> RowPacking:
        """How this plan fills rows: one unit per row unless padding-free; flash kernels take one row."""
        if not path.padding_free:
            return RowPacking.unit_per_row()
        return RowPacking.one_row() if path.rendering == "varlen" else self.settings.packing

    def chunk_size(self, lm: nn.Module) -> int:
        if self.settings.lm_head_chunk_size:
            return self.settings.lm_head_chunk_size
        return max(16, LOGITS_PER_CHUNK // lm.get_output_embeddings().out_features)

    def _layout_logps(
        self, model: nn.Module, lm: nn.Module, batch: dict[str, Tensor], rows: Layout, path: LogpsPath, transform
    ) -> Tensor:
        """The forward of rows holding several sequences; `transform` is None for full logits, else the fused
        head's transform."""
        dtype = next(lm.parameters()).dtype
        implementation = lm.config._attn_implementation  # read at call time: a model may be switched after planning
        if path.rendering == "varlen":  # flash kernels: one row, sequences told apart by their position ids
            render = lambda pattern: None  # noqa: E731
        elif path.rendering == "block":
            render = rows.block_mask
        elif implementation == "sdpa":
            render = rows.mask
        else:
            render = lambda pattern: additive_mask(rows.mask(pattern), dtype)  # noqa: E731
        patterns = path.patterns
        if isinstance(patterns, dict):  # one mask per layer type, as the model's own mask mapping
            mask = {layer_type: render(pattern) for layer_type, pattern in patterns.items()}
        else:
            mask = render(patterns)
        kwargs = dict(input_ids=rows.input_ids, attention_mask=mask, position_ids=rows.position_ids, use_cache=False)
        if path.fused:
            chunk = self.chunk_size(lm)
            token = as_forward(
                model, packed_decoder_then_head, lm, kwargs, rows.rows, rows.sources, rows.targets, chunk, transform
            )
        else:
            logits = model(**kwargs).logits[rows.rows, rows.sources].float()
            token = torch.log_softmax(logits, -1).gather(1, rows.targets[:, None]).squeeze(1)
        out = torch.zeros(batch["input_ids"].shape[0], dtype=torch.float32, device=token.device)
        return out.index_add(0, rows.slots, token)


def decoder_then_head(
    lm: nn.Module, kwargs: dict, input_ids: Tensor, completion_mask: Tensor, chunk_size: int, transform
) -> Tensor:
    hidden = lm.get_decoder()(**kwargs).last_hidden_state
    head = lm.get_output_embeddings()
    return as_forward(head, logps_from_hidden, hidden, head, input_ids, completion_mask, chunk_size, transform)


def packed_decoder_then_head(
    lm: nn.Module, kwargs: dict, rows: Tensor, sources: Tensor, targets: Tensor, chunk_size: int, transform
) -> Tensor:
    hidden = lm.get_decoder()(**kwargs).last_hidden_state
    head = lm.get_output_embeddings()
    return as_forward(head, token_logps_from_hidden, hidden[rows, sources], head, targets, chunk_size, transform)
