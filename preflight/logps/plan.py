"""Which fast log-prob paths are exact for a model, decided from its code and configuration.

Two fast paths (see `head.py` and `rows.py`) compute the same log-probs as the model's own
forward only when the model has no behaviour they leave out:

- **fused lm_head** (the head applied to the decoder's hidden states at completion positions) is
  exact when the causal-LM ``forward``, between its decoder call and its loss, does nothing but
  apply the output embeddings, optionally followed by a logit transform preflight applies the same
  way: Gemma-2/3's ``final_logit_softcapping``, Cohere's ``logit_scale``, Granite's
  ``logits_scaling``. The source of ``forward`` is read to check this; anything else turns the
  path off (or, for ``on``, is an error).
- **shared prompt** (one row ``[prompt, chosen, rejected]`` with a 4D mask) is exact when every
  layer mixes tokens only through attention whose pattern the mask can express (full, sliding
  window, chunked: applied per layer type when the model takes a mapping of masks), positions
  come from ``position_ids``, and the attention implementation honours a custom mask (sdpa,
  eager). Convolutions or state-space layers along the sequence, ALiBi biases (computed from the
  2D mask), and masks built in a model's own way turn it off.

The decision for each path is independent of the other, taken once per model before training.
"""

from __future__ import annotations

import inspect
import re
import textwrap
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor, nn

from ..errors import PreflightConfigError
from .settings import Setting

MASK_IMPLEMENTATIONS = ("sdpa", "eager")  # take a dense 4D mask
BLOCK_MASK_IMPLEMENTATIONS = ("flex_attention",)  # take a FlexAttention BlockMask
VARLEN_IMPLEMENTATIONS = ("flash_attention_2", "flash_attention_3")  # take packed rows by position ids
ATTENTION_LAYER_TYPES = ("full_attention", "sliding_attention", "chunked_attention")
# class names of sequence mixers that are not attention (matched case-sensitively: "GptOssModel" is no SSM)
SEQUENCE_MIXER_NAMES = re.compile(
    r"Mamba|SSM|Ssm[A-Z]|ShortConv|LinearAttention|Linear_?Attn|DeltaNet|Recurrent|Rwkv|RWKV|"
    r"Retention|Hyena"
)


class FastPathError(PreflightConfigError):
    """A fast path set to ``on`` for a model where it is not exact."""


@dataclass(frozen=True)
class LogitTransform:
    """What a model does to the lm_head's output: ``cap · tanh(scale · z / cap)`` (each part optional)."""

    scale: float | None = None
    softcap: float | None = None

    def apply(self, logits: Tensor) -> Tensor:
        if self.scale is not None:
            logits = logits * self.scale
        if self.softcap is not None:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    def describe(self) -> str:
        parts = ([f"logit scale {self.scale:g}"] if self.scale is not None else []) + (
            [f"soft-capping {self.softcap:g}"] if self.softcap is not None else []
        )
        return ", ".join(parts)


@dataclass(frozen=True)
class AttentionPattern:
    """Which earlier positions a query may attend to, by position id: all, the last `size`, or its chunk."""

    kind: Literal["full", "sliding", "chunked"] = "full"
    size: int | None = None

    def allows(self, query_positions: Tensor, key_positions: Tensor) -> Tensor:
        if self.kind == "sliding":
            return query_positions - key_positions < self.size  # transformers: kv_idx > q_idx - sliding_window
        if self.kind == "chunked":
            return torch.div(query_positions, self.size, rounding_mode="floor") == torch.div(
                key_positions, self.size, rounding_mode="floor"
            )
        return torch.ones_like(query_positions - key_positions, dtype=torch.bool)

    def describe(self) -> str:
        return "full attention" if self.kind == "full" else f"{self.kind} window {self.size}"


@dataclass(frozen=True)
class LogpsPath:
    """The paths one model's log-probs take, and why."""

    fused: bool
    fused_reason: str
    shared: bool
    shared_reason: str
    transform: LogitTransform | None = None
    # the mask pattern of each layer type (a model that takes a mapping of masks), or of every layer
    patterns: dict[str, AttentionPattern] | AttentionPattern | None = field(default=None)
    padding_free: bool = False
    padding_free_reason: str = "off as set"
    # how rows of several sequences reach attention: "dense" 4D mask, "block" (FlexAttention) or "varlen"
    rendering: str = "dense"

    @property
    def uses_layout(self) -> bool:
        return self.shared or self.padding_free

    def describe(self) -> str:
        return (
            f"fused lm_head {'on' if self.fused else 'off'} ({self.fused_reason}), "
            f"shared prompt {'on' if self.shared else 'off'} ({self.shared_reason}), "
            f"padding-free {'on' if self.padding_free else 'off'} ({self.padding_free_reason})"
        )

    def as_dict(self) -> dict:
        return {
            "fused_lm_head": self.fused,
            "fused_lm_head_reason": self.fused_reason,
            "shared_prompt": self.shared,
            "shared_prompt_reason": self.shared_reason,
            "padding_free": self.padding_free,
            "padding_free_reason": self.padding_free_reason,
        }


# ---------------------------------------------------------------------- the head
def _body(function) -> str:
    """The statements of a function: dedented, without its docstring, comments and blank lines."""
    source = textwrap.dedent(inspect.getsource(function))
    source = re.sub(r'("""|\'\'\')(.*?)\1', "", source, count=1, flags=re.S)
    lines = [re.sub(r"\s+#.*$", "", line).rstrip() for line in source.splitlines()]
    return "\n".join(line for line in lines if line.strip() and not line.strip().startswith("#"))


def _call_end(text: str, open_paren: int) -> int:
    depth = 0
    for i in range(open_paren, len(text)):
        depth += {"(": 1, ")": -1}.get(text[i], 0)
        if depth == 0:
            return i + 1
    raise ValueError("unbalanced call")


def analyze_head(lm: nn.Module) -> tuple[LogitTransform | None, str | None]:
    """(the logit transform, None) when the fused head is exact for `lm`, else (None, why not)."""
    name = type(lm).__name__
    head, get_decoder = lm.get_output_embeddings(), getattr(lm, "get_decoder", None)
    if not isinstance(head, nn.Linear) or not callable(get_decoder):
        return None, f"{name} has no Linear output embeddings and decoder to split"
    try:
        body = _body(type(lm).forward)
    except (OSError, TypeError):
        return None, f"the source of {name}.forward cannot be read"
    decoder = get_decoder()
    call = next(
        (
            m
            for m in re.finditer(r"^\s*(\w+)(?:\s*:\s*[\w\[\], .]+)?\s*=\s*self\.([\w.]+)\(", body, re.M)
            if _resolve(lm, m.group(2)) is decoder
        ),
        None,
    )
    if call is None:
        return None, f"{name}.forward does not call its decoder in a way preflight recognizes"
    rest = body[_call_end(body, call.end() - 1) :]
    rest = rest.split("loss = None")[0] if "loss = None" in rest else rest.split("if labels is not None")[0]
    statements = [line.strip() for line in rest.splitlines() if line.strip()]
    out = re.escape(call.group(1))
    expected = [
        rf"hidden_states = {out}(\.last_hidden_state|\[0\])",
        r"hidden_states = slice_logits_to_keep\(hidden_states, logits_to_keep\)",
        r"(\w+) = self\.(\w+)\(hidden_states\)(\.contiguous\(\))?",
    ]
    for i, pattern in enumerate(expected):
        if i == 1 and statements and not re.fullmatch(pattern, statements[0]):
            continue  # slicing to `logits_to_keep` is optional
        if not statements or not re.fullmatch(pattern, statements[0]):
            return None, f"{name}.forward computes its logits in a way preflight does not know"
        match = re.fullmatch(pattern, statements.pop(0))
    logits_name, head_name = match.group(1), match.group(2)
    if getattr(lm, head_name, None) is not head:
        return None, f"{name}.forward applies self.{head_name}, not its output embeddings"
    return _known_transform(lm, logits_name, statements)


def _known_transform(lm: nn.Module, z: str, statements: list[str]) -> tuple[LogitTransform | None, str | None]:
    config, text = lm.config, "\n".join(statements)
    softcap = (
        f"if self.config.final_logit_softcapping is not None:\n{z} = {z} / self.config.final_logit_softcapping\n"
        f"{z} = torch.tanh({z})\n{z} = {z} * self.config.final_logit_softcapping"
    )
    if text == "":
        return LogitTransform(), None
    if text == softcap:
        cap = getattr(config, "final_logit_softcapping", None)
        return LogitTransform(softcap=float(cap) if cap is not None else None), None
    if text == f"{z} = {z} * self.logit_scale":
        return LogitTransform(scale=float(lm.logit_scale)), None
    if text == f"{z} = {z} / self.config.logits_scaling":
        return LogitTransform(scale=1.0 / float(config.logits_scaling)), None
    return None, f"{type(lm).__name__}.forward transforms its logits in a way preflight does not know ({statements[0]})"


def _resolve(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


# ---------------------------------------------------------------------- attention
def analyze_attention(lm: nn.Module) -> tuple[dict[str, AttentionPattern] | AttentionPattern | None, str | None]:
    """(the mask pattern(s), None) when the shared-prompt row is exact for `lm`, else (None, why not)."""
    config = lm.config
    implementation = getattr(config, "_attn_implementation", None)
    if implementation not in MASK_IMPLEMENTATIONS + BLOCK_MASK_IMPLEMENTATIONS:
        return None, (
            f"attention implementation {implementation!r} takes no custom mask "
            "(sdpa and eager take a dense one, flex_attention a block mask)"
        )
    return analyze_layers(lm)


def analyze_layers(lm: nn.Module) -> tuple[dict[str, AttentionPattern] | AttentionPattern | None, str | None]:
    """(the mask pattern(s), None) when every layer mixes tokens only by attention whose pattern a mask
    applies by position id (so sequences can share a row), else (None, why not); any implementation."""
    config, name = lm.config, type(lm).__name__
    if getattr(config, "alibi", False) or config.model_type in ("bloom", "mpt"):
        return None, f"{name} uses ALiBi biases computed from the 2D mask"
    for module in lm.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)) or SEQUENCE_MIXER_NAMES.search(type(module).__name__):
            return None, f"{name} mixes tokens with {type(module).__name__}, not only attention"
    decoder = lm.get_decoder() if callable(getattr(lm, "get_decoder", None)) else None
    if decoder is None or "position_ids" not in inspect.signature(decoder.forward).parameters:
        return None, f"{name}'s decoder takes no position_ids"
    try:
        body = _body(type(decoder).forward)
    except (OSError, TypeError):
        return None, f"the source of {type(decoder).__name__}.forward cannot be read"
    if "alibi" in body:
        return None, f"{name} uses ALiBi biases computed from the 2D mask"
    layer_types = list(getattr(config, "layer_types", None) or [])
    unknown = sorted(set(layer_types) - set(ATTENTION_LAYER_TYPES))
    if unknown:
        return None, f"{name} has layers of type {', '.join(unknown)}, not attention"
    if re.search(r"isinstance\(\s*(?:causal_mask_mapping\s*:=\s*)?attention_mask\s*,\s*dict\s*\)", body):
        patterns = {t: _pattern(config, t) for t in set(layer_types) | {"full_attention"}}
        return patterns, None
    if "create_sliding_window_causal_mask" in body or "create_chunked_causal_mask" in body:
        if not re.search(
            r"create_causal_mask if self\.config\.sliding_window is None else "
            r"create_sliding_window_causal_mask",
            body,
        ):
            return None, f"{type(decoder).__name__} chooses its attention pattern in a way preflight does not know"
        window = getattr(config, "sliding_window", None)
        return (AttentionPattern("sliding", int(window)) if window is not None else AttentionPattern()), None
    if "create_causal_mask" not in body:
        return None, f"{type(decoder).__name__} builds its attention mask in its own way"
    if len(set(layer_types) - {"full_attention"}):
        return None, f"{name} has {', '.join(sorted(set(layer_types)))} layers but one mask for all"
    return AttentionPattern(), None


def _pattern(config, layer_type: str) -> AttentionPattern:
    if layer_type == "sliding_attention":
        return AttentionPattern("sliding", int(config.sliding_window))
    if layer_type == "chunked_attention":
        return AttentionPattern("chunked", int(config.attention_chunk_size))
    return AttentionPattern()


def describe_patterns(patterns) -> str:
    if isinstance(patterns, AttentionPattern):
        return patterns.describe()
    kinds = sorted({p.describe() for p in patterns.values()})
    return " and ".join(kinds) + (" layers" if len(kinds) > 1 else "")


# ---------------------------------------------------------------------- the decision
def decide_path(
    lm: nn.Module, fused_lm_head: Setting, shared_prompt: Setting, padding_free: Setting = "off"
) -> LogpsPath:
    """The paths for `lm` (a transformers causal LM, PEFT unwrapped) under the module's settings.

    ``off`` is off; ``auto`` is on exactly where the path is exact (padding-free: and where it needs no
    dense mask over a packed row); ``on`` is on, or a `FastPathError` saying why it would not be exact.
    Each path is decided on its own.
    """
    name = type(lm).__name__
    implementation = getattr(lm.config, "_attn_implementation", None)
    transform, head_problem = (None, "off as set") if fused_lm_head == "off" else analyze_head(lm)
    if fused_lm_head == "on" and head_problem:
        raise FastPathError(f"fused_lm_head: on is not exact for {name}: {head_problem}")
    patterns, attention_problem = (None, "off as set") if shared_prompt == "off" else analyze_attention(lm)
    if shared_prompt == "on" and attention_problem:
        raise FastPathError(f"shared_prompt: on is not exact for {name}: {attention_problem}")
    packed_patterns, packing_problem = (None, "off as set") if padding_free == "off" else analyze_layers(lm)
    if packing_problem is None:
        if implementation in MASK_IMPLEMENTATIONS and padding_free == "auto":
            packing_problem = (
                f"{implementation} would need a dense mask over each packed row, quadratic in its "
                "length (flex_attention or flash_attention_2 take packed rows; set on to pack anyway)"
            )
        elif implementation not in MASK_IMPLEMENTATIONS + BLOCK_MASK_IMPLEMENTATIONS + VARLEN_IMPLEMENTATIONS:
            packing_problem = f"attention implementation {implementation!r} takes no packed rows"
    if padding_free == "on" and packing_problem:
        raise FastPathError(f"padding_free: on is not exact for {name}: {packing_problem}")
    fused, shared, packed = head_problem is None, attention_problem is None, packing_problem is None
    rendering = (
        "block"
        if implementation in BLOCK_MASK_IMPLEMENTATIONS
        else "varlen"
        if implementation in VARLEN_IMPLEMENTATIONS
        else "dense"
    )
    fused_reason = (transform.describe() or "plain logits") if fused else head_problem
    shared_reason = describe_patterns(patterns) if shared else attention_problem
    packed_reason = (
        {"block": "FlexAttention block mask", "varlen": "one row, sequences by position ids", "dense": "dense mask"}[
            rendering
        ]
        if packed
        else packing_problem
    )
    if shared and rendering == "block":
        shared_reason += ", FlexAttention block mask"
    return LogpsPath(
        fused,
        fused_reason,
        shared,
        shared_reason,
        transform if fused else None,
        patterns if shared else packed_patterns if packed else None,
        packed,
        packed_reason,
        rendering,
    )
