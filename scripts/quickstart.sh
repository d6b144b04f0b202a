#!/usr/bin/env bash
# Sets up, builds, and generates text with the embedded default model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
./build/bin/kvactor generate --prompt 'The "with" statement' --max-tokens 64 --temperature 0
