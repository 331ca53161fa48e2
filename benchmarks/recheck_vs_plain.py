"""Re-measure preflight against the plain PyTorch step on both workloads of `dpo_vs_trl.py` (2 alternating
rounds, each run in its own process): a quick check that a change kept the speed, without TRL's long runs.

    python benchmarks/recheck_vs_plain.py      # prints each run; medians go into RESULTS.md by hand
"""

import argparse
import sys

sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
sys.argv = ["dpo_vs_trl.py"]
import dpo_vs_trl as B  # noqa: E402 (after the path that finds it)

args = argparse.Namespace(
    worker=False,
    runner=None,
    workload="standard",
    vocab=32000,
    pairs=100,
    device="cpu",
    json=None,
    extra=None,
    threads=0,
    repeats=2,
    sweep="",
    out="",
    peak_tflops=None,
)
out = {}
for workload in ("standard", "prompt_heavy"):
    for rnd in range(2):
        for runner in ("preflight", "plain") if rnd == 0 else ("plain", "preflight"):
            r = B.measure(runner, workload, 32000, args)
            out.setdefault(f"{runner}/{workload}", []).append(r)
            print(
                runner,
                workload,
                {k: r[k] for k in r if k in ("epoch", "median_step", "peak_mib", "fit_s", "epoch_s")},
                flush=True,
            )
for key, rows in out.items():
    print(key, "median epoch", sorted(r["epoch_s"] for r in rows)[len(rows) // 2 - 1 : len(rows) // 2 + 1])
