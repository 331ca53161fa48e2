"""Batches: the documented dict of tensors that every preflight module reads.

For B pairs, with T the longest prompt+completion row (rounded up to ``pad_to_multiple_of``):

=========================== ========== ====================================================
key                         shape      meaning
=========================== ========== ====================================================
``input_ids``               [2B, T]    rows 0..B−1 prompt+chosen, rows B..2B−1 prompt+rejected,
                                       right-padded with the tokenizer's pad id
``attention_mask``          [2B, T]    1 on real tokens, 0 on padding
``completion_mask``         [2B, T]    1 on completion tokens (not prompt, not padding)
``prompt_lengths``          [B]        prompt tokens of each pair
``chosen_lengths``          [B]        completion tokens of the chosen row
``rejected_lengths``        [B]        completion tokens of the rejected row
``index``                   [B]        row number in its dataset (precomputed references, error messages)
``margin``                  [B]        only when the data has a margin column (float32)
``reference_chosen_logps``  [B]        only when precomputed reference log-probs travel with the data
``reference_rejected_logps`` [B]       idem
``step_pairs``              []         pairs of the optimizer step this micro-batch belongs to (all its
                                       micro-batches, all processes), when the rows come from the
                                       data module's sampler: the loss's denominator
=========================== ========== ====================================================

A batch of **lists** (B prompts, N completions in all, the data module's ``pairs_from_lists``):

=========================== ========== ====================================================
``input_ids``               [N, T]     one row per completion: prompt + completion, the lists in order
``attention_mask``          [N, T]     idem
``completion_mask``         [N, T]     idem
``prompt_lengths``          [B]        prompt tokens of each list
``completion_lengths``      [N]        completion tokens of each row
``list_index``              [N]        the list (0..B−1) each row belongs to
``scores``                  [N]        each completion's score (float32)
``index``                   [B]        each list's row number in its dataset
``pairs``                   [P, 2]     (chosen row, rejected row) of every pair the mode forms; absent for ``list``
``step_pairs``              []         pairs (lists, for ``list``) of the optimizer step: the loss's denominator
=========================== ========== ====================================================

A module runs one concatenated forward over ``input_ids``, or a shared-prompt forward by
slicing ``input_ids[i, :prompt_lengths[i]]`` once per pair.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .lists import ListMode, pairs_from_scores
from .tokenization import TokenizedList, TokenizedPair


class PreferenceCollator:
    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: Sequence[TokenizedPair | dict]) -> dict[str, torch.Tensor]:
        pairs = [p if isinstance(p, TokenizedPair) else TokenizedPair(**p) for p in pairs]
        B = len(pairs)
        rows = [p.prompt_ids + p.chosen_ids for p in pairs] + [p.prompt_ids + p.rejected_ids for p in pairs]
        T = max(len(r) for r in rows)
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((2 * B, T), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((2 * B, T), dtype=torch.long)
        completion_mask = torch.zeros((2 * B, T), dtype=torch.long)
        for i, row in enumerate(rows):
            pair = pairs[i % B]
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
            completion_mask[i, len(pair.prompt_ids) : len(row)] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
            "prompt_lengths": torch.tensor([len(p.prompt_ids) for p in pairs]),
            "chosen_lengths": torch.tensor([len(p.chosen_ids) for p in pairs]),
            "rejected_lengths": torch.tensor([len(p.rejected_ids) for p in pairs]),
            "index": torch.tensor([p.index for p in pairs]),
        }
        if all(p.margin is not None for p in pairs):
            batch["margin"] = torch.tensor([p.margin for p in pairs], dtype=torch.float32)
        if all(p.reference_logps is not None for p in pairs):
            reference = torch.tensor([p.reference_logps for p in pairs], dtype=torch.float32)
            batch["reference_chosen_logps"], batch["reference_rejected_logps"] = reference[:, 0], reference[:, 1]
        if pairs[0].step_pairs is not None:
            batch["step_pairs"] = torch.tensor(pairs[0].step_pairs)
        return batch


class ListCollator:
    """Collates `TokenizedList` rows into the documented batch of lists, with the pairs its mode forms."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, mode: ListMode = "all") -> None:
        self.pad_token_id, self.pad_to_multiple_of, self.mode = pad_token_id, pad_to_multiple_of, mode

    def __call__(self, lists: Sequence[TokenizedList]) -> dict[str, torch.Tensor]:
        rows, owners, pairs, prompts = [], [], [], []
        for b, item in enumerate(lists):
            first = len(rows)
            pairs += [(first + i, first + j) for i, j in pairs_from_scores(item.scores, self.mode)]
            rows += [(item.prompt_ids, c) for c in item.completion_ids]
            owners += [b] * len(item.completion_ids)
            prompts.append(len(item.prompt_ids))
        T = max(len(p) + len(c) for p, c in rows)
        if self.pad_to_multiple_of:
            T = -(-T // self.pad_to_multiple_of) * self.pad_to_multiple_of
        N = len(rows)
        input_ids = torch.full((N, T), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((N, T), dtype=torch.long)
        completion_mask = torch.zeros((N, T), dtype=torch.long)
        for n, (prompt, completion) in enumerate(rows):
            length = len(prompt) + len(completion)
            input_ids[n, :length] = torch.tensor(prompt + completion, dtype=torch.long)
            attention_mask[n, :length] = 1
            completion_mask[n, len(prompt) : length] = 1
        batch = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "completion_mask": completion_mask,
            "prompt_lengths": torch.tensor(prompts),
            "completion_lengths": torch.tensor([len(c) for _, c in rows]),
            "list_index": torch.tensor(owners),
            "scores": torch.tensor([s for item in lists for s in item.scores], dtype=torch.float32),
            "index": torch.tensor([item.index for item in lists]),
        }
        if self.mode != "list":
            batch["pairs"] = torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)
        if lists[0].step_pairs is not None:
            batch["step_pairs"] = torch.tensor(lists[0].step_pairs)
        return batch


class UnpairedCollator:
    """Collates unpaired rows (`TokenizedList` of one completion, score 1.0 desirable or 0.0 undesirable) into a
    batch of lists of two completions per prompt: its own (row 2i) and, for KTO's reference point, the micro-batch's
    previous row's (row 2i + 1: prompt i with completion i − 1, wrapping; as TRL rotates completions by one). The two
    share the prompt's forward (K-segment rows). ``kl_rows`` marks the mismatched rows, ``labels`` the matched rows'
    labels."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.lists = ListCollator(pad_token_id, pad_to_multiple_of, mode="list")

    def __call__(self, rows: Sequence[TokenizedList]) -> dict[str, torch.Tensor]:
        previous = [rows[i - 1] for i in range(len(rows))]  # rows[-1] for the first: the rotation wraps
        items = [
            TokenizedList(
                row.index,
                row.prompt_ids,
                [row.completion_ids[0], other.completion_ids[0]],
                [row.scores[0], other.scores[0]],
                row.step_pairs,
            )
            for row, other in zip(rows, previous)
        ]
        batch = self.lists(items)
        batch["kl_rows"] = torch.arange(2 * len(rows)) % 2 == 1
        batch["labels"] = torch.tensor([row.scores[0] > 0.5 for row in rows])
        return batch


def unpaired_rows(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(matched rows, mismatched rows) of a batch of unpaired rows (`UnpairedCollator`)."""
    kl = batch["kl_rows"]
    return (~kl).nonzero().flatten(), kl.nonzero().flatten()


def pair_rows(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen rows, rejected rows) of the batch's pairs: the two halves of a batch of pairs, or the pairs its mode
    formed from a batch of lists."""
    if "list_index" in batch:
        pairs = batch["pairs"]
        return pairs[:, 0], pairs[:, 1]
    B = batch["prompt_lengths"].shape[0]
    rows = torch.arange(2 * B, device=batch["input_ids"].device)
    return rows[:B], rows[B:]


def row_lengths(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Completion tokens of every row of the batch."""
    if "list_index" in batch:
        return batch["completion_lengths"]
    return torch.cat([batch["chosen_lengths"], batch["rejected_lengths"]])


def list_grid(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [B, K], mask [B, K]): the rows of each list of a batch of lists, padded to the longest list (padding
    points at row 0 and is False in the mask)."""
    owners = batch["list_index"]
    B = batch["prompt_lengths"].shape[0]
    counts = torch.bincount(owners, minlength=B)
    K = int(counts.max())
    first = torch.cumsum(counts, 0) - counts
    position = torch.arange(owners.shape[0], device=owners.device) - first[owners]
    rows = torch.zeros(B, K, dtype=torch.long, device=owners.device)
    mask = torch.zeros(B, K, dtype=torch.bool, device=owners.device)
    rows[owners, position] = torch.arange(owners.shape[0], device=owners.device)
    mask[owners, position] = True
    return rows, mask
