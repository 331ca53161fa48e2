"""The README's DDP and FSDP2 commands, run again and again while other processes keep every core busy.

    python benchmarks/exit_under_load.py [--runs 20] [--load 2] [--steps 3]

A finished distributed fit must exit 0 every time, however busy the machine is: a scheduler reads any
other status as a crash. Each run is the README's command with the suite's short-run arguments, from a
fresh folder; ``--load`` processes spin on the CPU for the whole loop. Prints one line per run and a table
(runs, exit codes, seconds), appends the table to benchmarks/RESULTS.md, and exits 1 if any run exited
with another status than 0 (its last lines of output are printed).
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing as mp
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def spin() -> None:
    while True:
        pass


def readme_commands() -> dict[str, list[str]]:
    """The README's DDP and FSDP2 `preflight fit` commands, as written there."""
    from tests.test_readme import commands, readme_blocks

    found = {}
    for block in readme_blocks():
        for command in commands(block.body) if block.lang == "bash" else ():
            text = " ".join(command)
            if command[:2] == ["preflight", "fit"] and "--trainer.devices" in command:
                if "ModelParallelStrategy" in text:
                    found["fsdp2"] = command
                elif "ddp" in command:
                    found["ddp"] = command
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs of each command")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2, help="spinning processes beside the runs")
    parser.add_argument("--steps", type=int, default=3, help="trainer.max_steps of each run")
    parser.add_argument("--no-results", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    short = [
        "--trainer.max_steps",
        str(args.steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
    ]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    preflight = str(Path(sys.executable).parent / "preflight")
    spinners = [mp.Process(target=spin, daemon=True) for _ in range(args.load)]
    for process in spinners:
        process.start()
    codes: dict[str, collections.Counter] = {}
    seconds: dict[str, list[float]] = {}
    failures = []
    try:
        for run in range(1, args.runs + 1):
            for name, command in readme_commands().items():
                with tempfile.TemporaryDirectory(prefix="preflight-exit-") as folder:
                    for shipped in ("assets", "configs"):
                        os.symlink(ROOT / shipped, Path(folder) / shipped)
                    start = time.perf_counter()
                    result = subprocess.run(
                        [preflight, *command[1:], *short],
                        cwd=folder,
                        env=env,
                        capture_output=True,
                        text=True,
                        timeout=900,
                    )
                    took = time.perf_counter() - start
                codes.setdefault(name, collections.Counter())[result.returncode] += 1
                seconds.setdefault(name, []).append(took)
                print(
                    f"{name} run {run}: exit {result.returncode} in {took:.1f} s "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                if result.returncode != 0:
                    failures.append((name, run, (result.stdout + result.stderr)[-2000:]))
    finally:
        for process in spinners:
            process.terminate()
    table = ["| command | runs | exit codes | seconds (min / median / max) |", "| --- | --- | --- | --- |"]
    for name, counter in codes.items():
        times = sorted(seconds[name])
        table.append(
            f"| {name} | {sum(counter.values())} | "
            f"{', '.join(f'{code}: {n}' for code, n in sorted(counter.items()))} | "
            f"{times[0]:.1f} / {times[len(times) // 2]:.1f} / {times[-1]:.1f} |"
        )
    print("\n".join(table))
    if not args.no_results:
        header = (
            f"\n## Distributed fits exit 0 under load (`python benchmarks/exit_under_load.py "
            f"{shlex.join(sys.argv[1:])}`)\n\n{platform.machine()}, {os.cpu_count()} cores, {args.load} "
            f"spinning processes beside each run, `--trainer.max_steps {args.steps}`.\n\n"
        )
        with open(HERE / "RESULTS.md", "a", encoding="utf-8") as f:
            f.write(header + "\n".join(table) + "\n")
    for name, run, tail in failures:
        print(f"\n{name} run {run} failed:\n{tail}", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
