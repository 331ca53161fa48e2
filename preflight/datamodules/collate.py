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

A module runs one concatenated forward over ``input_ids``, or a shared-prompt forward by
slicing ``input_ids[i, :prompt_lengths[i]]`` once per pair.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .tokenization import TokenizedPair


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
