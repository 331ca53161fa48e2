"""Rows of several sequences (`packing.layout`): what each row holds, the attention rule as a dense mask
and as a FlexAttention block mask, against masks built by hand from the sequences."""

import pytest
import torch
from torch.nn.attention.flex_attention import create_mask

from preflight.logps.plan import AttentionPattern
from preflight.logps.rows import layout
from preflight.logps.settings import RowPacking
from tests.helpers import batch_of, random_pairs

BUDGETS = [RowPacking.unit_per_row(), RowPacking.one_row(), RowPacking.budget(30)]


def units(pairs, shared):
    """(tokens, positions, kind of each token) of every unit, in order, built from the pairs directly."""
    out = []
    for p in pairs:
        P, c, r = p.prompt_ids, p.chosen_ids, p.rejected_ids
        if shared:
            out.append(
                (
                    P + c + r,
                    list(range(len(P) + len(c))) + list(range(len(P), len(P) + len(r))),
                    "p" * len(P) + "c" * len(c) + "r" * len(r),
                )
            )
        else:
            out += [
                (P + c, list(range(len(P + c))), "p" * len(P) + "c" * len(c)),
                (P + r, list(range(len(P + r))), "p" * len(P) + "c" * len(r)),
            ]
    return out


def hand_mask(pairs, shared, rows, pattern=None):
    """The mask by a loop over the units as `rows` placed them: a query sees the earlier tokens of its own
    unit, a rejected token never a chosen one, within the window by position id; padding sees itself."""
    R, L = rows.input_ids.shape
    mask = torch.eye(L, dtype=torch.bool).repeat(R, 1, 1)
    start = {}
    for u, (tokens, positions, kinds) in enumerate(units(pairs, shared)):
        row, col = (rows.document == u).nonzero()[0].tolist()
        start[u] = (row, col)
        for q in range(len(tokens)):
            for k in range(q + 1):
                seen = not (kinds[q] == "r" and kinds[k] == "c")
                if pattern is not None:
                    seen &= bool(pattern.allows(torch.tensor(positions[q]), torch.tensor(positions[k])))
                mask[row, col + q, col + k] = seen
    return mask


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("budget", BUDGETS)
def test_rows_hold_each_unit_once_with_its_positions(shared, budget):
    pairs = random_pairs(5, seed=21)
    rows = layout(batch_of(pairs), shared, budget)
    real = 0
    for u, (tokens, positions, _) in enumerate(units(pairs, shared)):
        row, col = (rows.document == u).nonzero()[0].tolist()
        assert (rows.document == u).sum() == len(tokens)
        assert rows.input_ids[row, col : col + len(tokens)].tolist() == tokens
        assert rows.position_ids[row, col : col + len(tokens)].tolist() == positions
        real += len(tokens)
    lengths = [len(t) for t, _, _ in units(pairs, shared)]
    count = rows.input_ids.shape[0]
    assert rows.real_tokens == real and rows.processed_tokens == count * rows.input_ids.shape[1]
    if budget.kind == "unit_per_row":
        assert count == len(lengths)
    elif budget.kind == "one_row":
        assert count == 1 and rows.real_tokens == rows.processed_tokens  # one row: no padding at all
    else:
        in_row = [(rows.document[r] >= 0).sum().item() for r in range(count)]
        units_in_row = [len(set(rows.document[r].tolist()) - {-1}) for r in range(count)]
        assert all(
            n <= budget.tokens or k == 1 for n, k in zip(in_row, units_in_row)
        )  # a long unit alone, else ≤ budget
        assert count < len(lengths) and sum(in_row) == real  # several units share rows


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize(
    "pattern",
    [None, AttentionPattern("sliding", 4), AttentionPattern("chunked", 5)],
    ids=["full", "sliding", "chunked"],
)
def test_dense_and_block_masks_equal_the_hand_built_mask(shared, budget, pattern):
    pairs = random_pairs(5, seed=22)
    rows = layout(batch_of(pairs), shared, budget)
    expected = hand_mask(pairs, shared, rows, pattern)
    assert torch.equal(rows.mask(pattern)[:, 0], expected)
    block = 8
    block_mask = rows.block_mask(pattern, block=block)
    R, L = rows.input_ids.shape
    assert torch.equal(create_mask(block_mask.mask_mod, R, 1, L, L, device="cpu")[:, 0], expected)
    # block tables: a block is listed as full exactly when all its entries are allowed, as partial when some are
    n = -(-L // block)
    padded = torch.ones(R, n * block, n * block, dtype=torch.bool)
    padded[:, :L, :L] = expected
    some = torch.zeros_like(padded)
    some[:, :L, :L] = expected
    every, anything = (
        padded.view(R, n, block, n, block).all(dim=(2, 4)),
        some.view(R, n, block, n, block).any(dim=(2, 4)),
    )
    for r in range(R):
        for q in range(n):
            full = set(block_mask.full_kv_indices[r, 0, q, : block_mask.full_kv_num_blocks[r, 0, q]].tolist())
            partial = set(block_mask.kv_indices[r, 0, q, : block_mask.kv_num_blocks[r, 0, q]].tolist())
            assert full == {k for k in range(n) if every[r, q, k] and anything[r, q, k]}
            assert partial == {k for k in range(n) if anything[r, q, k] and not every[r, q, k]}
