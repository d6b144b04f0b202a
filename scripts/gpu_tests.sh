#!/usr/bin/env bash
# Runs the GPU tests on a machine with a GPU: every gpu-labelled test binary,
# then compute-sanitizer over them (memcheck; racecheck and synccheck on the
# kernel tests, which run every attention and sampling kernel), then the
# comparison with Hugging Face transformers on random bf16 weights of the
# llama3-1b shape (tools/reference/hf_compare.py writes the model and
# transformers' answers, cuda_hf_compare_test checks ours against them).
# Prints a summary last; exits non-zero if anything failed.
#
#   scripts/gpu_tests.sh [DIR]
#
# DIR holds the test binaries: a CMake build directory (default build-gpu) or
# a staged bundle's bin/. Test data comes from $KVACTOR_TEST_DATA and
# $KVACTOR_DEFAULT_MODEL, by default this checkout's. Logs go to
# $KVACTOR_TEST_LOGS (default: a new temporary directory), the compared
# model to $KVACTOR_HF_COMPARE_DIR (default: a directory under the logs).
# KVACTOR_GPU_SANITIZERS=0 skips compute-sanitizer (for runs that check
# code whose kernels did not change).
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dir=${1:-$root/build-gpu}
export KVACTOR_TEST_DATA=${KVACTOR_TEST_DATA:-$root/tests/data}
export KVACTOR_DEFAULT_MODEL=${KVACTOR_DEFAULT_MODEL:-$root/models/default}
export KVACTOR_SOURCE_DIR=$root
logs=${KVACTOR_TEST_LOGS:-$(mktemp -d)}
mkdir -p "$logs"
export KVACTOR_HF_COMPARE_DIR=${KVACTOR_HF_COMPARE_DIR:-$logs/hf_compare_llama3_1b}
sanitizers=${KVACTOR_GPU_SANITIZERS:-1}

# The tests labelled gpu in gpu/CMakeLists.txt, with the cases each
# sanitizer runs ('' = none). NOTE: racecheck instruments every kernel,
# cuBLAS's too, which makes it slow; restricting it with --kernel-name
# stopped it with an internal sanitizer error (2025.3.1, H100).
# KVACTOR_GPU_TESTS="a b" runs those only (a bundle that carries some).
read -r -a gpu_tests <<<"${KVACTOR_GPU_TESTS:-cuda_backend_test gpu_kernels_test cuda_engine_test}"
declare -A memcheck_cases=(
  [cuda_backend_test]='logits match*,a mixed*,invalid*,decode steps*,forward_and_sample*,fp8 and int8*,pages released*'
  [gpu_kernels_test]='*'
  [cuda_engine_test]='')
declare -A race_cases=(
  [cuda_backend_test]=''
  [gpu_kernels_test]='tensor-core*,split-KV*,GEMV*,GPU sampling*,attention over 8-bit*,8-bit KV writes*'
  [cuda_engine_test]='')

find_binary() {
  local name=$1
  for candidate in "$dir/$name" "$dir/gpu/$name" "$dir/bin/$name"; do
    [ -x "$candidate" ] && { echo "$candidate"; return 0; }
  done
  return 1
}

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
status=0
results=()

# run LABEL TIMEOUT LOG COMMAND...: runs and records one line of results.
run() {
  local label=$1 limit=$2 log=$3
  shift 3
  local start=$SECONDS
  timeout "$limit" "$@" >"$log" 2>&1
  local rc=$?
  local took=$((SECONDS - start))
  local detail
  detail=$(grep -E '^\[doctest\] (test cases|assertions)|(ERROR|RACECHECK) SUMMARY' "$log" | sed 's/^\[doctest\] //' | tr -s ' ' | paste -sd ';' -)
  if [ $rc -eq 124 ]; then
    detail="timed out after ${limit}s; $detail"
  fi
  if [ $rc -ne 0 ]; then
    status=1
    results+=("FAIL $label (${took}s, exit $rc): $detail")
    echo "---- $label failed; the end of $log:"
    tail -n 40 "$log"
  else
    results+=("ok   $label (${took}s): $detail")
  fi
}

for name in "${gpu_tests[@]}"; do
  if ! bin=$(find_binary "$name"); then
    status=1
    results+=("FAIL $name: no binary under $dir")
    continue
  fi
  run "$name" 120 "$logs/$name.log" "$bin"
  [ "$sanitizers" = 0 ] && continue
  if [ ! -x "$sanitizer" ]; then
    status=1
    results+=("FAIL compute-sanitizer not found")
    continue
  fi
  if [ -n "${memcheck_cases[$name]}" ]; then
    run "$name memcheck" 150 "$logs/$name.memcheck.log" \
      "$sanitizer" --tool memcheck --error-exitcode 99 "$bin" "--test-case=${memcheck_cases[$name]}"
  fi
  if [ -n "${race_cases[$name]}" ]; then
    run "$name racecheck" 150 "$logs/$name.racecheck.log" \
      "$sanitizer" --tool racecheck --error-exitcode 99 "$bin" "--test-case=${race_cases[$name]}"
    run "$name synccheck" 60 "$logs/$name.synccheck.log" \
      "$sanitizer" --tool synccheck --error-exitcode 99 "$bin" "--test-case=${race_cases[$name]}"
  fi
done

# Against transformers: the model directory first (its python process
# exits and frees the GPU), then our side.
if bin=$(find_binary cuda_hf_compare_test); then
  run "hf_compare.py (llama3-1b shape)" 180 "$logs/hf_compare.py.log" env PYTHONUNBUFFERED=1 \
    python3 "$root/tools/reference/hf_compare.py" --config "$root/tools/shapes/llama3-1b" --out "$KVACTOR_HF_COMPARE_DIR"
  grep '^hf_compare:' "$logs/hf_compare.py.log"
  run cuda_hf_compare_test 120 "$logs/cuda_hf_compare_test.log" "$bin"
else
  status=1
  results+=("FAIL cuda_hf_compare_test: no binary under $dir")
fi

echo
echo "==== GPU test summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)); logs in $logs"
for name in "${gpu_tests[@]}" cuda_hf_compare_test; do
  [ -f "$logs/$name.log" ] && grep -h '^summary: ' "$logs/$name.log" | sed 's/^summary: /  /'
done
printf '%s\n' "${results[@]}"
exit $status
