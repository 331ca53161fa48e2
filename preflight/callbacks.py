"""The callbacks a user adds to a fit, from the command's config (``trainer.callbacks``) or a plain `Trainer`:

- `GenerationEval`: samples from the policy at each validation, scores the samples, logs reward, win rate and KL;
- `HFExport`: writes the trained model as a Hugging Face folder when the fit ends;
- `MovingReference`: TR-DPO's soft or hard reference updates;
- `PrecomputedReference`: the reference's log-probs computed once before training (``reference: precomputed``);
- `SaveOnInterrupt`: SIGTERM or SIGINT finish the batch, save a resumable ``last.ckpt`` and stop;
- `SaveFinalWeights`, `ValidateFinalWeights`: ``last.ckpt`` at the final step, and a validation of the final weights.

The `preflight` command adds the last three to every fit. Each is imported when first named here, so importing this
module loads none of them.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "GenerationEval": "preflight.evaluation",
    "HFExport": "preflight.export",
    "MovingReference": "preflight.moving_reference",
    "PrecomputedReference": "preflight.reference",
    "SaveOnInterrupt": "preflight.interrupts",
    "Interrupted": "preflight.interrupts",
    "SaveFinalWeights": "preflight.final_weights",
    "ValidateFinalWeights": "preflight.final_weights",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
