#!/usr/bin/env bash
# Sets up, builds, and starts the kvactord daemon on the embedded default
# model, in the foreground on 127.0.0.1:7070 (metrics on :9090). Talk to it
# from another terminal with `nc localhost 7070`; Ctrl-C stops it gracefully.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/build.sh
echo "quickstart: starting kvactord on 127.0.0.1:7070; try: nc localhost 7070" >&2
exec ./build/bin/kvactord --config config/kvactord.toml
