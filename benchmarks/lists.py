"""K completions per prompt: one DPO epoch over all their pairs, exploded into pairs or as K-segment rows.

    pip install -e ".[bench]"
    python benchmarks/lists.py                    # K = 2, 4, 8; writes a table to stdout (merge into RESULTS.md)

For each K, the same prompts (150–400 tokens) with K completions each (about 200 tokens, distinct scores) are
trained with DPO over every pair of each list (K(K−1)/2 pairs per prompt), by four runners:

- ``pairs, plain``: the pairs exploded, preflight with every fast path off (each row prompt + completion);
- ``pairs, shared prompt``: the exploded pairs on today's shared-prompt path (the prompt once per pair);
- ``lists, K-segment row``: the lists with ``pairs_from_lists: all`` (the prompt once for all K completions);
- ``trl``: TRL's DPOTrainer on the exploded pairs.

The model is `dpo_vs_trl.py`'s Llama (hidden 256, 4 layers, vocabulary 32,000, random init); every runner sees
the same pairs and about the same pairs per optimizer step (8 pairs; the lists runner takes the fewest whole
prompts that hold at least 8), learning rate and β. Each measurement runs in its own process.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from dpo_vs_trl import (  # noqa: E402
    BATCH,
    BETA,
    LR,
    MAX_LENGTH,
    StepClock,
    current_rss,
    make_model_folder,
    make_tokenizer,
    matmul_rate,
    peak_memory,
    run_trl,
)

PROMPT, COMPLETION = (150, 400), (180, 220)
VOCAB = 32000
PROMPTS = {2: 24, 4: 8, 8: 4}  # prompts per K: about 100 exploded pairs or fewer, so TRL's epoch stays minutes
RUNNERS = ("pairs, plain", "pairs, shared prompt", "lists, K-segment row", "trl")
LENGTH = MAX_LENGTH * 4  # no truncation: prompt + one completion fits


def make_lists(k: int, n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = lambda count: " ".join(f"w{rng.randrange(VOCAB - 3)}" for _ in range(count))  # noqa: E731
    return [
        {
            "prompt": words(rng.randint(*PROMPT)),
            "completions": [" " + words(rng.randint(*COMPLETION)) for _ in range(k)],
            "scores": rng.sample(range(100), k),
        }
        for _ in range(n)
    ]


def exploded(lists: list[dict]) -> list[dict]:
    """Every pair of every list, the higher-scored completion chosen."""
    return [
        {"prompt": row["prompt"], "chosen": row["completions"][i], "rejected": row["completions"][j]}
        for row in lists
        for i in range(len(row["scores"]))
        for j in range(len(row["scores"]))
        if row["scores"][i] > row["scores"][j]
    ]


def run_preflight(data_rows, tokenizer_dir, model_dir, clock, batch_size: int, extra: dict) -> str:
    import lightning as L

    from preflight import PreferenceDataModule, PreferenceModule

    class Tick(L.Callback):
        def on_train_batch_end(self, *args):
            clock.tick()

    data = PreferenceDataModule(
        str(tokenizer_dir), train=data_rows, batch_size=batch_size, max_length=LENGTH, use_cache=False
    )
    module = PreferenceModule(
        str(model_dir), loss={"name": "dpo", "beta": BETA}, learning_rate=LR, scheduler="constant", **extra
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[Tick()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)
    return module.logps.describe(module.policy)


def worker(args) -> None:
    import torch

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp())
    make_tokenizer(VOCAB, work / "tokenizer")
    model_dir = make_model_folder(VOCAB, work / "model")
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(model_dir)
    lists = make_lists(args.k, PROMPTS[args.k])
    pairs = exploded(lists)
    per_prompt = args.k * (args.k - 1) // 2
    clock, baseline, start = StepClock(), current_rss(), time.perf_counter()
    path = "TRL DPOTrainer"
    if args.runner == "trl":
        import dpo_vs_trl

        dpo_vs_trl.MAX_LENGTH = LENGTH
        run_trl(pairs, work / "tokenizer", model_dir, "cpu", clock, {})
    elif args.runner == "lists, K-segment row":
        path = run_preflight(lists, work / "tokenizer", model_dir, clock, -(-BATCH // per_prompt), {})
    else:
        plain = dict(fused_lm_head="off", shared_prompt="off", padding_free="off")
        path = run_preflight(
            pairs, work / "tokenizer", model_dir, clock, BATCH, plain if "plain" in args.runner else {}
        )
    epoch = time.perf_counter() - start
    result = {
        "runner": args.runner,
        "k": args.k,
        "prompts": len(lists),
        "pairs": len(pairs),
        "epoch_s": epoch,
        "steps": len(clock.stamps),
        "median_step_s": clock.median_step(warmup=1),
        "peak_mib": peak_memory("cpu"),
        "growth_mib": peak_memory("cpu") - baseline,
        "path": path,
    }
    Path(args.json).write_text(json.dumps(result))


def measure(runner: str, k: int) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [sys.executable, __file__, "--worker", "--runner", runner, "--k", str(k), "--json", out]
    subprocess.run(cmd, check=True)
    result = json.loads(Path(out).read_text())
    with open("/proc/loadavg") as f:
        result["load"] = float(f.read().split()[0])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--runner", default="pairs, plain")
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--json", default="")
    parser.add_argument("--ks", default="2,4,8", help="the K to measure, comma-separated")
    parser.add_argument("--runners", default=",".join(RUNNERS).replace(", ", "_"), help="runners (_ for spaces)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    import torch

    runners = [r.replace("_", ", ") for r in args.runners.split(",")]
    print(
        f"Machine: {platform.machine()}, {torch.get_num_threads()} threads, {platform.platform()}, torch "
        f"{torch.__version__}; fp32 matmul rate {matmul_rate('cpu', 'float32') / 1e9:.1f} GFLOP/s\n"
    )
    for k in (int(v) for v in args.ks.split(",")):
        results = [measure(runner, k) for runner in runners]
        by = {r["runner"]: r for r in results}
        first = results[0]
        print(
            f"### K = {k}: {first['prompts']} prompts, {first['pairs']} pairs (all pairs of each list); prompts "
            f"{PROMPT[0]}–{PROMPT[1]} tokens, completions {COMPLETION[0]}–{COMPLETION[1]}\n"
        )
        columns = ["runner", "epoch fit (s)", "× pairs, shared prompt", "× TRL", "steps", "median step (s)"]
        columns += ["peak RSS (MiB)", "growth in fit (MiB)", "load at end"]
        print("| " + " | ".join(columns) + " |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in results:
            shared = by.get("pairs, shared prompt", {}).get("epoch_s")
            trl = by.get("trl", {}).get("epoch_s")
            ratio = lambda base: f"{r['epoch_s'] / base:.2f}" if base else "—"  # noqa: E731
            print(
                f"| {r['runner']} | {r['epoch_s']:.2f} | {ratio(shared)} | {ratio(trl)} | {r['steps']} | "
                f"{r['median_step_s']:.3f} | {r['peak_mib']:.0f} | {r['growth_mib']:.0f} | {r['load']:.2f} |"
            )
        print()
        for r in results:
            print(f"- {r['runner']}: {r['path']}")
        print(flush=True)


if __name__ == "__main__":
    main()
