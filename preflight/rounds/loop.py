"""The rounds of `preflight iterate`: sample (`samples`), train by an ordinary ``preflight fit`` on the round's list
file, export the round's policy, evaluate it against the initial policy; resumable at the round and step where a
run stopped.

    out/metrics.csv                      one row per round (also printed, one line each)
    out/rounds/0/policy/                 π_0, the initial policy (a Hugging Face folder)
    out/rounds/0/eval.jsonl              π_0's samples of the evaluation prompts
    out/rounds/r/completions.jsonl       round r's lists, sampled from π_{r−1}
    out/rounds/r/fit.yaml                round r's fit config (``preflight fit --config`` runs it as is)
    out/rounds/r/train/version_N/        round r's run folder (metrics.csv, checkpoints)
    out/rounds/r/policy/                 π_r
    out/rounds/r/eval.jsonl, round.json  π_r's evaluation samples; the round's numbers
"""

from __future__ import annotations

import copy
import csv
import gc
import json
import time
from pathlib import Path
from typing import Any, Callable

import torch
import yaml

from ..datamodules import PreferenceDataModule
from ..export import export_module
from ..train import fit, validate_fit_config
from ..generation.scoring import Reward
from ..generation.tables import mean, win
from .prompts import read_prompts, round_prompts
from .record import check_or_write, initial_record, round_record
from ..logps import LogpsSettings, RowPacking
from ..policy import Policy
from .samples import SamplingContext, sample_eval, sample_round, sequence_logps
from .settings import IterateSettings

EVAL_SEED_OFFSET = 1_000_000  # the evaluation prompts' sampler seed, apart from every round's
#: the fit config's `PreferenceModule` settings that are `LogpsSettings` fields: a `Policy` computes log-probs alike
LOGPS_KEYS = ("fused_lm_head", "shared_prompt", "padding_free", "dense_mask_max_length", "lm_head_chunk_size")
#: data settings that change how text becomes ids (the rest are the fit's business)
TOKENIZER_KEYS = ("tokenizer", "chat_template", "trust_remote_code")
METRICS = (
    "round",
    "prompts",
    "samples",
    "sample_reward",
    "lists",
    "steps",
    "reward",
    "win_rate",
    "kl",
    "length",
    "seconds",
)


def run_rounds(settings: IterateSettings, log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) every round; returns the rows of ``metrics.csv``."""
    settings.check()
    out = Path(settings.out)
    prompts = read_prompts(settings.prompts)
    data = PreferenceDataModule(**{k: v for k, v in settings.data_args().items() if k in TOKENIZER_KEYS})
    reward = Reward(settings.reward, settings.reward_model)
    reward.load()
    device = torch.device(settings.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    reward.prepare(device, data.tokenizer.pad_token_id)
    context = SamplingContext(
        data.tokenizer, reward, device, settings.max_new_tokens, settings.temperature, settings.top_p
    )
    check_fit_config(settings, out)
    check_or_write(out / "rounds" / "0", initial_record(settings, prompts), 0, out)
    for r in range(1, settings.rounds + 1):  # every round an earlier run started, before any work
        if (out / "rounds" / str(r)).is_dir():
            indices = round_prompts(len(prompts), r, settings.prompts_per_round)
            check_or_write(out / "rounds" / str(r), round_record(settings, r, prompts, indices), r, out)
    initial = out / "rounds" / "0" / "policy"
    if not (initial / "config.json").is_file():
        write_initial_policy(settings, context, initial)
        free_memory()
    base_eval = evaluation_of(initial, context, prompts, settings, out / "rounds" / "0" / "eval.jsonl")
    rows = []
    for r in range(1, settings.rounds + 1):
        rows.append(one_round(r, settings, context, prompts, base_eval, out, log))
        write_metrics(out / "metrics.csv", rows)
    return rows


def write_initial_policy(settings: IterateSettings, context: SamplingContext, initial: Path) -> None:
    spec = settings.model_args().get("model", "assets/tiny-llama")
    load_policy(settings, spec, context, initial=True).export(initial)


def check_fit_config(settings: IterateSettings, out: Path) -> None:
    """Round 1's fit config parsed as ``preflight fit`` parses it, without building anything: a ``--fit.*`` key or
    value that cannot apply is refused before any sampling."""
    import tempfile

    initial = out / "rounds" / "0" / "policy"
    config = fit_config(1, settings, out / "rounds" / "1", initial, initial)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        validate_fit_config(path, where="fit")


def one_round(
    r: int, settings: IterateSettings, context: SamplingContext, prompts: list[Any], base_eval, out: Path, log
) -> dict:
    folder = out / "rounds" / str(r)
    record = folder / "round.json"
    if record.is_file():
        row = json.loads(record.read_text())
        log(round_line(row, settings, resumed=True))
        return row
    started = time.perf_counter()
    previous = out / "rounds" / str(r - 1) / "policy"
    row: dict[str, Any] = {"round": r}
    indices = round_prompts(len(prompts), r, settings.prompts_per_round)
    check_or_write(folder, round_record(settings, r, prompts, indices), r, out)
    done = folder / "samples.json"
    if done.is_file():
        row.update(json.loads(done.read_text()))
    else:
        row.update(sampled_round(r, settings, context, prompts, indices, previous, folder))
        done.write_text(json.dumps(row))
        free_memory()  # the sampling policy is gone before the round's fit starts
        log(
            f"preflight: iterate: round {r}: sampled {row['samples']} completions of {row['prompts']} prompts from "
            f"{'the initial policy' if r == 1 else f'round {r - 1} policy'} (mean reward {row['sample_reward']:.3f}); "
            f"{row['lists']} lists written to {folder / 'completions.jsonl'}"
            + (f", {row['single']} prompts with fewer than 2 distinct completions left out" if row["single"] else "")
        )
    trained = train_round(r, settings, folder, previous, out / "rounds" / "0" / "policy", context)
    free_memory()  # the fit's trainer, module and optimizer state
    row["steps"] = trained
    if settings.eval_prompts:
        initial = out / "rounds" / "0" / "policy"
        mine = evaluation_of(folder / "policy", context, prompts, settings, folder / "eval.jsonl", initial)
        row.update(compare(mine, base_eval))
    row["seconds"] = round(time.perf_counter() - started, 1)
    record.write_text(json.dumps(row))
    log(round_line(row, settings))
    return row


def round_line(row: dict, settings: IterateSettings, resumed: bool = False) -> str:
    """The round's printed line: its samples, and its policy against the initial one."""
    text = (
        f"preflight: iterate: round {row['round']}/{settings.rounds}{' (done before)' if resumed else ''}: "
        f"{row['samples']} samples, mean reward {row['sample_reward']:.3f}; trained to step {row['steps']}"
    )
    if "reward" in row:
        text += (
            f"; its policy on {settings.eval_prompts} evaluation prompts: reward {row['reward']:.3f}, win rate "
            f"against round 0 {row['win_rate']:.3f}, KL to the initial policy {row['kl']:.3f}"
        )
    return text + f" ({row['seconds']} s)"


def load_policy(settings: IterateSettings, spec: str, context: SamplingContext, initial: bool = False) -> Policy:
    """The policy at `spec` as a `Policy` (no training module, no reference), with the fit config's load and log-prob
    path settings, in eval mode on the sampling device."""
    args = settings.model_args()
    return Policy.load(
        spec,
        context.tokenizer,
        device=context.device,
        logps=LogpsSettings(
            **{k: args[k] for k in LOGPS_KEYS if k in args},
            packing=RowPacking.from_max_tokens(args.get("max_tokens_per_row")),
        ),
        trust_remote_code=bool(args.get("trust_remote_code", False)),
        init_seed=int(args.get("init_seed", 0)) if initial else 0,
        dtype=args.get("model_dtype"),
        attn_implementation=args.get("attn_implementation"),
    )


def free_memory() -> None:
    """Collect what the caller no longer references (a model in a returned function's frame, a trainer's cycles) and
    hand the GPU's cached blocks back. Models are held only in the functions that use them, so returning frees them."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def sampled_round(r, settings: IterateSettings, context, prompts, indices, previous: Path, folder: Path) -> dict:
    """Round r's samples from π_{r−1}, which is loaded here and gone when this returns."""
    policy = load_policy(settings, str(previous), context)
    return sample_round(
        policy,
        context,
        prompts,
        indices,
        r,
        settings.seed,
        settings.samples_per_prompt,
        settings.sample_batch,
        folder,
    )


def evaluation_of(
    policy: Path, context, prompts, settings: IterateSettings, path: Path, initial: Path | None = None
) -> list[dict]:
    """The samples of the evaluation prompts by the policy at `policy` (read back when `path` holds them), with the
    log-prob of each under the initial policy at `initial` (itself when None), for the KL estimate. Each model is
    loaded for this alone."""
    if not settings.eval_prompts:
        return []
    if path.is_file():
        return [json.loads(line) for line in path.read_text().splitlines()]
    sampler = load_policy(settings, str(policy), context)
    rows = sample_eval(sampler, context, prompts, settings.eval_prompts, settings.seed + EVAL_SEED_OFFSET)
    if initial is not None:
        sampler = None
        free_memory()
        sampler = load_policy(settings, str(initial), context)
    values = sequence_logps(sampler, context, [r["prompt_ids"] for r in rows], [r["completion_ids"] for r in rows])
    for row, value in zip(rows, values):
        row["initial_logp"] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return rows


def compare(mine: list[dict], base: list[dict]) -> dict:
    """Mean reward and length of the policy's evaluation samples, their win rate against π_0's samples of the same
    prompts (ties one half), and KL(π ‖ π_0) ≈ mean of log π(y|x) − log π_0(y|x) over them."""
    by_index = {row["index"]: row for row in base}
    return {
        "reward": mean([r["reward"] for r in mine]),
        "win_rate": mean([win(r["reward"], by_index[r["index"]]["reward"]) for r in mine]),
        "kl": mean([r["logp"] - r["initial_logp"] for r in mine]),
        "length": mean([len(r["completion_ids"]) for r in mine]),
    }


def fit_config(r: int, settings: IterateSettings, folder: Path, previous: Path, initial: Path) -> dict:
    """Round r's ``preflight fit`` config: the user's, with π_{r−1} as the policy, the reference of
    ``settings.reference``, the round's lists as the training data, a `ModelCheckpoint` that keeps ``last.ckpt``."""
    config = copy.deepcopy(settings.fit)
    model = config.get("model") or {}
    model = {"class_path": model.get("class_path", "preflight.PreferenceModule"), "init_args": settings.model_args()}
    args = model["init_args"]
    args["model"] = str(previous.absolute())
    reference = initial if settings.reference == "initial" else previous
    if args.get("peft") and settings.reference == "previous":
        args["reference"] = "adapter"  # the adapter-disabled policy is π_{r−1} itself: no second copy
        args.pop("reference_model", None)
    else:
        args["reference_model"] = str(reference.absolute())
        if args.get("reference") in (None, "auto", "adapter"):
            args["reference"] = "copy"
    config["model"] = model
    data = config.setdefault("data", {})
    data["train"] = str((folder / "completions.jsonl").absolute())
    data["pairs_from_lists"] = settings.pairs_from_lists
    trainer = config.setdefault("trainer", {})
    trainer["default_root_dir"] = str(folder.absolute())
    trainer.setdefault("devices", 1)
    callbacks = list(trainer.get("callbacks") or [])
    callbacks.append(
        {
            "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
            "init_args": {
                "dirpath": str((folder / "checkpoints").absolute()),
                "save_last": True,
                "every_n_train_steps": settings.checkpoint_every_n_steps,
            },
        }
    )
    trainer["callbacks"] = callbacks
    return config


def train_round(
    r: int, settings: IterateSettings, folder: Path, previous: Path, initial: Path, context: SamplingContext
) -> int:
    """Round r's fit, through `preflight.train.fit` as ``preflight fit`` runs it (resumed from its ``last.ckpt``
    where there is one), and its policy exported to ``folder/policy``; returns the step it trained to."""
    policy = folder / "policy"
    if (policy / "config.json").is_file():
        return int(json.loads((folder / "trained.json").read_text())["steps"])
    path = folder / "fit.yaml"
    path.write_text(yaml.safe_dump(fit_config(r, settings, folder, previous, initial), sort_keys=False))
    result = fit(["--config", str(path), "--run_name", "train", "--ckpt_path", "last"])
    export_module(result.module, policy, context.tokenizer)
    (folder / "trained.json").write_text(json.dumps({"steps": result.steps}))
    return result.steps


def write_metrics(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METRICS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
