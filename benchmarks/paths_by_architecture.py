"""Which log-prob paths `auto` takes on each architecture of the test matrix, and why.

    python benchmarks/paths_by_architecture.py            # prints a markdown table

The decision reads each model's code and configuration (`preflight.logps.plan`); the
tiny random configs are those of `tests/architectures/tiny.py`, whose tests check every path
taken against a naive per-sequence computation.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
warnings.filterwarnings("ignore")

from preflight.logps.plan import decide_path  # noqa: E402
from tests.architectures.tiny import ARCHITECTURES, tiny_model  # noqa: E402


def main() -> None:
    print("| architecture | attention | fused lm_head | shared prompt |")
    print("| --- | --- | --- | --- |")
    for arch in ARCHITECTURES:
        for attention in ("sdpa", "eager"):
            try:
                model = tiny_model(arch, attention)
            except ValueError:
                continue  # this architecture has no such attention implementation
            path = decide_path(model, "auto", "auto")
            fused = f"{'on' if path.fused else 'off'} ({path.fused_reason})"
            shared = f"{'on' if path.shared else 'off'} ({path.shared_reason})"
            print(f"| {type(model).__name__} | {attention} | {fused} | {shared} |")


if __name__ == "__main__":
    main()
