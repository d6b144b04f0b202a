#!/usr/bin/env bash
# Builds kvactor and runs every test that needs no GPU (CTest label gpu is
# excluded: those run on a GPU machine, see scripts/gpu_tests.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" -LE gpu
