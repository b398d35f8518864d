# Helpers shared by benches/load.sh, benches/peers/run.sh and
# benches/peers/triton_native.sh (sourced, not run).
# Everything runs on 127.0.0.1; every server is stopped by its PID; every
# load run is bounded in time.

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OHA_VERSION=${OHA_VERSION:-1.16.0}
TOOLS_DIR=${TOOLS_DIR:-$BENCH_ROOT/.venv/tools}
PYTHON=${PYTHON:-python3}

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# Path of oha: $OHA, else on PATH, else .venv/tools/bin/oha, installing it there
# (pinned version, `cargo install --locked`) when missing.
ensure_oha() {
  if [ -n "${OHA:-}" ] && [ -x "$OHA" ]; then echo "$OHA"; return; fi
  if [ -x "$TOOLS_DIR/bin/oha" ]; then echo "$TOOLS_DIR/bin/oha"; return; fi
  if command -v oha >/dev/null 2>&1; then command -v oha; return; fi
  log "installing oha $OHA_VERSION into $TOOLS_DIR (cargo install: 15 minutes or more on 2 cores)"
  cargo install --quiet --locked --version "$OHA_VERSION" --root "$TOOLS_DIR" oha >&2 \
    || die "cargo install oha failed"
  echo "$TOOLS_DIR/bin/oha"
}

# Path of the command $1 from the Debian package $2: on PATH, else installed
# with apt-get, saying so; $3 says what to do instead when apt-get is missing.
ensure_debian_tool() {
  local tool=$1 package=$2 otherwise=$3 sudo=
  if command -v "$tool" >/dev/null 2>&1; then command -v "$tool"; return; fi
  command -v apt-get >/dev/null 2>&1 || die "$tool is missing: install the Debian package $package ($otherwise)"
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "$tool is missing: installing the Debian package $package (apt-get install $package)"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$package" >/dev/null \
    || die "apt-get install $package failed"
  command -v "$tool"
}

# wrk (benches/peers/run.sh's interleaved mode, benches/grpc_vs_http.sh's HTTP load).
ensure_wrk() { ensure_debian_tool wrk wrk "or LOADGEN=oha"; }

# h2load, the HTTP/2 load generator of nghttp2-client (benches/grpc_vs_http.sh's gRPC load).
ensure_h2load() { ensure_debian_tool h2load nghttp2-client "or GRPC_LOADGEN=tonic"; }

# The peers' Python venv, .venv/peers, from benches/peers/requirements.txt;
# rebuilt when that file changes (its sha256 is stamped inside the venv).
PEERS_VENV=$BENCH_ROOT/.venv/peers
ensure_peers_venv() {
  local reqs=benches/peers/requirements.txt stamp=$PEERS_VENV/.requirements.sha256
  if [ -x "$PEERS_VENV/bin/python" ] && (cd "$BENCH_ROOT" && sha256sum --check --status "$stamp") 2>/dev/null; then
    return 0
  fi
  log "creating $PEERS_VENV from $reqs (nvidia-pytriton is large: a minute or more)"
  "$PYTHON" -m venv "$PEERS_VENV"
  "$PEERS_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$BENCH_ROOT/$reqs"
  (cd "$BENCH_ROOT" && sha256sum "$reqs") >"$stamp"
}

# A TCP port that is free on 127.0.0.1 right now.
free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_http URL PID SECONDS: waits until URL answers 200 while PID lives.
wait_http() {
  local url=$1 pid=$2 secs=$3 i
  for ((i = 0; i < secs * 10; i++)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "server (pid $pid) exited before $url answered"
      return 1
    fi
    if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  log "$url did not answer 200 within ${secs}s"
  return 1
}

# stop_pid PID: SIGTERM, then SIGKILL after 15 s; waits for it.
stop_pid() {
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  log "pid $pid ignored SIGTERM for 15 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

# The PID and all its descendants (servers that fork workers or helpers).
pid_tree() {
  local pid=$1 child
  echo "$pid"
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    pid_tree "$child"
  done
}

# CPU clock ticks (utime + stime) used so far by PID and its descendants.
cpu_ticks() {
  local total=0 p fields
  for p in $(pid_tree "$1"); do
    # Fields after the ")" of the command name: utime and stime are the
    # 12th and 13th (14 and 15 of the whole line).
    fields=$(sed 's/.*) //' /proc/"$p"/stat 2>/dev/null) || continue
    set -- $fields
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# Busy clock ticks of the whole machine so far (all CPUs, /proc/stat: user,
# nice, system, irq, softirq), to see how much else ran during a case.
machine_busy_ticks() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}

# write_body FILE: the V2 request for the first held-out digits row (the
# README's example), FP32 [1, 64], flat data.
write_body() {
  "$PYTHON" - "$BENCH_ROOT/models/digits/samples.json" >"$1" <<'PY'
import json, sys
row = json.load(open(sys.argv[1]))["samples"][0]["inputs"]["input"][0]
data = ",".join(str(int(v)) if float(v).is_integer() else repr(float(v)) for v in row)
print('{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[%s]}]}' % data, end="")
PY
}

# run_oha OUT.json URL BODY CONCURRENCY DURATION: drives URL for DURATION
# seconds (requests in flight at the deadline are awaited, not counted as
# errors; the whole run is hard-bounded by `timeout`), JSON summary into OUT.json.
run_oha() {
  local out=$1 url=$2 body=$3 c=$4 d=$5
  timeout --kill-after=10 $((d + 60)) "$OHA_BIN" --no-tui --output-format json -w \
    -z "${d}s" -c "$c" -m POST -T application/json -D "$body" "$url" >"$out"
}

# oha_row OUT.json: prints "req/s p50_ms p99_ms non2xx errors ok" from an oha
# JSON summary; non2xx counts answers outside 200-299, errors counts
# connection-level failures, ok is the number of 2xx answers.
oha_row() {
  "$PYTHON" - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
codes = {int(k): v for k, v in (s.get("statusCodeDistribution") or {}).items()}
ok = sum(v for k, v in codes.items() if 200 <= k < 300)
non2xx = sum(v for k, v in codes.items() if not 200 <= k < 300)
errors = sum((s.get("errorDistribution") or {}).values())
p = s.get("latencyPercentiles") or {}
ms = lambda v: "nan" if v is None else "%.3f" % (v * 1000)
# req/s counts successful answers only: oha's own requestsPerSec also counts errors.
total = s["summary"].get("total") or 0
rps = ok / total if total else 0.0
print("%.0f %s %s %d %d %d" % (rps, ms(p.get("p50")), ms(p.get("p99")), non2xx, errors, ok))
PY
}

# run_wrk OUT URL BODY CONCURRENCY DURATION: wrk POSTs BODY to URL for
# DURATION seconds on CONCURRENCY keep-alive connections (2 threads, 1 at
# c=1); benches/peers/wrk_post.lua writes its summary as one JSON line into
# OUT. Hard-bounded by `timeout` like run_oha.
run_wrk() {
  local out=$1 url=$2 body=$3 c=$4 d=$5 t=1
  [ "$c" -ge 2 ] && t=2
  WRK_OUT=$out timeout --kill-after=10 $((d + 60)) "$WRK_BIN" -t"$t" -c"$c" -d"${d}s" \
    -s "$BENCH_ROOT/benches/peers/wrk_post.lua" "$url" -- "$body" >"$out.log"
}

# wrk_row OUT: the same "req/s p50_ms p99_ms non2xx errors ok" as oha_row,
# from wrk_post.lua's summary. wrk counts answers with status >= 400 as
# errors.status (non2xx here); errors are its connect/read/write/timeout
# errors; req/s counts the other answers only.
wrk_row() {
  "$PYTHON" - "$1" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
ok = s["requests"] - s["status_errors"]
errors = s["connect_errors"] + s["read_errors"] + s["write_errors"] + s["timeouts"]
rps = ok / (s["duration_us"] / 1e6) if s["duration_us"] else 0.0
print("%.0f %.3f %.3f %d %d %d" % (rps, s["p50_us"] / 1000, s["p99_us"] / 1000, s["status_errors"], errors, ok))
PY
}
