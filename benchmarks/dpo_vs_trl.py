"""One DPO epoch through preflight, TRL's DPOTrainer and a plain PyTorch DPO step, side by side.

    pip install -e ".[bench]"
    python benchmarks/dpo_vs_trl.py                 # CPU, fp32; writes benchmarks/RESULTS.md
    python benchmarks/dpo_vs_trl.py --device cuda   # GPU, bf16; adds tokens/s and MFU

Each measurement runs in its own process (`--worker`), and the runners alternate. The model
is a Llama built from a config (hidden 256, 4 layers, vocabulary 32,000, random init), the
tokenizer and the pairs are generated here, and every runner sees the same pairs, batch 8,
max_length 256, learning rate and beta, without gradient checkpointing.

Reported per runner: the wall time of one epoch's fit (everything the library does, its
tokenization and any reference precompute included), the median optimizer-step time after
warm-up, tokens per second (real prompt+completion tokens of both rows of every pair), peak
memory (RSS on CPU, max allocated on GPU) and its growth during fit, each also as a ratio to TRL.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOADS = {
    # name: (prompt tokens range, completion tokens range)
    "standard": ((20, 40), (30, 60)),  # prompts ~30, completions ~45
    "prompt_heavy": ((170, 210), (10, 30)),  # prompts ~190, completions ~20
}
RUNNERS = ("preflight", "trl", "plain")
BATCH, MAX_LENGTH, LR, BETA, HIDDEN, LAYERS = 8, 256, 1e-5, 0.1, 256, 4


# ---------------------------------------------------------------------------------------------- shared set-up
def make_tokenizer(vocab: int, folder: Path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>"]
    words = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(vocab - len(specials))])}
    tok = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")
    fast.save_pretrained(folder)
    return fast


def make_pairs(workload: str, n: int, vocab: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    (p_lo, p_hi), (c_lo, c_hi) = WORKLOADS[workload]
    words = lambda k: " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(k))  # noqa: E731
    return [
        {
            "prompt": words(rng.randint(p_lo, p_hi)),
            "chosen": " " + words(rng.randint(c_lo, c_hi)),
            "rejected": " " + words(rng.randint(c_lo, c_hi)),
        }
        for _ in range(n)
    ]


def make_model_folder(vocab: int, folder: Path) -> Path:
    from transformers import LlamaConfig

    LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=688,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
    ).save_pretrained(folder)
    return folder


def real_tokens(tokenizer, pairs) -> int:
    """Prompt + completion tokens of both rows of every pair (what a DPO step must at least read)."""
    total = 0
    for p in pairs:
        prompt = len(tokenizer(p["prompt"])["input_ids"])
        total += 2 * prompt + len(tokenizer(p["chosen"])["input_ids"]) + len(tokenizer(p["rejected"])["input_ids"]) + 2
    return total


def necessary_flops(tokenizer, pairs, vocab: int) -> float:
    """Layers over real tokens with the prompt once, lm_head over completion tokens only; policy fwd+bwd (6) +
    reference fwd (2)."""
    layer_params = LAYERS * (4 * HIDDEN * HIDDEN + 3 * HIDDEN * 688)
    flops = 0.0
    for p in pairs:
        prompt = len(tokenizer(p["prompt"])["input_ids"])
        completions = len(tokenizer(p["chosen"])["input_ids"]) + len(tokenizer(p["rejected"])["input_ids"]) + 2
        flops += 8 * layer_params * (prompt + completions) + 8 * HIDDEN * vocab * completions
    return flops


class StepClock:
    def __init__(self) -> None:
        self.stamps: list[float] = []

    def tick(self) -> None:
        self.stamps.append(time.perf_counter())

    def median_step(self, warmup: int = 2) -> float:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:])][warmup:]
        return statistics.median(gaps) if gaps else float("nan")


def peak_memory(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB (Linux reports KiB)


def current_rss() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


# ---------------------------------------------------------------------------------------------- runners
def run_preflight(pairs, tokenizer_dir, model_dir, device, clock, extra: dict):
    import lightning as L

    from preflight import PreferenceDataModule, PreferenceModule

    class Tick(L.Callback):
        def on_train_batch_end(self, *args):
            clock.tick()

    data = PreferenceDataModule(
        str(tokenizer_dir), train=pairs, batch_size=BATCH, max_length=MAX_LENGTH, use_cache=False
    )
    module = PreferenceModule(
        str(model_dir), loss={"name": "dpo", "beta": BETA}, learning_rate=LR, scheduler="constant", **extra
    )
    trainer = L.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        precision="bf16-mixed" if device == "cuda" else "32-true",
        callbacks=[Tick()],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, data)


def run_trl(pairs, tokenizer_dir, model_dir, device, clock, extra: dict):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    class Tick(TrainerCallback):
        def on_step_end(self, *args, **kwargs):
            clock.tick()

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=tempfile.mkdtemp(),
        per_device_train_batch_size=BATCH,
        num_train_epochs=1,
        learning_rate=LR,
        beta=BETA,
        max_length=MAX_LENGTH,
        report_to=[],
        logging_steps=10_000,
        save_strategy="no",
        use_cpu=device != "cuda",
        bf16=device == "cuda",
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        seed=0,
        lr_scheduler_type="constant",
        disable_tqdm=True,
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=AutoTokenizer.from_pretrained(tokenizer_dir),
        callbacks=[Tick()],
    )
    trainer.train()


def run_plain(pairs, tokenizer_dir, model_dir, device, clock, extra: dict):
    """The DPO reference code's step: one concatenated forward with full fp32 logits; reference forward every step."""
    import copy

    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    dev = torch.device(device)
    policy = AutoModelForCausalLM.from_pretrained(model_dir).to(dev)
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=LR)
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda")

    def encode(p):
        prompt = tok(p["prompt"])["input_ids"]
        rows = [prompt + tok(p[k])["input_ids"] + [tok.eos_token_id] for k in ("chosen", "rejected")]
        return [(r[:MAX_LENGTH], len(prompt)) for r in rows]

    encoded = [encode(p) for p in pairs]

    def logps(model, ids, mask, labels_mask):
        with autocast:
            logits = model(input_ids=ids, attention_mask=mask).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, ids[:, 1:, None]).squeeze(-1)
        return (lp * labels_mask[:, 1:]).sum(-1)

    for start in range(0, len(encoded), BATCH):
        chunk = encoded[start : start + BATCH]
        rows = [c[0] for c in chunk] + [c[1] for c in chunk]
        T = max(len(r) for r, _ in rows)
        ids = torch.zeros(len(rows), T, dtype=torch.long)
        mask = torch.zeros(len(rows), T, dtype=torch.long)
        labels = torch.zeros(len(rows), T)
        for i, (r, p) in enumerate(rows):
            ids[i, : len(r)], mask[i, : len(r)], labels[i, p : len(r)] = torch.tensor(r), 1, 1
        ids, mask, labels = ids.to(dev), mask.to(dev), labels.to(dev)
        policy_logps = logps(policy, ids, mask, labels)
        with torch.no_grad():
            reference_logps = logps(reference, ids, mask, labels)
        B = len(chunk)
        h = (policy_logps[:B] - reference_logps[:B]) - (policy_logps[B:] - reference_logps[B:])
        loss = -F.logsigmoid(BETA * h).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.tick()


def worker(args) -> None:
    import torch

    torch.manual_seed(0)
    torch.set_num_threads(args.threads or torch.get_num_threads())
    work = Path(tempfile.mkdtemp())
    tokenizer = make_tokenizer(args.vocab, work / "tokenizer")
    model_dir = make_model_folder(args.vocab, work / "model")
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(0)  # every runner loads these same random weights
    AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).save_pretrained(model_dir)
    pairs = make_pairs(args.workload, args.pairs, args.vocab)
    clock = StepClock()
    runner = {"preflight": run_preflight, "trl": run_trl, "plain": run_plain}[args.runner]
    extra = json.loads(args.extra) if args.extra else {}
    if args.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    baseline = current_rss()
    start = time.perf_counter()
    runner(pairs, work / "tokenizer", model_dir, args.device, clock, extra)
    if args.device == "cuda":
        torch.cuda.synchronize()
    epoch = time.perf_counter() - start
    tokens = real_tokens(tokenizer, pairs)
    result = {
        "runner": args.runner,
        "workload": args.workload,
        "vocab": args.vocab,
        "extra": extra,
        "epoch_s": epoch,
        "median_step_s": clock.median_step(),
        "steps": len(clock.stamps),
        "tokens_per_s": tokens / epoch,
        "peak_mib": peak_memory(args.device),
        "baseline_rss_mib": baseline,
        "necessary_flops": necessary_flops(tokenizer, pairs, args.vocab),
        "parameters": sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(model_dir).parameters()),
        "tokens": tokens,
    }
    Path(args.json).write_text(json.dumps(result))


# ---------------------------------------------------------------------------------------------- orchestration
def matmul_rate(device: str, dtype_name: str) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a = torch.randn(2048, 2048, device=device, dtype=dtype)
    b = torch.randn(2048, 2048, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    n, start = 10, time.perf_counter()
    for _ in range(n):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * 2048**3 * n / (time.perf_counter() - start)


def measure(runner, workload, vocab, args, extra=None) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = f.name
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--runner",
        runner,
        "--workload",
        workload,
        "--vocab",
        str(vocab),
        "--pairs",
        str(args.pairs),
        "--device",
        args.device,
        "--json",
        out,
    ]
    if extra:
        cmd += ["--extra", json.dumps(extra)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{runner}/{workload}/{vocab} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(Path(out).read_text())
    result["load_average"] = os.getloadavg()[0]  # 1-minute load average as the run ended: was the machine quiet?
    print(
        f"  {runner:10s} {workload:13s} vocab {vocab:6d} {json.dumps(extra or {}):32s} epoch {result['epoch_s']:7.2f}s "
        f"step {result['median_step_s']:.3f}s peak {result['peak_mib']:7.0f} MiB "
        f"load {result['load_average']:.2f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runner", choices=RUNNERS)
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="standard")
    parser.add_argument("--vocab", type=int, default=32_000)
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--json")
    parser.add_argument("--extra", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=2, help="alternating rounds per workload (the median is kept)")
    parser.add_argument(
        "--sweep", default="32000,64000,128000", help="vocabularies for the memory sweep (empty: no sweep)"
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the GPU's dense bf16 peak for MFU (default: looked up from the device name)",
    )
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    malloc = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    command = (malloc + " " if malloc else "") + "python benchmarks/dpo_vs_trl.py " + " ".join(sys.argv[1:])
    results: dict[tuple, list[dict]] = {}
    for workload in WORKLOADS:
        print(f"workload {workload}", flush=True)
        for round_ in range(args.repeats):
            order = RUNNERS if round_ % 2 == 0 else tuple(reversed(RUNNERS))
            for runner in order:
                results.setdefault((runner, workload), []).append(measure(runner, workload, 32_000, args))
        results.setdefault(("preflight, reference: precomputed", workload), []).append(
            measure("preflight", workload, 32_000, args, {"reference": "precomputed"})
        )
    sweep: dict[tuple, dict] = {}
    print("vocabulary sweep", flush=True)
    for vocab in [int(v) for v in args.sweep.split(",") if v]:
        for runner in ("preflight", "trl"):
            sweep[(runner, vocab)] = measure(runner, "standard", vocab, args)
    rate = matmul_rate(args.device, "float32" if args.device == "cpu" else "bfloat16")
    write_results(args, command, results, sweep, rate)


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def mfu(row: dict, epoch: float, peak_tflops: float) -> float:
    """Model FLOPs utilization: (6 N T policy forward+backward + 2 N T reference forward) / time / peak."""
    return 8 * row["parameters"] * row["tokens"] / epoch / (peak_tflops * 1e12)


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def write_results(args, command: str, results, sweep, rate: float) -> None:
    import torch

    lines = [
        "# Benchmark results",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, torch {torch.__version__}, "
        f"device {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else ""),
        f"Measured {'fp32' if args.device == 'cpu' else 'bf16'} matmul rate (2048², this process): "
        f"{rate / 1e9:.1f} GFLOP/s",
        "",
        f"{args.pairs} pairs, batch {BATCH}, max_length {MAX_LENGTH}, Llama hidden {HIDDEN}, {LAYERS} layers; "
        f"medians of {args.repeats} alternating rounds, each run in its own process.",
        "",
    ]
    peak_tflops = args.peak_tflops
    if args.device == "cuda" and peak_tflops is None:
        name = torch.cuda.get_device_name()
        peak_tflops = next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    if peak_tflops:
        lines += [
            f"MFU against a dense bf16 peak of {peak_tflops:.0f} TFLOP/s: 8 × parameters × tokens per epoch "
            "(6 for the policy's forward and backward, 2 for the reference forward) ÷ epoch time ÷ peak.",
            "",
        ]
    for workload in WORKLOADS:
        trl = results[("trl", workload)]
        loads = [
            r["load_average"]
            for runner in (*RUNNERS, "preflight, reference: precomputed")
            for r in results[(runner, workload)]
        ]
        lines += [
            f"## Workload: {workload} (prompt {WORKLOADS[workload][0]}, completions {WORKLOADS[workload][1]} tokens)",
            "",
            f"1-minute load average at the end of each run: {min(loads):.2f} to {max(loads):.2f} "
            f"({os.cpu_count()} cores).",
            "",
            "| runner | epoch fit (s) | × TRL | median step (s) | × TRL | tokens/s | peak memory (MiB) | × TRL "
            "| growth in fit (MiB) | necessary FLOP rate / matmul rate |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for runner in (*RUNNERS, "preflight, reference: precomputed"):
            rows = results[(runner, workload)]
            epoch, step, peak = _median(rows, "epoch_s"), _median(rows, "median_step_s"), _median(rows, "peak_mib")
            growth = _median([{"g": r["peak_mib"] - r["baseline_rss_mib"]} for r in rows], "g")
            flop_rate = rows[0]["necessary_flops"] / epoch
            if peak_tflops:
                lines.append(f"| {runner} MFU | {mfu(rows[0], epoch, peak_tflops):.3f} | | | | | | | | |")
            lines.append(
                f"| {runner} | {epoch:.2f} | {epoch / _median(trl, 'epoch_s'):.2f} | {step:.3f} | "
                f"{step / _median(trl, 'median_step_s'):.2f} | {_median(rows, 'tokens_per_s'):.0f} | {peak:.0f} | "
                f"{peak / _median(trl, 'peak_mib'):.2f} | {growth:.0f} | {flop_rate / rate:.3f} |"
            )
        plain = results[("plain", workload)]
        ours = results[("preflight", workload)]
        lines += [
            "",
            f"preflight ÷ plain PyTorch step: epoch {_median(ours, 'epoch_s') / _median(plain, 'epoch_s'):.2f}, "
            f"median step {_median(ours, 'median_step_s') / _median(plain, 'median_step_s'):.2f}.",
            "",
        ]
    if not sweep:
        Path(args.out).write_text("\n".join(lines) + "\n")
        print(f"wrote {args.out}")
        return
    lines += [
        "## Peak memory against the vocabulary (standard workload, fixed tokens)",
        "",
        "Model state is what any trainer must hold, and it grows with the vocabulary: policy weights, their "
        "gradients, two AdamW moments and the reference weights, 5 × parameters × 4 bytes. What a library adds "
        "on top (activations, logits, allocator slack) is the peak minus the process baseline minus that.",
        "",
        "| vocabulary | parameters | model state (MiB) | preflight peak (MiB) "
        "| preflight above baseline and model state (MiB) "
        "| TRL peak (MiB) | TRL above baseline and model state (MiB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    vocabs = sorted({v for _, v in sweep})
    for v in vocabs:
        p, t = sweep[("preflight", v)], sweep[("trl", v)]
        state = 5 * p["parameters"] * 4 / 2**20
        lines.append(
            f"| {v} | {p['parameters'] / 1e6:.1f}M | {state:.0f} | {p['peak_mib']:.0f} | "
            f"{p['peak_mib'] - p['baseline_rss_mib'] - state:.0f} | {t['peak_mib']:.0f} | "
            f"{t['peak_mib'] - t['baseline_rss_mib'] - state:.0f} |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
