#!/usr/bin/env bash
# The engine's benchmarks on a GPU (docs/performance.md, "The engine on the
# GPU"), through the product path: kvactord with device "cuda" and dummy
# Llama-3-8B weights, driven by kvactor-bench. In one session on one device:
#   1. the ceilings (gpu_bench --only ceilings);
#   2. Hugging Face generate() on the throughput workload
#      (tools/reference/hf_generate_bench.py; its process exits first);
#   3. throughput: 256 requests of 512 prompt and 256 output tokens, all at
#      once, with gpu.streams = 1 and 2;
#   4. with the better stream count: chat, shared-prefix (prefix cache on and
#      off), long-prompt (prefill_chunk 512 against unlimited);
# then prints the tables (tools/reference/engine_bench_report.py).
#
#   scripts/gpu_engine_bench.sh [DIR] [OUT]
#
# DIR holds kvactord, kvactor-bench and gpu_bench (a build's bin/, default
# build-gpu/bin, or a staged bundle's bin/); OUT receives every JSON report,
# plot and log (default: a new temporary directory). The Llama 3 tokenizer
# comes from $KVACTOR_LLAMA3_TOKENIZER (default: the tokenizer cache's).
# KVACTOR_BENCH_SCENARIOS=0 stops after the throughput runs (steps 1 to 3);
# KVACTOR_BENCH_HF=0 skips step 2 and KVACTOR_BENCH_STREAMS (default "1 2")
# picks the stream counts of step 3, for quick comparisons of our own builds.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$root/build-gpu/bin}
out=${2:-$(mktemp -d)}
shape=${KVACTOR_BENCH_SHAPE:-$root/tools/shapes/llama3-8b}
tokenizer=${KVACTOR_LLAMA3_TOKENIZER:-$HOME/.cache/kvactor/tokenizers/llama3/tokenizer.json}
port=${KVACTOR_BENCH_PORT:-7171}
mkdir -p "$out"

# The dummy model: the shape's config.json and the tokenizer, no weights.
model=$out/llama3-8b-dummy
mkdir -p "$model"
cp "$shape/config.json" "$model/" && cp "$tokenizer" "$model/tokenizer.json" || exit 1
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv 2>/dev/null

echo "== ceilings"
timeout 60 "$dir/gpu_bench" --only ceilings --json "$out/ceilings.json"

if [ "${KVACTOR_BENCH_HF:-1}" != 0 ]; then
  echo "== transformers generate()"
  PYTHONUNBUFFERED=1 timeout 150 python3 "$root/tools/reference/hf_generate_bench.py" --config "$shape" \
    --requests 256 --prompt-len 512 --output-len 256 --out "$out/hf_generate.json" 2>&1 |
    tee "$out/hf_generate.log" | grep -v Warning
fi

# start_daemon, stop_daemon, bench
source "$root/scripts/gpu_daemon.sh"

throughput=(--scenario fixed --prompt-len 512 --output-len 256 --concurrency 256 --requests 256)
for streams in ${KVACTOR_BENCH_STREAMS:-1 2}; do
  echo "== throughput, gpu.streams = $streams"
  start_daemon "streams$streams" gpu.streams=$streams && bench "throughput_streams$streams" "${throughput[@]}" --seed $streams
  stop_daemon
done
# Open loop: a closed loop's requests start and end in waves, so a long
# prefill would land in the short requests' time to first token rather than
# between their tokens.
long_prompt=(--scenario long-prompt --long-prompt-len 10000 --long-every 16 --prompt-len 64 --output-len 128
  --long-output-len 16 --rate 20 --requests 192 --seed 13)
if [ "${KVACTOR_BENCH_SCENARIOS:-1}" = 0 ]; then
  echo
  python3 "$root/tools/reference/engine_bench_report.py" "$out"
  exit 0
fi
best=$(python3 - "$out" <<'PY'
import json, sys
rate = {}
for s in (1, 2):
    try:
        rate[s] = json.load(open(f"{sys.argv[1]}/throughput_streams{s}.json"))["throughput"]["output_tokens_per_s"]
    except (OSError, KeyError, ValueError):
        rate[s] = 0
print(max(rate, key=rate.get))
PY
)
echo "== scenarios with gpu.streams = $best (the faster)"
if start_daemon scenarios gpu.streams=$best; then
  bench chat --scenario chat --concurrency 64 --requests 256 --seed 11
  bench shared_prefix_on --scenario shared-prefix --prefixes 4 --prefix-len 512 --prompt-len 32 --output-len 64 \
    --concurrency 64 --requests 384 --seed 12
  bench long_prompt_chunk512 "${long_prompt[@]}"
fi
stop_daemon
if start_daemon prefix_off gpu.streams=$best prefix_cache.enabled=false; then
  bench shared_prefix_off --scenario shared-prefix --prefixes 4 --prefix-len 512 --prompt-len 32 --output-len 64 \
    --concurrency 64 --requests 384 --seed 12
fi
stop_daemon
# Unlimited chunks: a step must hold a whole long prompt, so the token
# budget grows with it.
if start_daemon unchunked gpu.streams=$best scheduler.prefill_chunk=0 scheduler.max_batch_tokens=16384; then
  bench long_prompt_unchunked "${long_prompt[@]}"
fi
stop_daemon

echo
python3 "$root/tools/reference/engine_bench_report.py" "$out"
