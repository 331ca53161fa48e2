"""Shared-prompt forward: each pair as one row ``[prompt, chosen, rejected]``.

The prompt is computed once for both completions. A 4D attention mask lets every token see
the tokens before it, except that rejected tokens never see chosen ones; position ids of
the rejected completion restart right after the prompt. Each completion is therefore
computed exactly as in its own ``[prompt, completion]`` row (tested to 1e-5), with the
prompt paid for once and no padding of the shorter completion to the longer one.

A model whose layers attend within a sliding window or in chunks gets the same pattern applied
by position id (`PackedPairs.mask`), one mask per layer type where the model takes a mapping.

The first token of each completion is predicted from the last prompt position; the other
tokens from the position before them within their own completion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PackedPairs:
    input_ids: Tensor  # [B, L]
    position_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, 1, L, L], bool: True where a query (row) may attend to a key (column)
    rows: Tensor  # [N] for every predicted completion token: its packed row,
    sources: Tensor  # [N] the position whose output predicts it,
    targets: Tensor  # [N] its token id,
    slots: Tensor  # [N] and its output row: i for pair i's chosen, B + i for its rejected
    segment: Tensor | None = None  # [B, L] PROMPT, CHOSEN, REJECTED or PAD per position

    def mask(self, pattern=None) -> Tensor:
        """The bool mask [B, 1, L, L] with an attention pattern (`fast_paths.AttentionPattern`) applied
        by position id, as the model applies it to each completion's own row; None: full attention."""
        if pattern is None or pattern.kind == "full":
            return self.attention_mask
        allowed = self.attention_mask & pattern.allows(self.position_ids[:, :, None], self.position_ids[:, None, :])[:, None]
        L = allowed.shape[-1]
        return allowed | torch.eye(L, dtype=torch.bool, device=allowed.device)[None, None]  # padding rows: never NaN


PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, -1


def pack_pairs(batch: dict[str, Tensor], pad_token_id: int = 0) -> PackedPairs:
    """Pack the documented batch format (chosen rows first, then rejected) into one row per pair."""
    ids = batch["input_ids"]
    B = batch["prompt_lengths"].shape[0]
    P, C, R = (batch[k].tolist() for k in ("prompt_lengths", "chosen_lengths", "rejected_lengths"))
    L = max(p + c + r for p, c, r in zip(P, C, R))
    device = ids.device
    input_ids = torch.full((B, L), pad_token_id, dtype=ids.dtype, device=device)
    position_ids = torch.full((B, L), -1, dtype=torch.long, device=device)
    segment = torch.full((B, L), PAD, dtype=torch.long, device=device)
    rows, sources, targets, slots = [], [], [], []
    for i, (p, c, r) in enumerate(zip(P, C, R)):
        input_ids[i, :p] = ids[i, :p]
        input_ids[i, p : p + c] = ids[i, p : p + c]
        input_ids[i, p + c : p + c + r] = ids[B + i, p : p + r]
        position_ids[i, : p + c] = torch.arange(p + c, device=device)
        position_ids[i, p + c : p + c + r] = torch.arange(p, p + r, device=device)
        segment[i, :p], segment[i, p : p + c], segment[i, p + c : p + c + r] = PROMPT, CHOSEN, REJECTED
        chosen_sources = torch.arange(p - 1, p + c - 1, device=device)
        rejected_sources = torch.cat([torch.tensor([p - 1], device=device), torch.arange(p + c, p + c + r - 1, device=device)])
        sources += [chosen_sources, rejected_sources]
        targets += [ids[i, p : p + c], ids[B + i, p : p + r]]
        rows.append(torch.full((c + r,), i, dtype=torch.long, device=device))
        slots += [torch.full((c,), i, dtype=torch.long, device=device), torch.full((r,), B + i, dtype=torch.long, device=device)]
    return PackedPairs(
        input_ids=input_ids,
        position_ids=position_ids.clamp(min=0),
        attention_mask=_allowed(segment),
        rows=torch.cat(rows), sources=torch.cat(sources), targets=torch.cat(targets), slots=torch.cat(slots),
        segment=segment,
    )


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """The bool mask as eager attention wants it: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)


def _allowed(segment: Tensor) -> Tensor:
    L = segment.shape[1]
    index = torch.arange(L, device=segment.device)
    causal = index[None, :] <= index[:, None]  # [query, key]
    key_real = (segment != PAD)[:, None, :]
    rejected_sees_chosen = (segment[:, :, None] == REJECTED) & (segment[:, None, :] == CHOSEN)
    allowed = causal[None] & key_real & ~rejected_sees_chosen
    allowed |= torch.eye(L, dtype=torch.bool, device=segment.device)[None]  # padding queries see themselves, never NaN
    return allowed[:, None]
