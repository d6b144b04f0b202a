#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/) with clang and runs each for a
# bounded time from its committed seed corpus (tests/fuzz/corpus/<name>/).
# Fails on any crash, sanitizer report, leak, timeout or out-of-memory; the
# input that caused it is kept in the output directory.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]        (default 20)
#
# Environment: FUZZ_BUILD_DIR (default build-fuzz), FUZZ_OUT (default
# $FUZZ_BUILD_DIR/fuzz-out: new corpus entries and crash inputs),
# FUZZ_TARGETS (names to run, default all).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
build="${FUZZ_BUILD_DIR:-build-fuzz}"
out="${FUZZ_OUT:-$build/fuzz-out}"
command -v clang++ >/dev/null || { echo "fuzz: clang++ is missing (scripts/setup.sh installs it)" >&2; exit 1; }

CC=clang CXX=clang++ cmake -S . -B "$build" -DKVACTOR_FUZZ=ON -DKVACTOR_TESTS=OFF -DKVACTOR_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
cmake --build "$build" --target fuzz_targets -j"$(nproc)" >/dev/null
# The tokenizer target also fuzzes the cached Llama 2 tokenizer.json.
bash scripts/fetch_tokenizers.sh "$HOME/.cache/kvactor/tokenizers" >/dev/null || true

targets="${FUZZ_TARGETS:-$(cd tests/fuzz/corpus && ls)}"
rm -rf "$out"
mkdir -p "$out"
export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
failed=0
printf '%-18s %10s %9s %6s %8s  %s\n' target runs exec/s cov corpus result
for t in $targets; do
  mkdir -p "$out/$t/corpus"
  log="$out/$t/log.txt"
  status=0
  "$build/tests/fuzz/${t}_fuzz" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
    -print_final_stats=1 -artifact_prefix="$out/$t/" "$out/$t/corpus" "tests/fuzz/corpus/$t" >"$log" 2>&1 || status=$?
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
  corpus=$(ls "$out/$t/corpus" | wc -l)
  if ((status == 0)); then
    result=ok
  else
    result="FAILED (exit $status): $(ls "$out/$t" | grep -E '^(crash|leak|timeout|oom|slow-unit)-' | head -1)"
    failed=1
  fi
  printf '%-18s %10s %9s %6s %8s  %s\n' "$t" "$runs" "$speed" "$cov" "$corpus" "$result"
  if ((status != 0)); then
    grep -E 'ERROR|SUMMARY|property broken|runtime error|==[0-9]+==' "$log" | head -20 >&2 || true
    tail -40 "$log" >&2
  fi
done
if ((failed)); then
  echo "fuzz: FAILED; the inputs are in $out/<target>/; make each a regression test" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a finding"
