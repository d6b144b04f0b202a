#!/usr/bin/env bash
# Installs what is missing, then configures and builds kvactor into build/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release ${KVACTOR_CMAKE_ARGS:-} >/dev/null
cmake --build build -j"$(nproc)"
