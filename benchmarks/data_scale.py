"""Preparing preference data at scale: preflight's PreferenceDataModule vs TRL's DPOTrainer preparation.

    python benchmarks/data_scale.py --sizes 10000,100000,300000 [--runners preflight,trl] [--num-proc 2]

Generates pairs of realistic lengths (prompt ~150 tokens, completions ~250, Zipf-distributed words)
and trains a 32k-vocabulary BPE tokenizer on them (both once, under benchmarks/.data_scale/). Each
measurement runs in its own process and reports: cold setup (tokenizing into an empty cache), warm
setup (the same data again), peak RSS, RSS growth above the process's baseline (imports and tokenizer
loaded) after setup and after iterating one epoch of batches, and the cache's size on disk. Results are
appended to benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
WORK = HERE / ".data_scale"
WORDS, SEED = 20_000, 1234


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def du_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20 if path.exists() else 0.0


# ---------------------------------------------------------------------- data and tokenizer
def vocabulary():
    import numpy as np

    rng = np.random.default_rng(SEED)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    words = ["".join(rng.choice(letters, size=int(rng.integers(2, 10)))) for _ in range(WORDS)]
    weights = 1.0 / np.arange(1, WORDS + 1) ** 1.1
    return words, weights / weights.sum(), rng


def generate(path: Path, n: int) -> None:
    import numpy as np

    words, p, rng = vocabulary()
    words = np.array(words)
    with open(path, "w") as f:
        for _ in range(n):
            lengths = rng.normal([110, 180, 180], [40, 70, 70]).clip(10).astype(int)
            prompt, chosen, rejected = (" ".join(words[rng.choice(WORDS, size=k, p=p)]) for k in lengths)
            f.write(json.dumps({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected}) + "\n")


def build_tokenizer(folder: Path, corpus: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=32_000, special_tokens=["<pad>", "<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    with open(corpus) as f:
        tok.train_from_iterator((json.loads(line)["chosen"] for line in f), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.save_pretrained(folder)


def prepare(sizes: list[int]) -> Path:
    WORK.mkdir(exist_ok=True)
    biggest = WORK / f"pairs-{max(sizes)}.jsonl"
    if not biggest.exists():
        print(f"generating {max(sizes)} pairs", flush=True)
        generate(biggest, max(sizes))
    for n in sizes:
        path = WORK / f"pairs-{n}.jsonl"
        if not path.exists():
            with open(biggest) as src, open(path, "w") as dst:
                for _, line in zip(range(n), src):
                    dst.write(line)
    tokenizer = WORK / "tokenizer-32k"
    if not tokenizer.exists():
        print("training the 32k tokenizer", flush=True)
        build_tokenizer(tokenizer, WORK / f"pairs-{min(sizes)}.jsonl")
    return tokenizer


# ---------------------------------------------------------------------- one measurement (its own process)
def _measured(setup, batches) -> dict:
    """Time `setup()` (which returns the prepared data and its pair count), then one pass over `batches(data)`,
    with RSS above the process's baseline after each."""
    base = rss_mib()
    start = time.perf_counter()
    data, pairs = setup()
    setup_s = time.perf_counter() - start
    after_setup = rss_mib() - base
    start = time.perf_counter()
    for _ in batches(data):
        pass
    return {
        "setup_s": setup_s,
        "epoch_s": time.perf_counter() - start,
        "rss_growth_setup": after_setup,
        "rss_growth_epoch": rss_mib() - base,
        "peak": peak_mib(),
        "pairs": pairs,
    }


def measure_preflight(path: Path, tokenizer: Path, cache: Path, num_proc: int) -> dict:
    from preflight import PreferenceDataModule
    from preflight.pretrained import load_tokenizer

    tok = load_tokenizer(str(tokenizer))

    def setup():
        dm = PreferenceDataModule(
            tok, train=str(path), batch_size=8, max_length=1024, cache_dir=str(cache), num_proc=num_proc
        )
        dm.setup("fit")
        return dm, len(dm.dataset("train"))

    return _measured(setup, lambda dm: dm.train_dataloader())


def measure_trl(path: Path, tokenizer: Path, cache: Path, num_proc: int) -> dict:
    os.environ["HF_DATASETS_CACHE"] = str(cache)
    from datasets import load_dataset
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    model = LlamaForCausalLM(
        LlamaConfig(vocab_size=32_000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )

    def setup():
        data = load_dataset("json", data_files=str(path), split="train", cache_dir=str(cache))
        args = DPOConfig(
            output_dir=str(cache / "out"),
            report_to=[],
            use_cpu=True,
            max_length=1024,
            dataset_num_proc=num_proc,
            per_device_train_batch_size=8,
        )
        trainer = DPOTrainer(
            model=model, ref_model=copy.deepcopy(model), args=args, train_dataset=data, processing_class=tok
        )
        return trainer, len(trainer.train_dataset)

    return _measured(setup, lambda trainer: trainer.get_train_dataloader())


def run_worker(runner: str, size: int, num_proc: int, cache: Path) -> dict:
    out = WORK / f"result-{runner}-{size}.json"
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        runner,
        "--sizes",
        str(size),
        "--num-proc",
        str(num_proc),
        "--cache",
        str(cache),
        "--json",
        str(out),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,300000")
    parser.add_argument("--runners", default="preflight,trl")
    parser.add_argument("--num-proc", type=int, default=2)
    parser.add_argument("--worker")
    parser.add_argument("--cache")
    parser.add_argument("--json")
    parser.add_argument("--out", default=str(HERE / "RESULTS.md"))
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.worker:
        fn = {"preflight": measure_preflight, "trl": measure_trl}[args.worker]
        result = fn(WORK / f"pairs-{sizes[0]}.jsonl", WORK / "tokenizer-32k", Path(args.cache), args.num_proc)
        Path(args.json).write_text(json.dumps(result))
        return
    prepare(sizes)
    rows = []
    for size in sizes:
        for runner in args.runners.split(","):
            cache = WORK / f"cache-{runner}-{size}"
            shutil.rmtree(cache, ignore_errors=True)
            cold = run_worker(runner, size, args.num_proc, cache)
            warm = run_worker(runner, size, args.num_proc, cache)
            row = {"runner": runner, "size": size, "cold": cold, "warm": warm, "cache_mib": du_mib(cache)}
            print(json.dumps(row), flush=True)
            rows.append(row)
            shutil.rmtree(cache, ignore_errors=True)
    lines = [
        "",
        f"## Data preparation at scale (`python benchmarks/data_scale.py --sizes {args.sizes} "
        f"--runners {args.runners} --num-proc {args.num_proc}`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        "tokenizer: 32k BPE trained on the generated data; each cell its own process.",
        "",
        "| runner | pairs | cold setup (s) | warm setup (s) | peak RSS (MiB) "
        "| RSS growth after setup / after an epoch (MiB) | cache (MiB) | epoch of batches (s) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        c, w = r["cold"], r["warm"]
        lines.append(
            f"| {r['runner']} | {r['size']:,} | {c['setup_s']:.1f} | {w['setup_s']:.2f} | {c['peak']:.0f} | "
            f"{w['rss_growth_setup']:.0f} / {w['rss_growth_epoch']:.0f} | {r['cache_mib']:.0f} "
            f"| {w['epoch_s']:.1f} |"
        )
    with open(args.out, "a") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
