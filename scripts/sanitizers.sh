#!/usr/bin/env bash
# The sanitizer stages of CI (scripts/test.sh runs them after the normal
# build and tests):
#   address  AddressSanitizer + UndefinedBehaviorSanitizer (LeakSanitizer
#            included): every CPU test, in build-asan/
#   thread   ThreadSanitizer: the tests that run threads (actors, the line
#            server and the daemon, the threaded engine and CPU backend
#            tests, the bridge to CAF), in build-tsan/
# Both build without CUDA, at -O1 with debug info. A stage fails on a failed
# test and on any sanitizer report, also one written by a child process
# (the kvactord the daemon tests start): reports go to files, which are
# printed and counted after the tests.
#
#   scripts/sanitizers.sh [address|thread]...   (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."
stages=("${@:-address thread}")
# shellcheck disable=SC2206
stages=(${stages[*]})
jobs="$(nproc)"

# Tests that run threads, for ThreadSanitizer: every test of tests/actors and
# tests/net, the fault tests of tests/hardening, the runtime tests whose
# engine or CPU backend runs a thread pool, and the bridge's own test.
thread_tests() {
  local names=()
  for f in tests/actors/*_test.cpp tests/net/*_test.cpp tests/hardening/faults_test.cpp; do
    names+=("$(basename "$f" .cpp)")
  done
  names+=(caf_bridge_test thread_pool_test cpu_backend_test engine_batching_test engine_determinism_test)
  echo "${names[@]}"
}

# Runs `ctest` with the sanitizer writing to files in $1; fails on a failed
# test or any report.
run_checked() {
  local reports="$1"
  shift
  rm -rf "$reports"
  mkdir -p "$reports"
  local status=0
  ctest "$@" || status=$?
  local files
  files="$(find "$reports" -type f | sort)"
  if [ -n "$files" ]; then
    echo "sanitizers: $(echo "$files" | wc -l) report(s):" >&2
    for f in $files; do
      echo "---- $f" >&2
      head -60 "$f" >&2
    done
    return 1
  fi
  return "$status"
}

for stage in "${stages[@]}"; do
  case "$stage" in
    address)
      build=build-asan
      echo "==> sanitizers: AddressSanitizer + UndefinedBehaviorSanitizer, every CPU test ($build/)"
      cmake -S . -B "$build" -DKVACTOR_CUDA=OFF -DKVACTOR_SANITIZE=address,undefined \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
      cmake --build "$build" -j"$jobs" >/dev/null
      reports="$PWD/$build/sanitizer-reports"
      export ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1:log_path=$reports/asan"
      export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$reports/ubsan"
      run_checked "$reports" --test-dir "$build" --output-on-failure -j"$jobs" -LE gpu
      unset ASAN_OPTIONS UBSAN_OPTIONS
      ;;
    thread)
      build=build-tsan
      echo "==> sanitizers: ThreadSanitizer, actor, daemon and threaded engine tests ($build/)"
      cmake -S . -B "$build" -DKVACTOR_CUDA=OFF -DKVACTOR_SANITIZE=thread \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" \
        -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
      read -ra tests <<<"$(thread_tests)"
      cmake --build "$build" -j"$jobs" --target kvactord "${tests[@]}" >/dev/null
      reports="$PWD/$build/sanitizer-reports"
      export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:history_size=7:suppressions=$PWD/tests/sanitizers/tsan.supp:log_path=$reports/tsan"
      regex="^($(IFS='|'; echo "${tests[*]}"))\$"
      run_checked "$reports" --test-dir "$build" --output-on-failure -j"$jobs" -R "$regex"
      unset TSAN_OPTIONS
      ;;
    *)
      echo "sanitizers: unknown stage '$stage' (address, thread)" >&2
      exit 2
      ;;
  esac
done
