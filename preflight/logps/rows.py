"""Rows of several sequences: the shared prompt and padding-free packing.

A `Layout` places the batch's sequences in rows and records, for every position, its document
(the pair, list or sequence it belongs to, -1 for padding), its segment (the prompt, or the k-th
completion of its document) and its position id. One rule says which keys a query may attend to:

    same document  and  key ≤ query  and  (key in the prompt  or  key in the query's own completion)
    and  the layer's window (by position id)

so every completion is computed exactly as in its own ``[prompt, completion]`` row (tested to 1e-5).
Two units of layout:

- **shared prompt**: one unit ``[prompt, completion 1, ..., completion K]`` per prompt (K = 2 for a pair:
  chosen then rejected), the prompt computed once for all K; each completion's positions restart right
  after the prompt.
- **separate sequences**: ``[prompt, chosen]`` and ``[prompt, rejected]``, each its own document.

Units go one per row, or several per row up to a token budget, balanced so the rows have similar
lengths (padding-free: the rows hold real tokens, padded only to the longest row). The rule is
rendered as a dense bool mask [R, 1, L, L] for sdpa and eager attention, or as a FlexAttention
`BlockMask` built one query block at a time, so no [L, L] tensor exists; flash-attention kernels
take the packed row through its position ids alone.

The first token of each completion is predicted from the last prompt position; the other tokens
from the position before them within their own completion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .settings import RowPacking

PROMPT, CHOSEN, REJECTED, PAD = 0, 1, 2, -1  # a unit's k-th completion (from 1) is segment k: chosen 1, rejected 2
FLEX_BLOCK = 128  # FlexAttention's default block size


@dataclass
class Layout:
    input_ids: Tensor  # [R, L]
    position_ids: Tensor  # [R, L] (0 at padding)
    document: Tensor  # [R, L]: the unit each position belongs to, PAD at padding
    segment: Tensor  # [R, L]: PROMPT, CHOSEN, REJECTED or PAD
    rows: Tensor  # [N] for every predicted completion token: its row,
    sources: Tensor  # [N] the position whose output predicts it,
    targets: Tensor  # [N] its token id,
    slots: Tensor  # [N] and its output: the batch row (of ``input_ids``) of its sequence

    @property
    def real_tokens(self) -> int:
        return int((self.segment != PAD).sum())

    @property
    def processed_tokens(self) -> int:
        return self.input_ids.numel()

    def allows(self, row: Tensor, query: Tensor, key: Tensor, pattern=None) -> Tensor:
        """Whether `query` may attend to `key` in `row` (broadcasting index tensors), with the layer's
        attention pattern (`fast_paths.AttentionPattern`; None: full) applied by position id."""
        return _attention_rule(self.document, self.segment, self.position_ids, row, query, key, pattern)

    def mask(self, pattern=None) -> Tensor:
        """The dense bool mask [R, 1, L, L]: True where a query (row) may attend to a key (column)."""
        R, L = self.input_ids.shape
        index = torch.arange(L, device=self.input_ids.device)
        rows = torch.arange(R, device=index.device)[:, None, None]
        return self.allows(rows, index[None, :, None], index[None, None, :], pattern)[:, None]

    def block_mask(self, pattern=None, block: int = FLEX_BLOCK):
        """The same rule as a FlexAttention `BlockMask`, its block tables computed one query block at a time
        (memory R × block × L), its `mask_mod` reading the per-position tables."""
        from torch.nn.attention.flex_attention import BlockMask

        R, L = self.input_ids.shape
        device = self.input_ids.device
        n = -(-L // block)
        index = torch.arange(L, device=device)
        rows = torch.arange(R, device=device)[:, None, None]
        partial_count = torch.zeros(R, 1, n, dtype=torch.int32, device=device)
        full_count = torch.zeros_like(partial_count)
        partial_index = torch.zeros(R, 1, n, n, dtype=torch.int32, device=device)
        full_index = torch.zeros_like(partial_index)
        for q in range(n):
            queries = index[q * block : (q + 1) * block]
            keys = index[: (q + 1) * block]  # causal: no key after the block's last query
            allowed = self.allows(rows, queries[None, :, None], keys[None, None, :], pattern)
            padded = torch.zeros(R, block, n * block, dtype=torch.bool, device=device)
            padded[:, : len(queries), : len(keys)] = allowed
            blocks = padded.view(R, block, n, block)
            valid = torch.zeros(block, n * block, dtype=torch.bool, device=device)
            valid[: len(queries), :L] = True
            valid = valid.view(block, n, block)
            anything = blocks.any(dim=(1, 3))  # [R, n]
            everything = (blocks | ~valid[None]).all(dim=(1, 3)) & anything
            for kind_mask, count, table in (
                (anything & ~everything, partial_count, partial_index),
                (everything, full_count, full_index),
            ):
                count[:, 0, q] = kind_mask.sum(-1)
                order = torch.argsort((~kind_mask).to(torch.int8), dim=-1, stable=True)  # chosen blocks first
                table[:, 0, q] = order.to(torch.int32)
        # the kernels evaluate mask_mod up to the last block's end: tables padded to it (as padding)
        extra = n * block - L
        document, segment = (torch.nn.functional.pad(t, (0, extra), value=PAD) for t in (self.document, self.segment))
        positions = torch.nn.functional.pad(self.position_ids, (0, extra))

        def mask_mod(b, h, q_idx, kv_idx):
            return _attention_rule(document, segment, positions, b, q_idx, kv_idx, pattern)

        return BlockMask.from_kv_blocks(
            partial_count,
            partial_index,
            full_count,
            full_index,
            BLOCK_SIZE=block,
            mask_mod=mask_mod,
            seq_lengths=(L, L),
        )


def _attention_rule(document: Tensor, segment: Tensor, positions: Tensor, row, query, key, pattern) -> Tensor:
    """The one rule, for the dense mask and the block mask's `mask_mod` alike: the same document, causal,
    a completion's token sees the prompt and its own completion only, within the pattern's window by position
    id; padding sees itself (never a row of -inf, NaN). Out-of-place operations, so FlexAttention can trace it."""
    own = document[row, query]
    allowed = (own == document[row, key]) & (own != PAD) & (key <= query)
    key_segment = segment[row, key]
    allowed = allowed & ((key_segment == PROMPT) | (key_segment == segment[row, query]))
    if pattern is not None and pattern.kind != "full":
        allowed = allowed & pattern.allows(positions[row, query], positions[row, key])
    return allowed | (query == key)


def pack_pairs(batch: dict[str, Tensor], pad_token_id: int = 0) -> Layout:
    """The shared-prompt layout, one pair per row (the documented batch: chosen rows first, then rejected)."""
    return layout(batch, shared=True, packing=RowPacking.unit_per_row(), pad_token_id=pad_token_id)


def groups(batch: dict[str, Tensor]) -> list[tuple[int, int, list[tuple[int, int]]]]:
    """The batch's prompts and their completions: (row holding the prompt, prompt length, [(row, completion
    length), ...]) per pair (its chosen row, then its rejected) or per list (its rows in order)."""
    P = batch["prompt_lengths"].tolist()
    if "list_index" in batch:
        owners, lengths = batch["list_index"].tolist(), batch["completion_lengths"].tolist()
        members: list[list[tuple[int, int]]] = [[] for _ in P]
        for row, (owner, length) in enumerate(zip(owners, lengths)):
            members[owner].append((row, length))
        return [(rows[0][0], P[b], rows) for b, rows in enumerate(members)]
    B = len(P)
    C, R = batch["chosen_lengths"].tolist(), batch["rejected_lengths"].tolist()
    return [(i, P[i], [(i, C[i]), (B + i, R[i])]) for i in range(B)]


def layout(batch: dict[str, Tensor], shared: bool, packing: RowPacking, pad_token_id: int = 0) -> Layout:
    """Place the batch's sequences in rows.

    Args:
        batch: the collated batch of pairs (``input_ids`` [2B, T], chosen rows first) or of lists (one row per
            completion, ``list_index`` naming its list); see `preflight.datamodules.collate`.
        shared: one unit ``[prompt, completion 1, ..., completion K]`` per pair or list; else each
            ``[prompt, completion]`` its own unit.
        packing: how the units go into rows (`RowPacking`).
        pad_token_id: the id at padding positions.
    """
    ids = batch["input_ids"]
    units = []  # (token ids, position ids, segments, [(completion start, length, slot)])
    for prompt_row, p, completions in groups(batch):
        prompt = ids[prompt_row, :p]
        if shared:
            tokens, positions, segments, spans = [prompt], list(range(p)), [PROMPT] * p, []
            for k, (row, length) in enumerate(completions, start=1):
                spans.append((len(segments), length, row))
                tokens.append(ids[row, p : p + length])
                positions += range(p, p + length)
                segments += [k] * length
            units.append((torch.cat(tokens), positions, segments, spans))
        else:
            for row, length in completions:
                units.append(
                    (
                        torch.cat([prompt, ids[row, p : p + length]]),
                        list(range(p + length)),
                        [PROMPT] * p + [CHOSEN] * length,
                        [(p, length, row)],
                    )
                )
    placed = fill_rows([len(u[0]) for u in units], packing)
    rows_count = max(row for row, _ in placed) + 1
    L = max(start + len(u[0]) for u, (_, start) in zip(units, placed))
    device = ids.device
    input_ids = torch.full((rows_count, L), pad_token_id, dtype=ids.dtype, device=device)
    position_ids = torch.zeros((rows_count, L), dtype=torch.long, device=device)
    document = torch.full((rows_count, L), PAD, dtype=torch.long, device=device)
    segment = torch.full((rows_count, L), PAD, dtype=torch.long, device=device)
    rows, sources, targets, slots = [], [], [], []
    for unit_index, ((tokens, positions, segments, completions), (row, start)) in enumerate(zip(units, placed)):
        end = start + len(tokens)
        input_ids[row, start:end] = tokens
        position_ids[row, start:end] = torch.tensor(positions, device=device)
        segment[row, start:end] = torch.tensor(segments, device=device)
        document[row, start:end] = unit_index
        prompt_end = start + segments.count(PROMPT)
        for offset, length, slot in completions:
            first = start + offset
            # the first completion token is predicted from the last prompt position, the others from their own
            sources.append(
                torch.cat(
                    [
                        torch.tensor([prompt_end - 1], device=device),
                        torch.arange(first, first + length - 1, device=device),
                    ]
                )
            )
            targets.append(tokens[offset : offset + length])
            rows.append(torch.full((length,), row, dtype=torch.long, device=device))
            slots.append(torch.full((length,), slot, dtype=torch.long, device=device))
    return Layout(
        input_ids,
        position_ids,
        document,
        segment,
        torch.cat(rows),
        torch.cat(sources),
        torch.cat(targets),
        torch.cat(slots),
    )


def fill_rows(lengths: list[int], packing: RowPacking) -> list[tuple[int, int]]:
    """(row, start) of each unit: one per row, all in one row, or rows of at most the budget's tokens, longest
    unit first into the emptiest row it fits (a unit longer than the budget gets its own row), so the rows come
    out of similar lengths and the padding to the longest row stays small."""
    if packing.kind == "unit_per_row":
        return [(i, 0) for i in range(len(lengths))]
    if packing.kind == "one_row":
        starts = [0]
        for n in lengths[:-1]:
            starts.append(starts[-1] + n)
        return [(0, start) for start in starts]
    tokens_per_row = packing.tokens
    used: list[int] = [0] * max(1, -(-sum(lengths) // tokens_per_row))
    placed: dict[int, tuple[int, int]] = {}
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        fits = [r for r in range(len(used)) if used[r] + lengths[i] <= tokens_per_row or used[r] == 0]
        row = min(fits, key=lambda r: used[r]) if fits else len(used)
        if row == len(used):
            used.append(0)
        placed[i] = (row, used[row])
        used[row] += lengths[i]
    return [placed[i] for i in range(len(lengths))]


def additive_mask(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """The bool mask as eager attention wants it: 0 where allowed, the dtype's minimum elsewhere."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, torch.finfo(dtype).min)
