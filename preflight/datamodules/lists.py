"""From a scored list of completions to what a loss needs: pairs (chosen, rejected), or the whole list.

``pairs_from_lists`` (a data-module setting) says how:

- ``all``: every two completions with different scores, the higher-scored one chosen;
- ``best_worst``: the best against the worst (the first of each when several share the top or bottom score),
  as best-of-N and iterative DPO recipes keep them;
- ``consecutive``: completions of adjacent ranks, tied completions sharing a rank (each of rank r against each of
  rank r + 1);
- ``list``: the whole list, for list-wise losses (Plackett–Luce, LiPO, InfoNCA, softmax DPO).

Ties never form a pair. A list whose scores are all equal carries no preference and is dropped when tokenized.
"""

from __future__ import annotations

from typing import Literal, Sequence

ListMode = Literal["all", "best_worst", "consecutive", "list"]
LIST_MODES = ("all", "best_worst", "consecutive", "list")


def pairs_from_scores(scores: Sequence[float], mode: ListMode) -> list[tuple[int, int]]:
    """(chosen, rejected) positions in the list for a pair mode; for ``list`` the list is one unit: no pairs."""
    K = len(scores)
    if mode == "all":
        return [(i, j) for i in range(K) for j in range(K) if scores[i] > scores[j]]
    if mode == "best_worst":
        best, worst = max(range(K), key=lambda i: scores[i]), min(range(K), key=lambda i: scores[i])
        return [(best, worst)] if scores[best] > scores[worst] else []
    if mode == "consecutive":
        levels = sorted(set(scores), reverse=True)
        ranks = [[i for i in range(K) if scores[i] == level] for level in levels]
        return [(i, j) for upper, lower in zip(ranks, ranks[1:]) for i in upper for j in lower]
    if mode == "list":
        return []
    raise ValueError(f"pairs_from_lists must be one of {', '.join(LIST_MODES)}; got {mode!r}")


def units_of(scores: Sequence[float], mode: ListMode) -> int:
    """What one list counts for in an optimizer step's denominator: its pairs, or 1 for a whole list."""
    return 1 if mode == "list" else len(pairs_from_scores(scores, mode))


def has_preference(scores: Sequence[float]) -> bool:
    """Whether the scores differ at all (an all-tied list forms no pair and ranks nothing)."""
    return max(scores) > min(scores)


def same_after_truncation(item) -> bool:
    """A tokenized row that cannot teach: a pair whose chosen and rejected ids are equal (truncation cut them to
    their common start), or a list where two completions with different scores have equal ids."""
    if hasattr(item, "chosen_ids"):
        return item.chosen_ids == item.rejected_ids
    seen: dict[tuple[int, ...], float] = {}
    for ids, score in zip(item.completion_ids, item.scores):
        if seen.setdefault(tuple(ids), score) != score:
            return True
    return False
