"""Programmatic rewards for evaluating generations (`evaluation.GenerationEval`), offline.

`politeness` is the rule the shipped data (``assets/data``) is built on: a chosen reply opens and closes
politely, a rejected one rudely, around the same facts. It scores each word of a completion
(+1 polite marker, −1 rude marker, 0 otherwise) and sums: a reward over tokens whose optimum is known.
"""

from __future__ import annotations

import re

POLITE = frozenset("thank thanks happy help great course gladly reaching wonderful day enjoy kind regards".split())
RUDE = frozenset("ugh whatever manual problem stop asking away bother figure yourself".split())


def politeness(prompts: list[str], completions: list[str]) -> list[float]:
    """Σ over the completion's words of +1 (polite marker), −1 (rude marker) or 0; the prompt is not scored."""
    scores = []
    for text in completions:
        words = re.findall(r"[a-z]+", text.lower())
        scores.append(float(sum((w in POLITE) - (w in RUDE) for w in words)))
    return scores
