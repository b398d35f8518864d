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
#   triton-native             Triton 2.51 (the same binary) + its native C++ onnxruntime backend r24.10,
#                             dynamic batching on, a model repository made from models/ (triton_native.sh;
#                             needs a ONE-TIME MANUAL STEP first: the backend's sources, see the header
#                             of benches/peers/triton_native.sh)
#   switchyard                target/release/switchyard on models/ as committed
#   switchyard-1thread        the same, with mlp_wide on 1 intra-op thread instead of its
#                             config's 2, in a temporary copy of the repository (an ablation)
#
# Models: digits version 2 (the MLP) and mlp_wide version 1, the same
# .onnx files everywhere, ORT threads as each model's config.toml says, for
# every server (digits 1, mlp_wide 2; peer_ort.py), spinning off (except
# triton-native, whose backend has no setting for it). Request: the first
# held-out digits row as a 1-row V2 JSON body (benches/lib.sh write_body).
# Each server's answer to that request is kept when it comes up and compared
# at the end: every server must give the same label per model.
#
# Two orders:
#   INTERLEAVE=0 (default)  one server at a time: start it, run every model and
#                           concurrency, stop it, next server.
#   INTERLEAVE=1            every server of SERVERS is started first and stays up; then for
#                           each model, concurrency and pass, the servers take turns (A, B, A, B):
#                           each pass sees the same host state, and the table gives the median of
#                           the passes. Load generator wrk (the Debian package, installed with
#                           apt-get when missing), 2 passes, unless LOADGEN/PASSES say otherwise.
# Each run: WARMUP seconds of the load generator (discarded), then DURATION
# seconds measured; the server's CPU is utime+stime of its whole process tree
# from /proc, as % of one core over the measured interval, the load
# generator's own CPU is its user+sys time, "others" is the rest of the
# machine's busy time (in interleaved mode that includes the idle servers).
#
#   benches/peers/run.sh                          # everything, 10 s per case
#   DURATION=2 SERVERS="switchyard pytriton" benches/peers/run.sh
#   INTERLEAVE=1 SERVERS="switchyard triton-native" benches/peers/run.sh   # A/B/A/B with wrk
#
# Env: DURATION (10), WARMUP (1), CONCURRENCY ("1 8 64"), MODELS
# ("digits mlp_wide"), SERVERS (all of the above), INTERLEAVE (0), PASSES (1;
# 2 when interleaved), LOADGEN (oha; wrk when interleaved), OUT (results
# folder), WRITE_BENCHMARKS (1: replace the "peers" section of BENCHMARKS.md,
# or the "peers-interleaved" one when INTERLEAVE=1), TRITON_NATIVE_DIR (see
# triton_native.sh).
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BENCH_ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-1 8 64}
MODELS=${MODELS:-digits mlp_wide}
SERVERS=${SERVERS:-fastapi-1w fastapi-2w fastapi-2w-asyncio fastapi-2w-asyncio-nodelay pytriton triton-native switchyard switchyard-1thread}
INTERLEAVE=${INTERLEAVE:-0}
if [ "$INTERLEAVE" = 1 ]; then
  PASSES=${PASSES:-2}; LOADGEN=${LOADGEN:-wrk}; SECTION=peers-interleaved
else
  PASSES=${PASSES:-1}; LOADGEN=${LOADGEN:-oha}; SECTION=peers
fi
OUT=${OUT:-bench-results/peers-$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-1}
VENV=$PEERS_VENV
COMMAND="$0 $*"
case $LOADGEN in oha | wrk) ;; *) die "LOADGEN is oha or wrk, not $LOADGEN" ;; esac
[ "$PASSES" -ge 1 ] 2>/dev/null || die "PASSES must be a number >= 1"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

version_of() { case $1 in digits) echo 2 ;; *) echo 1 ;; esac; }
wants() { case " $SERVERS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# --- setup -------------------------------------------------------------------
# The Triton sources are a manual one-time step: fail here, before anything
# long, when they are missing (triton_native.sh says what to do).
if wants triton-native; then benches/peers/triton_native.sh build; fi
ensure_peers_venv
PY=$VENV/bin/python
PY_LIBDIR=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')

scripts/setup-onnxruntime.sh
case " $SERVERS " in
  *" switchyard"*)
    log "building switchyard (cargo build --release)"
    cargo build --quiet --release --bin switchyard
    ;;
esac
if [ "$LOADGEN" = wrk ]; then WRK_BIN=$(ensure_wrk); else OHA_BIN=$(ensure_oha); fi
BODY=$OUT/request.json
write_body "$BODY"
CLK_TCK=$(getconf CLK_TCK)

# A copy of the repository where mlp_wide runs on 1 intra-op thread (models/
# untouched). A copy, not symlinks: the server refuses a model whose files
# resolve outside its repository.
ONE_THREAD_REPO=$OUT/repo-1thread
if wants switchyard-1thread; then
  rm -rf "$ONE_THREAD_REPO"
  mkdir -p "$ONE_THREAD_REPO"
  cp -R models/. "$ONE_THREAD_REPO/"
  sed -i 's/^intra_op_threads = .*/intra_op_threads = 1/' "$ONE_THREAD_REPO/mlp_wide/config.toml"
  grep -q '^intra_op_threads = 1$' "$ONE_THREAD_REPO/mlp_wide/config.toml" || die "could not set mlp_wide to 1 thread"
fi

# Triton's model repository (config.pbtxt from each model's config.toml).
TRITON_REPO=$OUT/triton-repo
if wants triton-native; then benches/peers/triton_native.sh repo "$TRITON_REPO"; fi

# --- servers -----------------------------------------------------------------
SERVER_PID=
declare -A PIDS=() PORTS=()

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
    triton-native)
      # execs tritonserver: the PID is the server's
      benches/peers/triton_native.sh serve "$TRITON_REPO" "$port" >"$log" 2>&1 &
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

# wait_infer NAME PORT SECONDS: until every model answers the request with
# 200; the last answers are kept as $OUT/NAME-MODEL.answer.json.
wait_infer() {
  local name=$1 port=$2 secs=$3 m i ok
  for ((i = 0; i < secs * 2; i++)); do
    kill -0 "$SERVER_PID" 2>/dev/null || return 1
    ok=1
    for m in $MODELS; do
      curl -fsS -o "$OUT/$name-$m.answer.json" --max-time 5 -H 'content-type: application/json' \
        --data-binary @"$BODY" "http://127.0.0.1:$port/v2/models/$m/versions/$(version_of "$m")/infer" \
        2>/dev/null || { ok=0; break; }
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.5
  done
  return 1
}

# up NAME: starts NAME on a free port and waits for it; records PIDS/PORTS.
up() {
  local name=$1 port
  port=$(free_port)
  log "starting $name on 127.0.0.1:$port"
  start_server "$name" "$port"
  PIDS[$name]=$SERVER_PID
  PORTS[$name]=$port
  if ! wait_infer "$name" "$port" 240; then
    log "$name did not become ready; see $OUT/$name.log"
    tail -20 "$OUT/$name.log" >&2 || true
    down "$name"
    return 1
  fi
}

# down NAME: stops it by PID, then any of its descendants still alive (by PID).
down() {
  local name=$1 pid tree p
  pid=${PIDS[$name]:-}
  [ -n "$pid" ] || return 0
  tree=$(pid_tree "$pid" | tr '\n' ' ')
  stop_pid "$pid"
  for p in $tree; do
    if kill -0 "$p" 2>/dev/null; then
      sleep 2
      kill -0 "$p" 2>/dev/null && { log "pid $p outlived its parent; SIGKILL"; kill -KILL "$p" 2>/dev/null || true; }
    fi
  done
  unset "PIDS[$name]"
}

down_all() {
  local name
  for name in "${!PIDS[@]}"; do down "$name"; done
}
trap down_all EXIT

# --- runs --------------------------------------------------------------------
RESULTS=$OUT/results.tsv
printf 'server\tmodel\tconcurrency\tpass\treq_s\tp50_ms\tp99_ms\tserver_cpu_pct\tclient_cpu_pct\tothers_cpu_pct\tnon2xx\terrors\n' >"$RESULTS"
failed=0

# load OUT URL C SECONDS: one run of the load generator.
load() {
  if [ "$LOADGEN" = wrk ]; then run_wrk "$@"; else run_oha "$@"; fi
}
load_row() {
  if [ "$LOADGEN" = wrk ]; then wrk_row "$1"; else oha_row "$1"; fi
}

# measure SERVER MODEL C PASS: warm-up, then one measured run of the running
# SERVER; appends a row to results.tsv.
measure() {
  local server=$1 m=$2 c=$3 pass=$4 pid=${PIDS[$1]} port=${PORTS[$1]}
  local url base=$OUT/$server-$m-c$c-p$pass
  url="http://127.0.0.1:$port/v2/models/$m/versions/$(version_of "$m")/infer"
  local cpu0 busy0 t0 t1 cpu1 busy1 rps p50 p99 non2xx errors ok cpu_pct client_pct others_pct
  [ "$WARMUP" -gt 0 ] && load "$base.warmup.json" "$url" "$BODY" "$c" "$WARMUP" || true
  cpu0=$(cpu_ticks "$pid"); busy0=$(machine_busy_ticks); t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time load "$base.json" "$url" "$BODY" "$c" "$DURATION"; } 2>"$base.time" \
    || { log "$LOADGEN failed on $server $m c=$c pass $pass"; failed=1; return 0; }
  t1=$(date +%s.%N); cpu1=$(cpu_ticks "$pid"); busy1=$(machine_busy_ticks)
  read -r rps p50 p99 non2xx errors ok < <(load_row "$base.json")
  read -r cpu_pct client_pct others_pct < <(awk -v s0="$cpu0" -v s1="$cpu1" -v b0="$busy0" -v b1="$busy1" \
    -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v lgt="$(tail -1 "$base.time")" 'BEGIN {
      wall = t1 - t0; split(lgt, o, " "); server = (s1 - s0) / hz; client = o[1] + o[2]; all = (b1 - b0) / hz
      others = all - server - client; if (others < 0) others = 0
      printf "%.0f %.0f %.0f\n", 100 * server / wall, 100 * client / wall, 100 * others / wall }')
  if [ "$non2xx" -ne 0 ] || [ "$errors" -ne 0 ] || [ "$ok" -eq 0 ]; then failed=1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$server" "$m" "$c" "$pass" "$rps" "$p50" "$p99" \
    "$cpu_pct" "$client_pct" "$others_pct" "$non2xx" "$errors" >>"$RESULTS"
  log "$server $m c=$c pass $pass: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $cpu_pct%, $LOADGEN $client_pct%, others $others_pct%, $non2xx non-2xx, $errors errors"
}

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
UP=()
if [ "$INTERLEAVE" = 1 ]; then
  for server in $SERVERS; do
    if up "$server"; then UP+=("$server"); else failed=1; fi
  done
  for m in $MODELS; do
    for c in $CONCURRENCY; do
      for ((pass = 1; pass <= PASSES; pass++)); do
        for server in "${UP[@]}"; do measure "$server" "$m" "$c" "$pass"; done
      done
    done
  done
  down_all
else
  for server in $SERVERS; do
    up "$server" || { failed=1; continue; }
    UP+=("$server")
    for m in $MODELS; do
      for c in $CONCURRENCY; do
        for ((pass = 1; pass <= PASSES; pass++)); do measure "$server" "$m" "$c" "$pass"; done
      done
    done
    down "$server"
  done
fi
loadavg_after=$(cut -d' ' -f1-3 /proc/loadavg)

# Same request, same label from every server (per model).
if [ ${#UP[@]} -gt 0 ]; then
  "$PY" - "$OUT" "$MODELS" "${UP[@]}" <<'PY' || failed=1
import json, sys
out, models, servers = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
bad = False
for m in models:
    labels = {}
    for s in servers:
        answer = json.load(open(f"{out}/{s}-{m}.answer.json"))
        label = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
        labels[s] = label[0] if isinstance(label, list) else label
    same = len(set(map(str, labels.values()))) == 1
    bad |= not same
    print(f"bench: answers: {m}: " + (f"label {next(iter(labels.values()))} from all {len(servers)} servers" if same
          else "labels differ: " + ", ".join(f"{s} {l}" for s, l in labels.items())), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
fi

# --- report ------------------------------------------------------------------
"$PY" benches/peers/report.py "$RESULTS" "$LOADGEN" >"$OUT/table.md"
cat "$OUT/table.md"

if [ "$WRITE_BENCHMARKS" = 1 ]; then
  {
    echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with:"
    echo
    echo '```sh'
    echo "DURATION=$DURATION WARMUP=$WARMUP CONCURRENCY=\"$CONCURRENCY\" MODELS=\"$MODELS\" SERVERS=\"$SERVERS\" \\"
    echo "  INTERLEAVE=$INTERLEAVE PASSES=$PASSES LOADGEN=$LOADGEN $COMMAND"
    echo '```'
    echo
    echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory, $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)."
    if [ "$LOADGEN" = wrk ]; then echo -n "$("$WRK_BIN" -v 2>&1 | awk 'NR == 1 {print $1, $2}')"
    else echo -n "oha $("$OHA_BIN" --version | awk '{print $2}')"; fi
    echo "; switchyard $(git describe --always --dirty 2>/dev/null || echo '?');"
    echo "peers: $("$PY" -c 'import importlib.metadata as m; print(", ".join(f"{p} {m.version(p)}" for p in ["fastapi","uvicorn","onnxruntime","numpy","nvidia-pytriton"]))');"
    echo "Python $("$PY" -c 'import platform; print(platform.python_version())'). Load average before / after: $loadavg_before / $loadavg_after."
    if wants triton-native; then
      echo "triton-native: $(benches/peers/triton_native.sh describe)."
    fi
    echo
    cat "$OUT/table.md"
  } >"$OUT/section.md"
  "$PYTHON" benches/bench_md.py BENCHMARKS.md "$SECTION" "$OUT/section.md"
  log "wrote the $SECTION section of BENCHMARKS.md"
fi

[ "$failed" = 0 ] || die "some runs failed or got non-2xx answers (see $OUT)"
