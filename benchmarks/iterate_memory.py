"""Peak memory of one `preflight iterate` round: what the process holds while the round's fit trains.

A round samples from π_{r−1}, then trains π_r from it against a reference copy. Before issue #30 the sampling policy
(and the evaluation's initial policy) stayed resident through the fit. This script runs one round on a random Llama
large enough for the difference to show (about 26M parameters, 100 MiB of fp32 weights), in a fresh process per run,
and records:

- the peak RSS of the whole run (`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss`);
- the RSS and the number of live model copies when the round's fit starts (a callback in the fit config).

    python benchmarks/iterate_memory.py                      # this checkout
    python benchmarks/iterate_memory.py --code /tmp/before   # another checkout (e.g. a git worktree of 417d33a)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HIDDEN, LAYERS, VOCAB = 512, 8, 384


def model_folder(folder: Path) -> Path:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ROOT / "assets/tiny-llama")
    config.update(
        {"hidden_size": HIDDEN, "intermediate_size": 4 * HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": 8}
    )
    config.update({"num_key_value_heads": 8, "head_dim": HIDDEN // 8})
    config.save_pretrained(folder)
    return folder


CALLBACK = """
import gc, json, os, resource
import torch
from lightning.pytorch.callbacks import Callback

class AtFitStart(Callback):
    def __init__(self, path: str, size: int) -> None:
        self.path, self.size = path, size

    def on_train_start(self, trainer, pl_module) -> None:
        gc.collect()
        copies = sum(isinstance(o, torch.nn.Embedding) and o.weight.numel() == self.size for o in gc.get_objects())
        rss = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        json.dump({"copies": copies, "rss_mib": rss / 2**20}, open(self.path, "w"))
"""


def run(code: Path, work: Path) -> dict:
    model = model_folder(work / "model")
    (work / "bench_callbacks.py").write_text(CALLBACK)
    at_start = work / "at_fit_start.json"
    config = {
        "out": str(work / "out"),
        "rounds": 1,
        "prompts": str(ROOT / "assets/data/val.jsonl"),
        "prompts_per_round": 8,
        "samples_per_prompt": 3,
        "eval_prompts": 4,
        "max_new_tokens": 12,
        "reward": "bench_rewards:length",
        "fit": {
            "seed_everything": 0,
            "model": {
                "class_path": "preflight.PreferenceModule",
                "init_args": {"model": str(model), "loss": {"name": "dpo", "beta": 0.1}, "learning_rate": 1e-4},
            },
            "data": {"tokenizer": str(ROOT / "assets/tokenizer"), "batch_size": 4, "max_length": 128},
            "trainer": {
                "accelerator": "cpu",
                "devices": 1,
                "max_steps": 2,
                "enable_progress_bar": False,
                "callbacks": [
                    {
                        "class_path": "bench_callbacks.AtFitStart",
                        "init_args": {"path": str(at_start), "size": VOCAB * HIDDEN},
                    }
                ],
            },
        },
    }
    (work / "bench_rewards.py").write_text(
        "def length(prompts, completions):\n    return [float(len(c)) for c in completions]\n"
    )
    (work / "iterate.json").write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": f"{code}:{work}", "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "preflight", "iterate", "--config", str(work / "iterate.json")]
    result = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**json.loads(at_start.read_text()), "peak_rss_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose preflight runs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        measured = run(args.code.resolve(), Path(tmp))
    print(
        f"| {args.code} | {measured['copies']} | {measured['rss_mib']:.0f} | {measured['peak_rss_mib']:.0f} |",
        flush=True,
    )


if __name__ == "__main__":
    main()
