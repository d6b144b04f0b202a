#!/usr/bin/env bash
# What CI runs (.ci/run), in four stages, each with a header and its
# summary:
#   1. the normal build and every test that needs no GPU (CTest label gpu is
#      excluded: those run on a GPU machine, see scripts/gpu_tests.sh);
#   2. the same tests built with AddressSanitizer and UBSan;
#   3. the threaded tests built with ThreadSanitizer (scripts/sanitizers.sh);
#   4. every fuzz target for 20 seconds (scripts/fuzz.sh).
# Any failure, sanitizer report or fuzzer finding fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
times=()
stage() {
  local start=$SECONDS
  echo
  echo "======== [$1] $2 ========"
  "${@:3}"
  times+=("[$1] $((SECONDS - start)) s")
}
stage 1/4 "build and CPU tests (build/)" \
  bash -c 'bash scripts/build.sh && ctest --test-dir build --output-on-failure -j"$(nproc)" -LE gpu'
stage 2/4 "AddressSanitizer + UBSan: every CPU test (build-asan/)" bash scripts/sanitizers.sh address
stage 3/4 "ThreadSanitizer: threaded tests (build-tsan/)" bash scripts/sanitizers.sh thread
stage 4/4 "libFuzzer: every target for 20 s (build-fuzz/)" bash scripts/fuzz.sh 20
echo
echo "======== all stages passed: ${times[*]} ========"
