#!/usr/bin/env bash
# switchyard next to the servers people use today, on the same files, the
# same request and the same load:
#
#   fastapi-1w / fastapi-2w   FastAPI + uvicorn + onnxruntime (fastapi_server.py), 1 and 2 workers,
#                             uvicorn's defaults with uvicorn[standard] (uvloop, httptools)
#   fastapi-2w-asyncio        2 workers on asyncio's loop (`--loop asyncio`, the default of a plain
#                             `pip install uvicorn`): no TCP_NODELAY, ~40 ms per keep-alive request
#   fastapi-2w-asyncio-nodelay  the same on a socket that gets TCP_NODELAY (fastapi_server.py --nodelay)
#   pytriton                  Triton 2.51 (bundled with nvidia-pytriton) + python backend + onnxruntime,
#                             dynamic batching on (pytriton_server.py)
#   switchyard                target/release/switchyard on models/ as committed
#   switchyard-1thread        the same, with mlp_wide on 1 intra-op thread instead of its
#                             config's 2, in a temporary copy of the repository (an ablation)
#
# Models: digits version 2 (the MLP) and mlp_wide version 1, the same
# .onnx files everywhere, ORT threads as each model's config.toml says, for
# every server (digits 1, mlp_wide 2; peer_ort.py), spinning off. Request: the
# first held-out digits row as a 1-row V2 JSON body (benches/lib.sh write_body).
# For each server, model and concurrency: WARMUP seconds of oha (discarded),
# then DURATION seconds measured; the server's CPU is utime+stime of its whole
# process tree from /proc, as % of one core over the measured interval.
#
#   benches/peers/run.sh                          # everything, 10 s per case
#   DURATION=2 SERVERS="switchyard pytriton" benches/peers/run.sh
#
# Env: DURATION (10), WARMUP (1), CONCURRENCY ("1 8 64"), MODELS
# ("digits mlp_wide"), SERVERS (all of the above), OUT (results folder),
# WRITE_BENCHMARKS (1: replace the peers section of BENCHMARKS.md).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BENCH_ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-1 8 64}
MODELS=${MODELS:-digits mlp_wide}
SERVERS=${SERVERS:-fastapi-1w fastapi-2w fastapi-2w-asyncio fastapi-2w-asyncio-nodelay pytriton switchyard switchyard-1thread}
OUT=${OUT:-bench-results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-1}
VENV=$BENCH_ROOT/.venv/peers
REQS=benches/peers/requirements.txt
COMMAND="$0 $*"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

version_of() { case $1 in digits) echo 2 ;; *) echo 1 ;; esac; }

# --- setup -------------------------------------------------------------------
stamp=$VENV/.requirements.sha256
if [ ! -x "$VENV/bin/python" ] || ! sha256sum --check --status "$stamp" 2>/dev/null; then
  log "creating $VENV from $REQS (nvidia-pytriton is large: a few minutes)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$REQS"
  sha256sum "$REQS" >"$stamp"
fi
PY=$VENV/bin/python
PY_LIBDIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

scripts/setup-onnxruntime.sh
log "building switchyard (cargo build --release)"
cargo build --quiet --release --bin switchyard
OHA_BIN=$(ensure_oha)
BODY=$OUT/request.json
write_body "$BODY"
CLK_TCK=$(getconf CLK_TCK)

# A copy of the repository where mlp_wide runs on 1 intra-op thread (models/ untouched).
ONE_THREAD_REPO=$OUT/repo-1thread
rm -rf "$ONE_THREAD_REPO"
mkdir -p "$ONE_THREAD_REPO"
for m in models/*/; do
  m=$(basename "$m")
  mkdir -p "$ONE_THREAD_REPO/$m"
  for f in models/"$m"/*; do ln -s "$BENCH_ROOT/$f" "$ONE_THREAD_REPO/$m/$(basename "$f")"; done
done
rm "$ONE_THREAD_REPO/mlp_wide/config.toml"
sed 's/^intra_op_threads = .*/intra_op_threads = 1/' models/mlp_wide/config.toml >"$ONE_THREAD_REPO/mlp_wide/config.toml"
grep -q '^intra_op_threads = 1$' "$ONE_THREAD_REPO/mlp_wide/config.toml" || die "could not set mlp_wide to 1 thread"

# --- servers -----------------------------------------------------------------
SERVER_PID=
SERVER_TREE=

# start_server NAME PORT: starts it in the background, sets SERVER_PID.
start_server() {
  local name=$1 port=$2 log=$OUT/$1.log
  case $name in
    fastapi-1w | fastapi-2w | fastapi-2w-asyncio)
      local workers=${name#fastapi-}; workers=${workers%%w*}
      local loop=auto
      [ "$name" = fastapi-2w-asyncio ] && loop=asyncio
      (cd benches/peers && exec "$VENV/bin/uvicorn" fastapi_server:app --host 127.0.0.1 --port "$port" \
        --workers "$workers" --loop "$loop" --no-access-log --log-level warning) >"$log" 2>&1 &
      ;;
    fastapi-2w-asyncio-nodelay)
      "$PY" benches/peers/fastapi_server.py --host 127.0.0.1 --port "$port" --workers 2 --loop asyncio \
        --nodelay >"$log" 2>&1 &
      ;;
    pytriton)
      LD_LIBRARY_PATH=$PY_LIBDIR${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} "$PY" benches/peers/pytriton_server.py \
        --http-port "$port" --grpc-port "$(free_port)" --metrics-port "$(free_port)" >"$log" 2>&1 &
      ;;
    switchyard | switchyard-1thread)
      local repo=models
      [ "$name" = switchyard-1thread ] && repo=$ONE_THREAD_REPO
      target/release/switchyard serve --model-repository "$repo" --listen "127.0.0.1:$port" \
        --admin-listen "127.0.0.1:$(free_port)" >"$log" 2>&1 &
      ;;
    *) die "unknown server $name" ;;
  esac
  SERVER_PID=$!
}

# wait_infer PORT SECONDS: until every model answers the request with 200.
wait_infer() {
  local port=$1 secs=$2 m i ok
  for ((i = 0; i < secs * 2; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    ok=1
    for m in $MODELS; do
      curl -fsS -o /dev/null --max-time 5 -H 'content-type: application/json' --data-binary @"$BODY" \
        "http://127.0.0.1:$port/v2/models/$m/versions/$(version_of "$m")/infer" 2>/dev/null || { ok=0; break; }
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.5
  done
  return 1
}

# Stops the server by PID, then any of its descendants still alive (by PID).
stop_server() {
  [ -n "$SERVER_PID" ] || return 0
  SERVER_TREE=$(pid_tree "$SERVER_PID" | tr '\n' ' ')
  stop_pid "$SERVER_PID"
  local p
  for p in $SERVER_TREE; do
    if kill -0 "$p" 2>/dev/null; then
      sleep 2
      kill -0 "$p" 2>/dev/null && { log "pid $p outlived its parent; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
    fi
  done
  SERVER_PID=
}
trap stop_server EXIT

# --- runs --------------------------------------------------------------------
RESULTS=$OUT/results.tsv
printf 'server\tmodel\tconcurrency\treq_s\tp50_ms\tp99_ms\tserver_cpu_pct\toha_cpu_pct\tothers_cpu_pct\tnon2xx\terrors\n' >"$RESULTS"
failed=0
loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
for server in $SERVERS; do
  port=$(free_port)
  log "starting $server on 127.0.0.1:$port"
  start_server "$server" "$port"
  if ! wait_infer "$port" 240; then
    log "$server did not become ready; see $OUT/$server.log"
    tail -20 "$OUT/$server.log" >&2 || true
    stop_server
    failed=1
    continue
  fi
  for m in $MODELS; do
    url="http://127.0.0.1:$port/v2/models/$m/versions/$(version_of "$m")/infer"
    for c in $CONCURRENCY; do
      [ "$WARMUP" -gt 0 ] && run_oha "$OUT/$server-$m-c$c.warmup.json" "$url" "$BODY" "$c" "$WARMUP" || true
      cpu0=$(cpu_ticks "$SERVER_PID"); busy0=$(machine_busy_ticks); t0=$(date +%s.%N)
      TIMEFORMAT='%U %S'
      { time run_oha "$OUT/$server-$m-c$c.json" "$url" "$BODY" "$c" "$DURATION"; } 2>"$OUT/$server-$m-c$c.time" \
        || { log "oha failed on $server $m c=$c"; failed=1; continue; }
      t1=$(date +%s.%N); cpu1=$(cpu_ticks "$SERVER_PID"); busy1=$(machine_busy_ticks)
      read -r rps p50 p99 non2xx errors ok < <(oha_row "$OUT/$server-$m-c$c.json")
      read -r cpu_pct oha_pct others_pct < <(awk -v s0="$cpu0" -v s1="$cpu1" -v b0="$busy0" -v b1="$busy1" \
        -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v ohat="$(tail -1 "$OUT/$server-$m-c$c.time")" 'BEGIN {
          wall = t1 - t0; split(ohat, o, " "); server = (s1 - s0) / hz; client = o[1] + o[2]; all = (b1 - b0) / hz
          others = all - server - client; if (others < 0) others = 0
          printf "%.0f %.0f %.0f\n", 100 * server / wall, 100 * client / wall, 100 * others / wall }')
      if [ "$non2xx" -ne 0 ] || [ "$errors" -ne 0 ] || [ "$ok" -eq 0 ]; then failed=1; fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$m" "$c" "$rps" "$p50" "$p99" \
        "$cpu_pct" "$oha_pct" "$others_pct" "$non2xx" "$errors" >>"$RESULTS"
      log "$server $m c=$c: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $cpu_pct%, oha $oha_pct%, others $others_pct%, $non2xx non-2xx, $errors errors"
    done
  done
  stop_server
done
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------
"$PY" benches/peers/report.py "$RESULTS" >"$OUT/table.md"
cat "$OUT/table.md"

if [ "$WRITE_BENCHMARKS" = 1 ]; then
  {
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with:"
    echo
    echo '```sh'
    echo "DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=\"$CONCURRENCY\" $COMMAND"
    echo '```'
    echo
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)."
    echo "oha $("$OHA_BIN" --version | awk '{print $2}'); switchyard $(git describe --always --dirty 2>/dev/null || echo '?');"
    echo "peers: $("$PY" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ["fastapi","uvicorn","onnxruntime","numpy","nvidia-pytriton"]))');"
    echo "Python $("$PY" -c 'import platform; print(platform.python_version())'). Load average before / after: $loadavg_before / $loadavg_after."
    echo
    cat "$OUT/table.md"
  } >"$OUT/section.md"
  "$PYTHON" benches/bench_md.py BENCHMARKS.md peers "$OUT/section.md"
  log "wrote the peers section of BENCHMARKS.md"
fi

[ "$failed" = 0 ] || die "some runs failed or got non-2xx answers (see $OUT)"
