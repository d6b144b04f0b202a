#!/usr/bin/env bash
# What CI runs (.ci/run): the build and every test that needs no GPU (CTest
# label gpu is excluded: those run on a GPU machine, see scripts/gpu_tests.sh).
# The sanitizer builds (scripts/sanitizers.sh) and the fuzz targets
# (scripts/fuzz.sh) run separately until they are green in CI's time budget
# (docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" -LE gpu
