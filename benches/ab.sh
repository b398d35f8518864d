#!/usr/bin/env bash
# Interleaved A/B of two switchyard servers: two binaries, or one binary
# under two environments or on two model repositories. Both servers start
# and stay up; for each case and pass they take turns under the same wrk
# load (A, B, A, B, ...), so each pass of A sees the host as the pass of B
# next to it does. The table gives medians over the passes. This is how
# the A/Bs of BENCHMARKS.md §5 are measured.
#
#   benches/ab.sh BIN_A BIN_B
#   ENV_B="SWITCHYARD_HTTP_BUSY_POLL_US=300" benches/ab.sh target/release/switchyard target/release/switchyard
#   MODELS_A=<old checkout>/models benches/ab.sh <old checkout>/target/release/switchyard target/release/switchyard
#   CASES="mlp_wide:8 mlp_wide:64" PASSES=4 benches/ab.sh A B
#
# A case is MODEL:CONCURRENCY: digits (version 2, the MLP) and mlp_wide
# (version 1) get the 1-row V2 JSON body of the other benches, `live` is
# the empty GET /v2/health/live. wrk runs 1 thread at c=1, 2 above.
#
# Env: CASES ("digits:1 digits:8 digits:64 mlp_wide:1 mlp_wide:8 mlp_wide:64
# live:64 live:1"), PASSES (3), DURATION (5 s per run), WARMUP (1 s per
# server and case, discarded), MODELS_A / MODELS_B (models/), ENV_A / ENV_B
# (extra environment for that server: NAME=value words), RUST_LOG (warn for
# both: no request log), OUT (results folder).
#
# Per run: req/s (2xx answers only), p50/p99 from wrk, and the server's CPU
# per answer (utime+stime of its process over the run, divided by the 2xx
# answers). Also printed: each server's resident memory once ready.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

[ $# -eq 2 ] || die "usage: benches/ab.sh BIN_A BIN_B (see the header for the environment)"
BIN_A=$(realpath "$1")
BIN_B=$(realpath "$2")
[ -x "$BIN_A" ] || die "$1 is not an executable"
[ -x "$BIN_B" ] || die "$2 is not an executable"
CASES=${CASES:-digits:1 digits:8 digits:64 mlp_wide:1 mlp_wide:8 mlp_wide:64 live:64 live:1}
PASSES=${PASSES:-3}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
MODELS_A=$(realpath "${MODELS_A:-models}")
MODELS_B=$(realpath "${MODELS_B:-models}")
ENV_A=${ENV_A:-}
ENV_B=${ENV_B:-}
LOG_LEVEL=${RUST_LOG:-warn}
OUT=${OUT:-bench-results/ab-$(date -u +%Y%m%dT%H%M%SZ)}
[ "$PASSES" -ge 1 ] 2>/dev/null || die "PASSES must be a number >= 1"
for c in $CASES; do
  case $c in
    digits:[0-9]* | mlp_wide:[0-9]* | live:[0-9]*) ;;
    *) die "a case is digits:C, mlp_wide:C or live:C, not $c" ;;
  esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

scripts/setup-onnxruntime.sh
ORT_LIB=$BENCH_ROOT/.onnxruntime/libonnxruntime.so.1.31.1
[ -f "$ORT_LIB" ] || die "no $ORT_LIB after scripts/setup-onnxruntime.sh"
WRK_BIN=$(ensure_wrk)
BODY=$OUT/request.json
write_body "$BODY"

# start SIDE BIN MODELS ENV: a server on free ports; its pid and port in
# PID_<SIDE>, PORT_<SIDE>.
start() {
  local side=$1 bin=$2 models=$3 extra=$4 port admin pid
  port=$(free_port)
  admin=$(free_port)
  # shellcheck disable=SC2086 # ENV_A/ENV_B are NAME=value words
  env RUST_LOG="$LOG_LEVEL" $extra "$bin" serve --model-repository "$models" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" --grpc-listen off \
    --state-dir "$OUT/state-$side" --onnxruntime-lib "$ORT_LIB" >"$OUT/server-$side.log" 2>&1 &
  pid=$!
  printf -v "PID_$side" '%s' "$pid"
  printf -v "PORT_$side" '%s' "$port"
  wait_http "http://127.0.0.1:$port/v2/health/ready" "$pid" 120 || { tail -20 "$OUT/server-$side.log" >&2; exit 1; }
}
PID_A=
PID_B=
trap '[ -n "$PID_A" ] && stop_pid "$PID_A"; [ -n "$PID_B" ] && stop_pid "$PID_B"' EXIT
start A "$BIN_A" "$MODELS_A" "$ENV_A"
start B "$BIN_B" "$MODELS_B" "$ENV_B"
sleep 1
rss() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
log "A: $BIN_A on $MODELS_A ${ENV_A:+($ENV_A) }pid $PID_A, port $PORT_A, resident $(rss "$PID_A") kB once ready"
log "B: $BIN_B on $MODELS_B ${ENV_B:+($ENV_B) }pid $PID_B, port $PORT_B, resident $(rss "$PID_B") kB once ready"

url() { # PORT CASE
  case ${2%%:*} in
    live) echo "http://127.0.0.1:$1/v2/health/live" ;;
    digits) echo "http://127.0.0.1:$1/v2/models/digits/versions/2/infer" ;;
    mlp_wide) echo "http://127.0.0.1:$1/v2/models/mlp_wide/versions/1/infer" ;;
  esac
}
body() { case ${1%%:*} in live) echo - ;; *) echo "$BODY" ;; esac; }

HZ=$(getconf CLK_TCK)
RESULTS=$OUT/results.tsv
: >"$RESULTS"
for case in $CASES; do
  c=${case##*:}
  for side in A B; do
    port_var=PORT_$side
    run_wrk "$OUT/warmup.json" "$(url "${!port_var}" "$case")" "$(body "$case")" "$c" "$WARMUP" \
      || die "wrk failed (warmup of $side, $case)"
  done
  for pass in $(seq "$PASSES"); do
    for side in A B; do
      pid_var=PID_$side
      port_var=PORT_$side
      out=$OUT/$side-${case/:/-c}-p$pass.json
      before=$(cpu_ticks "${!pid_var}")
      run_wrk "$out" "$(url "${!port_var}" "$case")" "$(body "$case")" "$c" "$DURATION" \
        || die "wrk failed ($side, $case, pass $pass)"
      after=$(cpu_ticks "${!pid_var}")
      read -r rps p50 p99 non2xx errors ok <<<"$(wrk_row "$out")"
      [ "$non2xx" = 0 ] && [ "$errors" = 0 ] || die "$side $case pass $pass: $non2xx non-2xx answers, $errors socket errors ($out.log)"
      [ "$ok" -gt 0 ] || die "$side $case pass $pass: no answer in ${DURATION}s ($out.log)"
      cpu_us=$(((after - before) * 1000000 / HZ))
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$case" "$side" "$pass" "$rps" "$p50" "$p99" "$cpu_us" "$ok" >>"$RESULTS"
      log "$case $side pass $pass: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $((cpu_us / ok)) µs per answer"
    done
  done
done

"$PYTHON" - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = {}
for case, side, _, rps, p50, p99, cpu_us, ok in csv.reader(open(sys.argv[1]), delimiter="\t"):
    r = rows.setdefault(case, {}).setdefault(side, {"rps": [], "p99": [], "cpu": []})
    r["rps"].append(float(rps))
    r["p99"].append(float(p99))
    r["cpu"].append(int(cpu_us) / max(int(ok), 1))
med = statistics.median
print("| case | A req/s | B req/s | B/A | p99 A → B ms | CPU per answer A → B µs |")
print("|---|---:|---:|---:|---|---|")
for case, s in rows.items():
    a, b = s["A"], s["B"]
    ra, rb = med(a["rps"]), med(b["rps"])
    print(f"| {case} | {ra:,.0f} | {rb:,.0f} | {rb / ra:.2f} | {med(a['p99']):.2f} → {med(b['p99']):.2f}"
          f" | {med(a['cpu']):.1f} → {med(b['cpu']):.1f} |")
PY
