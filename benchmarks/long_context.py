"""Long context, padding and fixed costs: preflight's paths against TRL's DPOTrainer.

    pip install -e ".[bench]"
    python benchmarks/long_context.py                    # CPU, fp32; appends to benchmarks/RESULTS.md
    python benchmarks/long_context.py --device cuda      # GPU, bf16, with the flex_attention paths
    python benchmarks/long_context.py --quick            # small lengths: a smoke run of every part

Three tables:

1. **Padding.** Real tokens / processed tokens over an epoch of the standard and prompt-heavy
   workloads of `dpo_vs_trl.py` and of the realistic lengths of `data_scale.py` (prompt ~110 tokens,
   completions ~180), for padded rows (TRL's and preflight's default), shared-prompt rows, and
   padding-free rows. Counted from the batches and `packing.layout`, no model run.
2. **Sequence length.** Pairs of 512 / 2k / 8k tokens (prompt half, each completion a quarter), the
   same model (a Llama of hidden 128, 2 layers, vocabulary 32,000): peak memory and the median step for
   every preflight path and for TRL, and what each adds above the process baseline and the model
   state (policy, gradients, two AdamW moments, reference: 5 × parameters × 4 bytes).
3. **Fixed costs.** A short fit of 12 optimizer steps on the standard workload: the time before the
   first optimizer step (model and reference built, path decision, data preparation, any precompute or
   compilation), the median step after it, and the whole fit, for preflight, TRL and the plain loop.

Each measurement runs in its own process, reusing `dpo_vs_trl.py`'s runners and clock.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import dpo_vs_trl as bench  # noqa: E402

VOCAB, HIDDEN, LAYERS, HEADS = 32_000, 128, 2, 4
PATHS = {  # preflight's settings for each measured path
    "plain": dict(fused_lm_head="off", shared_prompt="off", padding_free="off"),
    "fused head": dict(fused_lm_head="on", shared_prompt="off", padding_free="off"),
    "fused head + shared prompt": dict(fused_lm_head="on", shared_prompt="on", padding_free="off"),
    "fused head + shared prompt, padding-free": dict(fused_lm_head="on", shared_prompt="on", padding_free="on"),
}
FLEX = {
    "fused head + shared prompt, padding-free (flex)": dict(
        fused_lm_head="on", shared_prompt="on", padding_free="on", attn_implementation="flex_attention"
    )
}


# ---------------------------------------------------------------------------------------------- padding
def padding_table(quick: bool) -> list[str]:
    from preflight import PreferenceDataModule
    from preflight.logps import RowPacking
    from preflight.logps.rows import layout

    work = Path(tempfile.mkdtemp())
    tokenizer = bench.make_tokenizer(VOCAB, work / "tokenizer")  # one word, one token
    workloads = dict(bench.WORKLOADS, realistic=((70, 150), (110, 250)))
    lines = [
        "| workload | pairs | padded rows | shared prompt, one pair per row | padding-free, rows ≤ 2048 tokens "
        "| padding-free, one row per micro-batch |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, lengths in workloads.items():
        bench.WORKLOADS[name] = lengths
        pairs = bench.make_pairs(name, 64 if quick else 512, VOCAB)
        data = PreferenceDataModule(
            str(work / "tokenizer"), train=pairs, batch_size=8, max_length=1024, use_cache=False
        )
        data.setup("fit")
        counts = {k: [0, 0] for k in ("padded", "shared", "budget", "one")}
        for batch in data.train_dataloader():
            real = int(batch["attention_mask"].sum())
            counts["padded"][0] += real
            counts["padded"][1] += batch["input_ids"].numel()
            packings = (
                ("shared", RowPacking.unit_per_row()),
                ("budget", RowPacking.budget(2048)),
                ("one", RowPacking.one_row()),
            )
            for key, packing in packings:
                rows = layout(batch, True, packing, tokenizer.pad_token_id)
                counts[key][0] += rows.real_tokens
                counts[key][1] += rows.processed_tokens
        cells = [f"{real / processed:.3f}" for real, processed in counts.values()]
        lines.append(f"| {name} | {len(pairs)} | " + " | ".join(cells) + " |")
    return lines


# ---------------------------------------------------------------------------------------------- one run
def worker(args) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    work = Path(tempfile.mkdtemp())
    bench.make_tokenizer(VOCAB, work / "tokenizer")
    model_dir = work / "model"
    if args.workload == "sweep":
        total = args.length
        bench.WORKLOADS["sweep"] = ((total // 2 - 1,) * 2, (total // 4 - 1,) * 2)  # BOS/EOS make up the length
        bench.MAX_LENGTH, bench.BATCH = total + 8, args.batch
        config = LlamaConfig(
            vocab_size=VOCAB,
            hidden_size=HIDDEN,
            intermediate_size=4 * HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=HEADS,
            num_key_value_heads=HEADS,
            max_position_embeddings=total + 64,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
            tie_word_embeddings=False,
        )
    else:  # dpo_vs_trl's model and settings
        config = LlamaConfig.from_pretrained(bench.make_model_folder(VOCAB, model_dir))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(model_dir)
    parameters = sum(p.numel() for p in model.parameters())
    del model
    pairs = bench.make_pairs(args.workload, args.pairs, VOCAB)
    clock = bench.StepClock()
    runner = {"preflight": bench.run_preflight, "trl": bench.run_trl, "plain": bench.run_plain}[args.runner]
    extra = json.loads(args.extra) if args.extra else {}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = bench.current_rss() if args.device == "cpu" else 0.0
    start = time.perf_counter()
    runner(pairs, work / "tokenizer", model_dir, args.device, clock, extra)
    if args.device == "cuda":
        torch.cuda.synchronize()
    Path(args.json).write_text(
        json.dumps(
            {
                "fit_s": time.perf_counter() - start,
                "first_step_s": clock.stamps[0] - start if clock.stamps else None,
                "median_step_s": clock.median_step(warmup=1),
                "steps": len(clock.stamps),
                "peak_mib": bench.peak_memory(args.device),
                "baseline_mib": baseline,
                "model_state_mib": 5 * parameters * 4 / 2**20,
            }
        )
    )


def measure(args, runner: str, workload: str, pairs: int, length: int, extra: dict | None = None) -> dict | None:
    out = tempfile.NamedTemporaryFile(suffix=".json", delete=False).name
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--runner",
        runner,
        "--workload",
        workload,
        "--pairs",
        str(pairs),
        "--length",
        str(length),
        "--batch",
        str(args.batch),
        "--device",
        args.device,
        "--json",
        out,
    ]
    cmd += ["--extra", json.dumps(extra)] if extra else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"  {runner} {workload} {length} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
        return None
    result = json.loads(Path(out).read_text())
    print(
        f"  {runner:9s} {workload:9s} {length:6d} {json.dumps(extra or {}):90s} step {result['median_step_s']:.3f}s "
        f"peak {result['peak_mib']:.0f} MiB",
        flush=True,
    )
    return result


# ---------------------------------------------------------------------------------------------- tables
def sweep_table(args) -> list[str]:
    paths = dict(PATHS, **(FLEX if args.device == "cuda" else {}))
    lines = [
        "| pair length (tokens) | runner | path | median step (s) | peak memory (MiB) "
        "| above baseline and model state (MiB) | per token of the pair (KiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for length in args.lengths:
        pairs = args.batch * args.steps_per_length
        runs = [("preflight", name, settings) for name, settings in paths.items()]
        runs.append(("trl", "DPOTrainer (padded rows, full logits)", None))
        for runner, name, settings in runs:
            r = measure(args, runner, "sweep", pairs, length, settings)
            if r is None:
                lines.append(f"| {length} | {runner} | {name} | failed | | | |")
                continue
            added = r["peak_mib"] - r["baseline_mib"] - r["model_state_mib"]
            lines.append(
                f"| {length} | {runner} | {name} | {r['median_step_s']:.3f} | {r['peak_mib']:.0f} "
                f"| {added:.0f} | {added * 1024 / length:.1f} |"
            )
    return lines


def fixed_cost_table(args) -> list[str]:
    lines = [
        "| runner | fit of 12 steps (s) | before the first step (s) | median step (s) | fit × TRL | step × TRL |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    results = {runner: measure(args, runner, "standard", 96, 0) for runner in ("preflight", "trl", "plain")}
    trl = results["trl"]
    for runner, r in results.items():
        if r is None:
            continue
        lines.append(
            f"| {runner} | {r['fit_s']:.2f} | {r['first_step_s']:.2f} | {r['median_step_s']:.3f} "
            f"| {r['fit_s'] / trl['fit_s']:.2f} | {r['median_step_s'] / trl['median_step_s']:.2f} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", choices=["preflight", "trl", "plain"])
    parser.add_argument("--workload", default="sweep")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--extra")
    parser.add_argument("--json")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--batch", type=int, default=2, help="pairs per micro-batch in the sweep")
    parser.add_argument("--lengths", default="512,2048,8192", help="pair lengths of the sweep")
    parser.add_argument("--steps-per-length", type=int, default=2, help="optimizer steps measured per sweep cell (+1)")
    parser.add_argument("--parts", default="padding,sweep,fixed")
    parser.add_argument("--quick", action="store_true", help="lengths 128,256 and 64 pairs per padding workload")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.lengths = "128,256"
    args.lengths = [int(n) for n in args.lengths.split(",")]
    args.steps_per_length += 1  # the first step is warm-up
    parts = args.parts.split(",")
    command = "python benchmarks/long_context.py " + " ".join(sys.argv[1:])
    out = [
        "",
        f"## Long context, padding and fixed costs (`{command}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, device {args.device}; "
        "each cell its own process.",
        "",
    ]
    if "padding" in parts:
        out += ["### Real tokens / processed tokens per epoch (batch 8)", "", *padding_table(args.quick), ""]
    if "sweep" in parts:
        out += [
            f"### Sequence length (batch {args.batch}, Llama hidden {HIDDEN}, {LAYERS} layers, vocabulary {VOCAB})",
            "",
            *sweep_table(args),
            "",
        ]
    if "fixed" in parts:
        out += [
            "### Fixed costs of a short fit (standard workload, 96 pairs, batch 8: 12 steps)",
            "",
            *fixed_cost_table(args),
            "",
        ]
    text = "\n".join(out)
    print(text)
    with open(args.out, "a") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
