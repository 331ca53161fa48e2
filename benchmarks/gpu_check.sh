#!/usr/bin/env bash
# The GPU checks, as one script of at most 8 minutes: the marked GPU tests, then the benchmarks in bf16
# (sdpa and flex_attention paths, step time, peak allocated memory, MFU, preflight and TRL side by side).
# Usage (on a machine with CUDA and the package installed with .[dev,bench]):
#   bash benchmarks/gpu_check.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks}"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
timeout 180 python -m pytest -q tests/gpu 2>&1 | tee "$out/gpu-tests.log"
timeout 150 python benchmarks/dpo_vs_trl.py --device cuda --repeats 1 --out "$out/RESULTS-gpu.md" 2>&1 | tee "$out/gpu-bench.log"
timeout 150 python benchmarks/long_context.py --device cuda --parts sweep,fixed --out "$out/RESULTS-gpu.md" 2>&1 \
  | tee "$out/gpu-long-context.log"
