#!/usr/bin/env bash
# A soak run (not part of CI): kvactord under a mixed load from kvactor-bench
# for a given time, its memory, KV pages and latencies sampled over time.
#
#   scripts/soak.sh [--duration-s 3600] [--out DIR] [--sample-s 5] [--round-s 60]
#
# The load comes in rounds of --round-s seconds, cycling through six
# scenarios of kvactor-bench (docs/bench.md): chat, shared-prefix,
# cancel-storm, long-prompt, system-prompt and fixed; each round uses a new
# seed, so new prompts, while the prefix cache keeps what earlier rounds left.
# Between rounds the daemon must go idle: every KV page not pinned comes back.
#
# Writes into DIR (default soak-<date>/):
#   samples.csv  every --sample-s: t_s, rss_kb (VmRSS of the daemon),
#                hwm_kb (VmHWM), kv_pages_used, kv_pages_pinned,
#                requests_running, requests_waiting, connections,
#                requests_total, preemptions, generated_tokens
#   rounds.csv   per round: its scenario, requests sent/finished, errors,
#                protocol violations, TTFT/ITL/end-to-end p50 and p99 (ms),
#                output tokens/s, kv_pages_used once idle
#   round-N.json each round's full kvactor-bench report
#   soak.png     RSS, KV pages and latencies over time (kvactor-soak-plot)
#   summary.txt  what is printed at the end
#   kvactord.log the daemon's log
#
# Binaries: $KVACTORD, $KVACTOR_BENCH and $KVACTOR_SOAK_PLOT, by default the
# ones in build/bin (scripts/build.sh). The daemon runs with one CPU thread
# on the embedded default model and a small KV cache (384 pages of 16
# tokens), so that the prefix cache evicts and busy rounds preempt.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
duration=3600 sample=5 round=60 out=""
while (($#)); do
  case "$1" in
    --duration-s) duration="$2"; shift 2 ;;
    --sample-s) sample="$2"; shift 2 ;;
    --round-s) round="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "soak: unknown argument $1" >&2; exit 2 ;;
  esac
done
kvactord="${KVACTORD:-$root/build/bin/kvactord}"
bench="${KVACTOR_BENCH:-$root/build/bin/kvactor-bench}"
plotter="${KVACTOR_SOAK_PLOT:-$root/build/bin/kvactor-soak-plot}"
for b in "$kvactord" "$bench"; do
  [ -x "$b" ] || { echo "soak: $b is missing; run scripts/build.sh" >&2; exit 2; }
done
for tool in jq bc; do
  command -v "$tool" >/dev/null || { echo "soak: needs $tool" >&2; exit 2; }
done
out="${out:-soak-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$out"

cat >"$out/kvactord.toml" <<'EOF'
[backend]
cpu_threads = 1

[kv]
num_pages = 384

[[system_prompt]]
name = "soak"
text = "The Python Language Reference describes the syntax and core semantics of the language. It is terse, but attempts to be exact and complete."
EOF

"$kvactord" --config "$out/kvactord.toml" --port 0 --metrics-port 0 2>"$out/kvactord.log" &
daemon=$!
sampler=""
cleanup() {
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null || true
  kill "$daemon" 2>/dev/null || true
}
trap cleanup EXIT
port=""
for _ in $(seq 600); do
  port="$(grep -o ' serving .*listen=[0-9.]*:[0-9]*' "$out/kvactord.log" | sed 's/.*://' || true)"
  [ -n "$port" ] && break
  kill -0 "$daemon" 2>/dev/null || { cat "$out/kvactord.log" >&2; exit 1; }
  sleep 0.1
done
[ -n "$port" ] || { echo "soak: kvactord did not start" >&2; exit 1; }

# One {"op":"stats"} answer, over bash's own /dev/tcp.
stats() {
  local line
  exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
  printf '%s\n' '{"op":"stats"}' >&3
  IFS= read -r -t 5 line <&3 || true
  exec 3<&-
  printf '%s\n' "$line"
}
rss_kb() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$daemon/status"; }

start=$(date +%s.%N)
elapsed() { printf '%.1f' "$(bc -l <<<"$(date +%s.%N) - $start")"; }

echo "t_s,rss_kb,hwm_kb,kv_pages_used,kv_pages_pinned,requests_running,requests_waiting,connections,requests_total,preemptions,generated_tokens" \
  >"$out/samples.csv"
(
  while kill -0 "$daemon" 2>/dev/null; do
    s="$(stats 2>/dev/null || true)"
    if [ -n "$s" ]; then
      echo "$(elapsed),$(rss_kb VmRSS),$(rss_kb VmHWM),$(jq -r '.stats | [.kv_pages_used, .kv_pages_pinned,
        .requests_running, .requests_waiting, .connections, .requests_total, .preemptions, .generated_tokens]
        | map(tostring) | join(",")' <<<"$s")" >>"$out/samples.csv"
    fi
    sleep "$sample"
  done
) &
sampler=$!

scenarios=(chat shared-prefix cancel-storm long-prompt system-prompt fixed)
load_of() {
  case "$1" in
    chat) echo "--rate 4" ;;
    shared-prefix) echo "--rate 6 --prefixes 8 --prefix-len 256" ;;
    cancel-storm) echo "--concurrency 24" ;;
    long-prompt) echo "--rate 3 --long-prompt-len 900 --long-every 8" ;;
    system-prompt) echo "--rate 6 --system soak" ;;
    fixed) echo "--concurrency 8" ;;
  esac
}
echo "round,scenario,start_s,end_s,sent,finished,errors,protocol_violations,ttft_p50_ms,ttft_p99_ms,itl_p50_ms,itl_p99_ms,e2e_p50_ms,e2e_p99_ms,output_tok_s,idle_kv_pages_used" \
  >"$out/rounds.csv"
echo "soak: kvactord pid $daemon on port $port; ${duration}s of mixed load in ${round}s rounds into $out/" >&2
i=0
while :; do
  t0="$(elapsed)"
  remaining=$(echo "$duration - $t0" | bc -l)
  (($(echo "$remaining < $round / 2" | bc -l))) && break
  scenario="${scenarios[i % ${#scenarios[@]}]}"
  length=$(echo "if ($remaining < $round) $remaining else $round" | bc -l)
  # shellcheck disable=SC2046
  "$bench" --port "$port" --scenario "$scenario" $(load_of "$scenario") --duration-s "$length" \
    --seed $((i + 1)) --out "$out/round-$i.json" >"$out/round-$i.txt" 2>/dev/null ||
    echo "soak: round $i ($scenario): kvactor-bench exited with $?" >&2
  t1="$(elapsed)"
  idle_pages="$(stats | jq -r '.stats.kv_pages_used - .stats.kv_pages_pinned')"
  jq -r --arg i "$i" --arg t0 "$t0" --arg t1 "$t1" --arg idle "$idle_pages" '
    def r2: if type == "number" then (. * 100 | round / 100) else . end;
    def l(k; p): .latency_ms[k][p] // "" | r2 | tostring;
    [$i, .scenario.name, $t0, $t1, .requests.sent, .requests.finished,
     ([.requests.errors[]] | add // 0),
     ([.protocol.missing_terminal, .protocol.duplicate_terminal, .protocol.lines_after_terminal,
       .protocol.usage_mismatches, .protocol.unattributed_lines] | add),
     l("ttft"; "p50"), l("ttft"; "p99"), l("itl"; "p50"), l("itl"; "p99"), l("e2e"; "p50"), l("e2e"; "p99"),
     (.throughput.output_tokens_per_s | r2), $idle] | map(tostring) | join(",")' "$out/round-$i.json" >>"$out/rounds.csv"
  echo "soak: $(tail -1 "$out/rounds.csv")" >&2
  i=$((i + 1))
done

kill "$sampler" 2>/dev/null || true
wait "$sampler" 2>/dev/null || true
sampler=""
final_stats="$(stats)"
kill -TERM "$daemon"
code=0
wait "$daemon" || code=$?
trap - EXIT

# -- summary -------------------------------------------------------------------
{
  echo "soak: $(elapsed) s, $i rounds, kvactord exit code $code"
  awk -F, 'NR > 1 { sent += $5; fin += $6; err += $7; prot += $8 }
           END { printf "requests: %d sent, %d finished, %d errors (disconnects of cancel-storm are not errors), %d protocol violations\n", sent, fin, err, prot }' \
    "$out/rounds.csv"
  awk -F, 'NR == 2 { first = $2 } NR > 1 { if ($2 > max) max = $2; last = $2; lt = $1 }
           END { printf "RSS: %.1f MiB at the first sample, %.1f MiB at the last (t=%s s), %.1f MiB max\n", first / 1024, last / 1024, lt, max / 1024 }' \
    "$out/samples.csv"
  jq -r '.stats | "KV pages at the end: \(.kv_pages_used) used of \(.kv_pages_total), \(.kv_pages_pinned) pinned; \(.requests_total) requests, \(.preemptions) preemptions, \(.prefix_cache_evictions) prefix-cache evictions"' \
    <<<"$final_stats"
  awk -F, 'NR > 1 && $16 != 0 { bad++ } END { printf "rounds that did not end with every unpinned page free: %d\n", bad }' "$out/rounds.csv"
  echo "latency by scenario, first round vs last round (ms):"
  for s in "${scenarios[@]}"; do
    awk -F, -v s="$s" '$2 == s { n++; if (n == 1) f = $0; l = $0 }
      END { if (!n) exit; split(f, a, ","); split(l, b, ",");
            printf "  %-14s %2d rounds  TTFT p50 %s -> %s, p99 %s -> %s; ITL p50 %s -> %s, p99 %s -> %s\n",
                   s, n, a[9], b[9], a[10], b[10], a[11], b[11], a[12], b[12] }' "$out/rounds.csv"
  done
} | tee "$out/summary.txt"

if [ -x "$plotter" ]; then
  "$plotter" "$out/samples.csv" "$out/rounds.csv" "$out/soak.png" && echo "plot: $out/soak.png"
else
  echo "soak: $plotter is missing: no plot" >&2
fi
