"""Completion log-probabilities of a causal LM, in float32.

Two paths with the same result (tested to 1e-5, values and gradients):

- `logps_from_logits`: the plain path: full logits → log-softmax → gather, masked to
  completion tokens and summed per row.
- `logps_from_hidden`: the fast path: the final hidden states at completion positions
  only, through the lm_head, log-softmax and gather in chunks of rows, each chunk
  recomputed in backward (activation checkpointing), so the [rows, tokens, vocabulary]
  logits never exist and peak memory does not grow with the vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


def shifted_targets(input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(targets, mask): position t predicts token t+1; mask marks completion targets."""
    return input_ids[:, 1:], completion_mask[:, 1:].bool()


def logps_from_logits(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> Tensor:
    """Σ_t log p(y_t | y_<t) over completion tokens, per row, in float32. logits: [R, T, V]."""
    targets, mask = shifted_targets(input_ids, completion_mask)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    token_logps = torch.gather(logprobs, 2, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * mask).sum(-1)


def _chunk_logps(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, transform=None) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()
    if transform is not None:
        logits = transform.apply(logits)
    return -F.cross_entropy(logits, targets, reduction="none")


def token_logps_from_hidden(
    selected: Tensor, lm_head: nn.Module, targets: Tensor, chunk_size: int = 1024, transform=None
) -> Tensor:
    """log p(target) for each row of `selected` [N, H], the lm_head (then the model's logit `transform`,
    a `fast_paths.LogitTransform`) applied in chunks recomputed in backward."""
    weight, bias = lm_head.weight, getattr(lm_head, "bias", None)
    pieces = []
    for start in range(0, selected.shape[0], chunk_size):
        h, t = selected[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
            pieces.append(checkpoint(_chunk_logps, h, weight, bias, t, transform, use_reentrant=False))
        else:
            pieces.append(_chunk_logps(h, weight, bias, t, transform))
    return torch.cat(pieces) if pieces else selected.new_zeros(0, dtype=torch.float32)


def logps_from_hidden(
    hidden: Tensor,
    lm_head: nn.Module,
    input_ids: Tensor,
    completion_mask: Tensor,
    chunk_size: int = 1024,
    transform=None,
) -> Tensor:
    """Like `logps_from_logits`, from the final hidden states [R, T, H] and the lm_head (a Linear)."""
    targets, mask = shifted_targets(input_ids, completion_mask)
    rows = mask.nonzero(as_tuple=True)[0]
    selected = hidden[:, :-1][mask]  # [N, H]: only the positions that predict a completion token
    token_logps = token_logps_from_hidden(selected, lm_head, targets[mask], chunk_size, transform)
    out = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=hidden.device)
    return out.index_add(0, rows, token_logps)
