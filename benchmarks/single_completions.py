"""Scoring single sampled completions: as fake pairs (the completion as both rows, as `GenerationEval` and `iterate`
did before issue #31) against groups of one (one row each, as they do now).

The KL estimate (log π_θ and log π_ref of each sample) and a reward model's score run once per evaluation prompt; this
times both layouts of the same B samples on one random Llama, with the log-prob engine and with a sequence-classifier
forward, median of 5 repeats after one warm-up, on this machine's CPU.

    python benchmarks/single_completions.py [--prompts 32] [--new-tokens 48]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def model_folder(folder: Path) -> Path:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ROOT / "assets/tiny-llama")
    config.update({"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4, "num_attention_heads": 4})
    config.update({"num_key_value_heads": 4, "head_dim": 64})
    config.save_pretrained(folder)
    return folder


def timed(run, repeats: int = 5) -> float:
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    import tempfile

    from transformers import AutoModelForSequenceClassification

    from preflight.datamodules.collate import ListCollator, PreferenceCollator
    from preflight.datamodules.tokenization import TokenizedPair
    from preflight.generation.scoring import completions_as_groups
    from preflight.policy import Policy
    from preflight.pretrained import load_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = model_folder(Path(tmp) / "model")
        policy = Policy.load(str(folder), str(ROOT / "assets/tokenizer"))
        scorer = load_model(str(folder), AutoModelForSequenceClassification, num_labels=1).eval()
    tokenizer = policy.tokenizer
    rows = [json.loads(line) for line in (ROOT / "assets/data/val.jsonl").read_text().splitlines()]
    prompts = [tokenizer(row["prompt"])["input_ids"] for row in rows[: args.prompts]]
    samples = [c[0] for c in policy.sample(prompts, 1, seed=0, max_new_tokens=args.new_tokens)]
    eos, pad = tokenizer.eos_token_id, policy.pad_token_id
    pairs = PreferenceCollator(pad)([TokenizedPair(i, p, c, c) for i, (p, c) in enumerate(zip(prompts, samples))])
    groups = completions_as_groups(prompts, samples, eos)
    single = ListCollator(pad, mode="list")(groups)
    B = len(prompts)
    with torch.no_grad():
        as_pairs = policy.engine(policy.model, pairs)[:B]
        as_groups = torch.tensor([v[0] for v in policy.logps(groups)])
        assert torch.allclose(as_pairs, as_groups, atol=1e-4), (as_pairs - as_groups).abs().max()
        passes = [
            ("log-probs (KL estimate)", lambda: policy.engine(policy.model, pairs), lambda: policy.logps(groups)),
            (
                "reward model forward",
                lambda: scorer(input_ids=pairs["input_ids"], attention_mask=pairs["attention_mask"]),
                lambda: scorer(input_ids=single["input_ids"], attention_mask=single["attention_mask"]),
            ),
        ]
        print(
            f"{B} samples of up to {args.new_tokens} tokens; rows: pairs {pairs['input_ids'].shape[0]}, "
            f"groups of one {single['input_ids'].shape[0]}"
        )
        print("| pass | fake pairs (s) | groups of one (s) | ratio |")
        print("| --- | --- | --- | --- |")
        for name, old, new in passes:
            a, b = timed(old), timed(new)
            print(f"| {name} | {a:.3f} | {b:.3f} | {b / a:.2f} |", flush=True)


if __name__ == "__main__":
    main()
