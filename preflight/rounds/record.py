"""What shaped each round of `preflight iterate`, recorded so that a rerun resumes only what it would have produced.

Round 0's record holds a content fingerprint of the initial model and the evaluation prompts; round r's holds the
settings its samples, scores and fit depend on, the reward's spec and a fingerprint of the round's prompts. A rerun
whose settings differ from a recorded round is refused in one line naming the key and the round. To start over,
remove the ``out`` folder or give another ``out``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..errors import PreflightConfigError
from ..shipped import shipped_path
from .settings import IterateSettings

RECORD = "settings.json"
#: the settings that decide what a round samples, scores, pairs and trains
SHAPING = (
    "samples_per_prompt",
    "prompts_per_round",
    "temperature",
    "top_p",
    "max_new_tokens",
    "seed",
    "reward",
    "reward_model",
    "pairs_from_lists",
    "reference",
)
#: trainer settings of the round's fit that change how it reports, not what it trains
REPORTING = (
    "callbacks",
    "enable_progress_bar",
    "enable_model_summary",
    "log_every_n_steps",
    "logger",
    "default_root_dir",
    "num_sanity_val_steps",
    "limit_val_batches",
    "val_check_interval",
    "check_val_every_n_epoch",
)
START_OVER = "to start over, remove {out} or give another --out"


class ChangedRoundError(PreflightConfigError):
    """A rerun of `preflight iterate` whose settings differ from what an earlier run of the same folder recorded."""


def fingerprint(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_fingerprint(spec: str) -> str:
    """A content hash of a local model folder's files (config, weights, tokenizer), or the spec itself for a Hub id."""
    folder = shipped_path(spec)
    if not Path(folder).is_dir():
        return f"id:{spec}"
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
        digest.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def initial_record(settings: IterateSettings, prompts: list[Any]) -> dict[str, Any]:
    """Round 0: the initial model (its content, and how it is built) and the evaluation prompts."""
    args = settings.model_args()
    model = args.get("model", "assets/tiny-llama")
    return {
        "model": model,
        "initial_model_content": model_fingerprint(model),
        "init_seed": args.get("init_seed"),
        "eval_prompts": settings.eval_prompts,
        "eval_prompts_content": fingerprint(prompts[: settings.eval_prompts]),
    }


def round_record(settings: IterateSettings, r: int, prompts: list[Any], indices: list[int]) -> dict[str, Any]:
    """Round r: the shaping settings, the round's prompts (by content) and its fit config (less its reporting)."""
    fit = json.loads(json.dumps(settings.fit, default=str))
    trainer = fit.get("trainer") or {}
    fit["trainer"] = {k: v for k, v in trainer.items() if k not in REPORTING}
    return {
        **{key: getattr(settings, key) for key in SHAPING},
        "prompts_content": fingerprint([prompts[i] for i in indices]),
        "fit": fit,
    }


#: what a round (0: the initial policy and its evaluation) has produced once it holds any of these
OUTPUTS = ("completions.partial.jsonl", "completions.jsonl", "samples.json", "checkpoints", "policy", "eval.jsonl")


def produced(folder: Path) -> bool:
    """Whether the round has produced anything a rerun would resume (a round stopped before its first sampled row,
    say by a reward that raised at once, has not)."""
    partial = folder / "completions.partial.jsonl"
    if partial.is_file() and partial.stat().st_size > 0:
        return True
    return any((folder / name).exists() for name in OUTPUTS if name != "completions.partial.jsonl")


def check_or_write(folder: Path, record: dict[str, Any], round_: int, out: Path) -> None:
    """Write `record` into the round's folder, or refuse it if the folder holds another and has produced something
    under it (one line naming the first key that differs and the round)."""
    path = folder / RECORD
    if not path.is_file() or not produced(folder):
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=2, sort_keys=True, default=str) + "\n")
        return
    recorded = json.loads(path.read_text())
    difference = first_difference(recorded, json.loads(json.dumps(record, default=str)))
    if difference is not None:
        key, theirs, ours = difference
        raise ChangedRoundError(
            f"{out}: round {round_} was run with {key}={theirs!r}, this config gives {ours!r}; a rerun resumes only "
            f"what it would have produced ({START_OVER.format(out=out)})"
        )


def first_difference(theirs: Any, ours: Any, key: str = "") -> tuple[str, Any, Any] | None:
    """(dotted key, recorded value, new value) of the first leaf that differs, or None."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        for sub in sorted(theirs.keys() | ours.keys()):
            found = first_difference(theirs.get(sub), ours.get(sub), f"{key}.{sub}" if key else sub)
            if found is not None:
                return found
        return None
    return None if theirs == ours else (key, theirs, ours)
