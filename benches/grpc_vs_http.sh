#!/usr/bin/env bash
# gRPC against HTTP on one switchyard: the same 1-row digits request as
# HTTP/JSON, HTTP binary tensor data (binary in and out) and gRPC raw
# contents, each model and concurrency in turn, the three protocols taking
# turns (interleaved, PASSES times, the order rotating each pass) so that
# the host's drift hits them alike. One table of medians, with the gRPC/JSON
# ratios.
#
#   benches/grpc_vs_http.sh                              # 10 s per case, c = 1, 8, 64, 2 passes
#   DURATION=2 PASSES=1 benches/grpc_vs_http.sh          # quick check
#   PROFILE=debug DURATION=1 PASSES=1 CONCURRENCY="1 8" benches/grpc_vs_http.sh   # smoke test, no release build
#   WRITE_BENCHMARKS=1 benches/grpc_vs_http.sh           # and rewrite the "grpc" section of BENCHMARKS.md
#
# Env: DURATION (seconds per case, 10), WARMUP (seconds before each case, 1),
# CONCURRENCY ("1 8 64"), MODELS ("digits mlp_wide"), PASSES (2),
# CONNECTIONS (HTTP/2 connections of the gRPC client, 1 as gRPC clients
# do), PROFILE (release), LOADGEN (the HTTP load generator: wrk, the Debian
# package, installed when missing; or oha, into .venv/tools), OUT
# (bench-results/grpc-<time>). gRPC's load generator is
# target/$PROFILE/examples/grpc_load (benches/grpc_load.rs, tonic). HTTP/1.1
# keep-alive with c connections; gRPC c calls in flight on CONNECTIONS
# HTTP/2 connections. digits is version 2 (the MLP), mlp_wide version 1.
# Exits non-zero if any answer was an error.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-1}
CONCURRENCY=${CONCURRENCY:-1 8 64}
MODELS=${MODELS:-digits mlp_wide}
PASSES=${PASSES:-2}
CONNECTIONS=${CONNECTIONS:-1}
LOADGEN=${LOADGEN:-wrk}
PROFILE=${PROFILE:-release}
OUT=${OUT:-bench-results/grpc-$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-0}
COMMAND="DURATION=$DURATION PASSES=$PASSES CONCURRENCY=\"$CONCURRENCY\" $0"
PROTOCOLS=(http-json http-binary grpc-raw)
mkdir -p "$OUT"

version_of() { case $1 in digits) echo 2 ;; *) echo 1 ;; esac; }

scripts/setup-onnxruntime.sh
log "building switchyard and examples/grpc_load ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --bin switchyard --example grpc_load
else
  cargo build --quiet --bin switchyard --example grpc_load
  PROFILE=debug
fi
BIN=target/$PROFILE
if [ "$LOADGEN" = wrk ]; then WRK_BIN=$(ensure_wrk); else OHA_BIN=$(ensure_oha); fi
CLK_TCK=$(getconf CLK_TCK)

# The bodies: V2 JSON, and V2 binary (the JSON header, then the row's 256
# bytes; outputs asked for in binary too).
JSON_BODY=$OUT/request.json
BIN_BODY=$OUT/request.bin
write_body "$JSON_BODY"
BIN_HEADER_LEN=$("$PYTHON" - "$BENCH_ROOT/models/digits/samples.json" "$BIN_BODY" <<'PY'
import json, struct, sys
row = json.load(open(sys.argv[1]))["samples"][0]["inputs"]["input"][0]
data = struct.pack("<%df" % len(row), *row)
header = json.dumps({
    "inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                "parameters": {"binary_data_size": len(data)}}],
    "parameters": {"binary_data_output": True},
}, separators=(",", ":")).encode()
open(sys.argv[2], "wb").write(header + data)
print(len(header))
PY
)

PORT=$(free_port)
ADMIN_PORT=$(free_port)
GRPC_PORT=$(free_port)
"$BIN/switchyard" serve --model-repository models --state-dir "$OUT/state" \
  --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" --grpc-listen "127.0.0.1:$GRPC_PORT" \
  >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'stop_pid $SERVER' EXIT
wait_http "http://127.0.0.1:$PORT/ready" "$SERVER" 120 || { tail -20 "$OUT/server.log" >&2; exit 1; }
log "switchyard ready (pid $SERVER): HTTP 127.0.0.1:$PORT, gRPC 127.0.0.1:$GRPC_PORT; ${DURATION}s per case"

# load PROTOCOL MODEL C SECONDS OUT: one run of the protocol's load generator.
load() {
  local protocol=$1 m=$2 c=$3 d=$4 out=$5 v url
  v=$(version_of "$m")
  url="http://127.0.0.1:$PORT/v2/models/$m/versions/$v/infer"
  case $protocol in
    http-json)
      if [ "$LOADGEN" = wrk ]; then run_wrk "$out" "$url" "$JSON_BODY" "$c" "$d"; else run_oha "$out" "$url" "$JSON_BODY" "$c" "$d"; fi
      ;;
    http-binary)
      if [ "$LOADGEN" = wrk ]; then
        local t=1
        [ "$c" -ge 2 ] && t=2
        WRK_OUT=$out timeout --kill-after=10 $((d + 60)) "$WRK_BIN" -t"$t" -c"$c" -d"${d}s" \
          -s benches/peers/wrk_post.lua "$url" -- "$BIN_BODY" "Content-Type: application/octet-stream" \
          "Inference-Header-Content-Length: $BIN_HEADER_LEN" >"$out.log"
      else
        timeout --kill-after=10 $((d + 60)) "$OHA_BIN" --no-tui --output-format json -w -z "${d}s" -c "$c" \
          -m POST -T application/octet-stream -H "Inference-Header-Content-Length: $BIN_HEADER_LEN" \
          -D "$BIN_BODY" "$url" >"$out"
      fi
      ;;
    grpc-raw)
      timeout --kill-after=10 $((d + 60)) "$BIN/examples/grpc_load" --addr "127.0.0.1:$GRPC_PORT" \
        --model "$m" --version "$v" --concurrency "$c" --duration "$d" --warmup 0 \
        --connections "$CONNECTIONS" >"$out"
      ;;
  esac
}

# row PROTOCOL OUT: "req/s p50_ms p99_ms errors ok".
row() {
  if [ "$1" = grpc-raw ]; then
    "$PYTHON" -c 'import json,sys; s=json.load(open(sys.argv[1])); print("%.0f %.3f %.3f %d %d" % (s["req_s"], s["p50_ms"], s["p99_ms"], s["errors"], s["ok"]))' "$2"
  else
    local rps p50 p99 non2xx errors ok
    if [ "$LOADGEN" = wrk ]; then
      read -r rps p50 p99 non2xx errors ok < <(wrk_row "$2")
    else
      read -r rps p50 p99 non2xx errors ok < <(oha_row "$2")
    fi
    echo "$rps $p50 $p99 $((non2xx + errors)) $ok"
  fi
}

RESULTS=$OUT/results.tsv
printf 'protocol\tmodel\tconcurrency\tpass\treq_s\tp50_ms\tp99_ms\tserver_cpu_pct\tclient_cpu_pct\tothers_cpu_pct\terrors\n' >"$RESULTS"
failed=0

# measure PROTOCOL MODEL C PASS: warm-up, one measured run, a row in results.tsv.
measure() {
  local protocol=$1 m=$2 c=$3 pass=$4 base=$OUT/$1-$2-c$3-p$4
  local cpu0 busy0 t0 t1 cpu1 busy1 rps p50 p99 errors ok cpu_pct client_pct others_pct
  [ "$WARMUP" -gt 0 ] && { load "$protocol" "$m" "$c" "$WARMUP" "$base.warmup.json" || true; }
  cpu0=$(cpu_ticks "$SERVER"); busy0=$(machine_busy_ticks); t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time load "$protocol" "$m" "$c" "$DURATION" "$base.json"; } 2>"$base.time" \
    || { log "$protocol failed on $m c=$c pass $pass"; failed=1; return 0; }
  t1=$(date +%s.%N); cpu1=$(cpu_ticks "$SERVER"); busy1=$(machine_busy_ticks)
  read -r rps p50 p99 errors ok < <(row "$protocol" "$base.json")
  read -r cpu_pct client_pct others_pct < <(awk -v s0="$cpu0" -v s1="$cpu1" -v b0="$busy0" -v b1="$busy1" \
    -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v lgt="$(tail -1 "$base.time")" 'BEGIN {
      wall = t1 - t0; split(lgt, o, " "); server = (s1 - s0) / hz; client = o[1] + o[2]; all = (b1 - b0) / hz
      others = all - server - client; if (others < 0) others = 0
      printf "%.0f %.0f %.0f\n", 100 * server / wall, 100 * client / wall, 100 * others / wall }')
  if [ "$errors" -ne 0 ] || [ "$ok" -eq 0 ]; then failed=1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$protocol" "$m" "$c" "$pass" "$rps" "$p50" "$p99" \
    "$cpu_pct" "$client_pct" "$others_pct" "$errors" >>"$RESULTS"
  log "$protocol $m c=$c pass $pass: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $cpu_pct%, client $client_pct%, others $others_pct%, $errors errors"
}

loadavg_before=$(cut -d' ' -f1-3 /proc/loadavg)
for m in $MODELS; do
  for c in $CONCURRENCY; do
    for ((pass = 1; pass <= PASSES; pass++)); do
      # rotate the order each pass: no protocol always runs first
      for ((i = 0; i < ${#PROTOCOLS[@]}; i++)); do
        measure "${PROTOCOLS[$(((i + pass - 1) % ${#PROTOCOLS[@]}))]}" "$m" "$c" "$pass"
      done
    done
  done
done
stop_pid "$SERVER"
trap - EXIT

{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`$COMMAND\` ($PROFILE build); load average before $loadavg_before, after $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  if [ "$LOADGEN" = wrk ]; then http_gen="wrk $({ "$WRK_BIN" -v 2>&1 || true; } | awk 'NR == 1 {print $2}')"; else http_gen="oha $("$OHA_BIN" --version | awk '{print $2}')"; fi
  echo "switchyard $(git describe --always --dirty 2>/dev/null || echo '?'), HTTP: $http_gen (c keep-alive connections), gRPC: grpc_load (tonic, $CONNECTIONS HTTP/2 connection(s)), ${DURATION}s per case, $(nproc) cores, medians of $PASSES interleaved passes"
  echo
  "$PYTHON" - "$RESULTS" <<'PY'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["model"], int(r["concurrency"]), r["protocol"]), []).append(r)
med = lambda rs, k: statistics.median(float(r[k]) for r in rs)
print("| model | c | protocol | req/s | p50 ms | p99 ms | server CPU % | client CPU % | others CPU % | errors |")
print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
ratios = []
for (m, c, p) in sorted(groups, key=lambda k: (k[0], k[1], ["http-json", "http-binary", "grpc-raw"].index(k[2]))):
    rs = groups[(m, c, p)]
    print("| %s | %d | %s | %.0f | %.3f | %.3f | %.0f | %.0f | %.0f | %d |" % (
        m, c, p, med(rs, "req_s"), med(rs, "p50_ms"), med(rs, "p99_ms"), med(rs, "server_cpu_pct"),
        med(rs, "client_cpu_pct"), med(rs, "others_cpu_pct"), sum(int(r["errors"]) for r in rs)))
    if p == "grpc-raw" and (m, c, "http-json") in groups:
        j = groups[(m, c, "http-json")]
        ratios.append("%s c=%d: gRPC raw / HTTP JSON req/s %.2f×, p99 %.3f vs %.3f ms" % (
            m, c, med(rs, "req_s") / max(med(j, "req_s"), 1), med(rs, "p99_ms"), med(j, "p99_ms")))
print()
for r in ratios:
    print("- " + r)
PY
} | tee "$OUT/table.md"

if [ "$WRITE_BENCHMARKS" = 1 ]; then
  "$PYTHON" benches/bench_md.py BENCHMARKS.md grpc "$OUT/table.md"
  log "wrote the grpc section of BENCHMARKS.md"
fi
[ "$failed" -eq 0 ] || die "some calls failed (see $OUT/)"
