# Sourced by the GPU benchmark scripts: kvactord on the GPU with dummy
# weights, and kvactor-bench runs against it. The caller sets
#   dir    the directory of kvactord and kvactor-bench
#   model  the model directory (config.json and tokenizer.json)
#   port   the port kvactord listens on
#   out    where logs and reports go
# and gets stop_daemon run when it exits.

daemon_pid=

# start_daemon NAME [kvactord arguments ...]: kvactord on the GPU, waiting
# until it listens (or has died); prints its device and serving lines.
start_daemon() {
  local name=$1
  shift
  "$dir/kvactord" --model "$model" --port "$port" --metrics-port 0 model.dummy=true backend.device=cuda "$@" \
    >"$out/$name.daemon.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 600); do
    grep -q 'listen=' "$out/$name.daemon.log" && { grep -E 'cuda:|serving' "$out/$name.daemon.log"; return 0; }
    kill -0 "$daemon_pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "$(basename "$0"): kvactord ($name) did not start:"
  tail -n 20 "$out/$name.daemon.log"
  return 1
}

stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  kill -TERM "$daemon_pid" 2>/dev/null
  wait "$daemon_pid" 2>/dev/null
  daemon_pid=
}
trap stop_daemon EXIT

# bench NAME [kvactor-bench options ...]: one run against the daemon, its
# report in $out/NAME.{json,png,txt}.
bench() {
  local name=$1
  shift
  echo "-- $name"
  timeout 120 "$dir/kvactor-bench" --port "$port" --max-connections 128 --drain-timeout-s 60 --out "$out/$name.json" \
    --plot "$out/$name.png" "$@" >"$out/$name.txt" 2>"$out/$name.err"
  cat "$out/$name.txt"
}
