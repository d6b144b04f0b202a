#!/usr/bin/env bash
# The benchmark of docs/performance.md, on a machine with a GPU: the Hugging
# Face reference first (tools/reference/hf_bench.py; its process exits and
# frees the GPU), then tools/gpu_bench.cpp, which measures the ceilings and
# the CUDA backend and prints one table with both. Run both in one session on
# one device so that every ratio compares numbers taken together.
#
#   scripts/gpu_bench.sh [DIR] [OUT]
#
# DIR holds the gpu_bench binary (a CMake build directory's bin/, default
# build-gpu/bin, or a staged bundle's bin/); OUT receives hf_bench.json,
# gpu_bench.json and both logs (default: a new temporary directory).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$root/build-gpu/bin}
out=${2:-$(mktemp -d)}
config=${KVACTOR_BENCH_CONFIG:-$root/tools/shapes/llama3-8b}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null

PYTHONUNBUFFERED=1 timeout 240 python3 "$root/tools/reference/hf_bench.py" --config "$config" \
  --out "$out/hf_bench.json" 2>&1 | tee "$out/hf_bench.log" | grep -v Warning
[ -f "$out/hf_bench.json" ] || echo "gpu_bench.sh: the HF reference gave no numbers (see $out/hf_bench.log)"

timeout 300 "$dir/gpu_bench" --config "$config/config.json" --hf "$out/hf_bench.json" \
  --json "$out/gpu_bench.json" 2>&1 | tee "$out/gpu_bench.log"
