"""The log-prob engine: completion log-probs of a causal LM, in float32, through the fastest exact paths.

- `settings`: what a user sets (`LogpsSettings`, `RowPacking`);
- `plan`: which paths are exact for a model, decided from its code and configuration (`decide_path`);
- `rows`: rows that hold several sequences (a shared prompt, padding-free packing) and their attention rule;
- `head`: the lm_head at completion positions only, in chunks recomputed in backward;
- `engine`: `CompletionLogps`, which plans once per model and runs a batch through the plan.
"""

from .engine import CompletionLogps
from .plan import FastPathError, LogpsPath, decide_path
from .settings import LogpsSettings, RowPacking

__all__ = ["CompletionLogps", "FastPathError", "LogpsPath", "LogpsSettings", "RowPacking", "decide_path"]
