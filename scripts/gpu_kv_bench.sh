#!/usr/bin/env bash
# The KV-cache features on a GPU (docs/kv_cache.md), Llama-3-8B's shape with
# dummy bf16 weights, in one session on one device:
#   1. the memory profile: `kvactor profile --device cuda` for bf16, fp8 and
#      int8 KV at 512, 2,048, 8,192 and 32,768 tokens (formula against the
#      device memory measured around each cache);
#   2. the KV pages kvactord makes at gpu.memory_fraction 0.9 for bf16, fp8
#      and int8 (its startup log);
#   3. pinned system prompts: time to first token of a 2,000-token system
#      prompt plus a 20-token user turn, from the pinned pages
#      (kvactor-bench system-prompt) against the same length sent whole to a
#      daemon with no system prompt and the prefix cache off (fixed);
#   4. decode throughput with each KV format: 64 requests of 2,048 prompt and
#      256 output tokens at once.
#
#   scripts/gpu_kv_bench.sh [DIR] [OUT]
#
# DIR holds kvactord, kvactor-bench and kvactor (a build's bin/, default
# build-gpu/bin, or a staged bundle's bin/); OUT receives the reports, plots
# and logs (default: a new temporary directory). The Llama 3 tokenizer comes
# from $KVACTOR_LLAMA3_TOKENIZER (default: the tokenizer cache's).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$root/build-gpu/bin}
out=${2:-$(mktemp -d)}
shape=${KVACTOR_BENCH_SHAPE:-$root/tools/shapes/llama3-8b}
tokenizer=${KVACTOR_LLAMA3_TOKENIZER:-$HOME/.cache/kvactor/tokenizers/llama3/tokenizer.json}
port=${KVACTOR_BENCH_PORT:-7172}
mkdir -p "$out"
model=$out/llama3-8b-dummy
mkdir -p "$model"
cp "$shape/config.json" "$model/" && cp "$tokenizer" "$model/tokenizer.json" || exit 1

echo "== 1. memory profile (kvactor profile --device cuda)"
for dtype in bf16 fp8 int8; do
  echo "-- kv dtype $dtype"
  timeout 240 "$dir/kvactor" profile --device cuda --model "$model" --dummy --kv-dtype "$dtype" \
    --seq-lens 512,2048,8192,32768 --chunk 2048 --png "$out/profile_$dtype.png" | tee "$out/profile_$dtype.txt"
done

# start_daemon, stop_daemon, bench
source "$root/scripts/gpu_daemon.sh"

# A system prompt of exactly 2,000 Llama 3 tokens (without BOS).
python3 - "$tokenizer" "$out/system_prompt.toml" <<'PY'
import sys
from tokenizers import Tokenizer
tok = Tokenizer.from_file(sys.argv[1])
words = ("You are a careful assistant for a team that runs large language model servers. Answer with the "
         "facts you are sure of, say what you do not know, and keep each answer short and exact. ").split()
text, i = "", 0
while len(tok.encode(text, add_special_tokens=False).ids) < 2000:
    text += ("" if not text else " ") + words[i % len(words)] + str(i // len(words))
    i += 1
ids = tok.encode(text, add_special_tokens=False).ids[:2000]
text = tok.decode(ids)
n = len(tok.encode(text, add_special_tokens=False).ids)
with open(sys.argv[2], "w") as f:
    f.write('[[system_prompt]]\nname = "long"\ntext = """' + text.replace("\\", "\\\\").replace('"', '\\"') + '"""\n')
print(f"system prompt: {n} tokens")
PY

echo "== 2. KV pages at gpu.memory_fraction 0.9, and 4. decode throughput, per KV format"
decode=(--scenario fixed --prompt-len 2048 --output-len 256 --concurrency 64 --requests 64)
for dtype in bf16 fp8 int8; do
  if start_daemon "decode_$dtype" kv.dtype=$dtype; then
    bench "decode_$dtype" "${decode[@]}" --seed 3
  fi
  stop_daemon
done

echo "== 3. time to first token: 2,000-token system prompt + 20-token user turn"
if start_daemon pinned --config "$out/system_prompt.toml"; then
  bench pinned --scenario system-prompt --system long --prompt-len 20 --output-len 16 --concurrency 1 --requests 40 --seed 5
fi
stop_daemon
if start_daemon unpinned prefix_cache.enabled=false; then
  bench unpinned --scenario fixed --prompt-len 2020 --output-len 16 --concurrency 1 --requests 40 --seed 5
fi
stop_daemon
