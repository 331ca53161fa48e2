"""Peak memory of a 2-process FSDP2 fit against the vocabulary, with the fused lm_head on and off.

    python benchmarks/fsdp2_vocabulary.py [--vocabularies 32000,64000,128000] [--steps 4] [--batch-sizes 4]

CPU, gloo, Lightning's `ModelParallelStrategy` (FSDP2 over 2 processes), the model of `dpo_vs_trl.py`
(a Llama of hidden 256, 4 layers) at each vocabulary, DPO on pairs of realistic lengths (prompt ~110
tokens, completions ~180), batch 4 per process. Each process reports its peak RSS. The model state a
process must hold is its shard of the policy, its gradients, two AdamW moments and the reference
(5 × parameters × 4 bytes / 2), plus the one unit FSDP2 gathers at a time: the embedding and the lm_head are
units of their own (`shard_fsdp2`), so the largest gathered unit is the head, with its unsharded gradient
before the reduce-scatter (2 × vocabulary × hidden × 4 bytes). What the fused head saves is the [rows,
tokens, vocabulary] logits, so "above baseline and model state" should stay flat with the vocabulary when it
is on, and grow when it is off. Several `--batch-sizes` (pairs per process) tell what grows with the tokens
of a step (activations, logits) from what grows with the parameters only (model state, FSDP2's buffers).
Appends to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import dpo_vs_trl as bench  # noqa: E402


def worker(args) -> None:
    import lightning as L
    from lightning.pytorch.strategies import ModelParallelStrategy

    from preflight import PreferenceDataModule, PreferenceModule

    folder = Path(args.folder)
    bench.WORKLOADS["realistic"] = ((70, 150), (110, 250))
    pairs = bench.make_pairs("realistic", 2 * args.batch_size * args.steps, args.vocab)
    stamps: list[float] = []

    class Tick(L.Callback):
        def on_train_batch_end(self, *_):
            stamps.append(time.perf_counter())

    data = PreferenceDataModule(
        str(folder / "tokenizer"), train=pairs, batch_size=args.batch_size, max_length=512, use_cache=False
    )
    module = PreferenceModule(
        str(folder / "model"),
        loss={"name": "dpo", "beta": 0.1},
        learning_rate=1e-5,
        scheduler="constant",
        fused_lm_head=args.fused,
    )
    trainer = L.Trainer(
        accelerator="cpu",
        devices=2,
        strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1),
        max_steps=args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[Tick()],
    )
    baseline = bench.current_rss()
    trainer.fit(module, data)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    Path(f"{args.json}.{trainer.global_rank}").write_text(
        json.dumps(
            {
                "peak_mib": bench.peak_memory("cpu"),
                "baseline_mib": baseline,
                "median_step_s": statistics.median(gaps) if gaps else float("nan"),
                "fused": module.hparams["logps_path"]["fused_lm_head"],
            }
        )
    )


def measure(vocab: int, fused: str, steps: int, batch_size: int) -> dict:
    folder = Path(tempfile.mkdtemp())
    bench.make_tokenizer(vocab, folder / "tokenizer")
    bench.make_model_folder(vocab, folder / "model")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder / "model"))
    model.save_pretrained(folder / "model")
    parameters = sum(p.numel() for p in model.parameters())
    head = model.get_output_embeddings().weight.numel()  # the largest unit FSDP2 gathers at once
    out = str(folder / "result.json")
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--vocab",
        str(vocab),
        "--fused",
        fused,
        "--steps",
        str(steps),
        "--batch-size",
        str(batch_size),
        "--folder",
        str(folder),
        "--json",
        out,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    ranks = [json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1)]
    return {
        "vocab": vocab,
        "fused": fused,
        "parameters": parameters,
        "ranks": ranks,
        "state_mib": (5 * parameters * 4 / 2 + 2 * head * 4) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int)
    parser.add_argument("--fused", default="auto")
    parser.add_argument("--folder")
    parser.add_argument("--json")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--vocabularies", default="32000,64000,128000")
    parser.add_argument("--batch-size", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--batch-sizes", default="4", help="pairs per process per step, comma-separated")
    parser.add_argument("--heads", default="on,off", help="fused lm_head settings measured, comma-separated")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")) or "glibc malloc"
    lines = [
        "",
        f"## Fused lm_head under FSDP2 (`python benchmarks/fsdp2_vocabulary.py {' '.join(sys.argv[1:])}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; 2 processes (gloo), "
        f"{malloc}, "
        "ModelParallelStrategy; each cell one fit of its own.",
        "",
        "| vocabulary | parameters | pairs per process | fused lm_head | model state per process (MiB) "
        "| peak RSS per process (MiB) | above baseline and model state (MiB) | median step (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for vocab, batch_size, fused in [
        (int(v), int(b), f)
        for v in args.vocabularies.split(",")
        for b in args.batch_sizes.split(",")
        for f in args.heads.split(",")
    ]:
        r = measure(vocab, fused, args.steps, batch_size)
        peak = max(rank["peak_mib"] for rank in r["ranks"])
        above = max(rank["peak_mib"] - rank["baseline_mib"] for rank in r["ranks"]) - r["state_mib"]
        step = statistics.mean(rank["median_step_s"] for rank in r["ranks"])
        assert all(rank["fused"] == (fused == "on") for rank in r["ranks"])
        lines.append(
            f"| {vocab} | {r['parameters'] / 1e6:.1f}M | {batch_size} | {fused} | {r['state_mib']:.0f} "
            f"| {peak:.0f} | {above:.0f} | {step:.3f} |"
        )
        print(lines[-1], flush=True)
    text = "\n".join(lines)
    with open(args.out, "a") as f:
        f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
