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
#   GRPC_LOADGEN=tonic benches/grpc_vs_http.sh           # gRPC driven by examples/grpc_load instead of h2load
#   WRITE_BENCHMARKS=1 benches/grpc_vs_http.sh           # and rewrite the "grpc" section of BENCHMARKS.md
#
# Env: DURATION (seconds per case, 10), WARMUP (seconds of the same load
# before each case, 1), CONCURRENCY ("1 8 64"), MODELS ("digits mlp_wide"),
# PASSES (2), PROFILE (release), LOADGEN (the HTTP load generator: wrk, the
# Debian package, installed when missing; or oha, into .venv/tools),
# GRPC_LOADGEN (h2load or tonic, below), H2_CONNECTIONS (h2load's HTTP/2
# connections, 4), CONNECTIONS (grpc_load's HTTP/2 connections, 1 as gRPC
# clients do), OUT (bench-results/grpc-<time>).
#
# HTTP/1.1: keep-alive, c connections. gRPC, c calls in flight:
# - GRPC_LOADGEN=h2load (the default): h2load (Debian package
#   nghttp2-client, installed when missing), one thread, POSTs a prepared
#   gRPC frame (examples/grpc_frame.rs: the length-prefixed
#   ModelInferRequest, raw contents, one file per model) to
#   /inference.GRPCInferenceService/ModelInfer on min(c, H2_CONNECTIONS)
#   connections (lowered until it divides c) with c/connections streams each:
#   c=1 is 1 connection x 1 stream, c=8 4 x 2, c=64 4 x 16. p50/p99 come from
#   its --log-file (one line per call of the measured window). h2load only
#   sees HTTP status 200, gRPC's errors travel in trailers: the script reads
#   switchyard's Prometheus counters on the admin listener before and after
#   each case and counts as errors the gRPC answers of a status other than
#   2xx (switchyard_requests_total{protocol="grpc"}), the refusals
#   (switchyard_load_shed_total, switchyard_rate_limited_total), h2load's
#   non-200 or failed streams, and any call h2load saw answered that the
#   server did not count as OK (calls refused before they reach a version,
#   such as an unknown model, have no counter; up to c calls the server
#   answered after h2load stopped counting can hide as many of those). At
#   the start one call per model checks that the frame is accepted (one OK
#   gRPC answer counted).
# - GRPC_LOADGEN=tonic: target/$PROFILE/examples/grpc_load
#   (benches/grpc_load.rs, tonic), c calls on CONNECTIONS connections, its
#   own percentiles and error count.
# Each case is preceded by a WARMUP-second run of the same load (not
# counted), so h2load's own --warm-up-time is not used: the measured run,
# the CPU readings and the counters cover the same window.
#
# CPU columns: server = switchyard's process, client = the load generator's
# own process (user + system), others = the rest of the machine.
# digits is version 2 (the MLP), mlp_wide version 1.
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
H2_CONNECTIONS=${H2_CONNECTIONS:-4}
LOADGEN=${LOADGEN:-wrk}
GRPC_LOADGEN=${GRPC_LOADGEN:-h2load}
PROFILE=${PROFILE:-release}
OUT=${OUT:-bench-results/grpc-$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-0}
COMMAND="DURATION=$DURATION PASSES=$PASSES CONCURRENCY=\"$CONCURRENCY\" $0"
[ "$GRPC_LOADGEN" = h2load ] || COMMAND="GRPC_LOADGEN=$GRPC_LOADGEN $COMMAND"
PROTOCOLS=(http-json http-binary grpc-raw)
mkdir -p "$OUT"

version_of() { case $1 in digits) echo 2 ;; *) echo 1 ;; esac; }

# h2_layout C: "connections streams" for h2load, c calls in flight in all.
h2_layout() {
  local c=$1 n=$H2_CONNECTIONS
  [ "$n" -gt "$c" ] && n=$c
  while [ $((c % n)) -ne 0 ]; do n=$((n - 1)); done
  echo "$n $((c / n))"
}

case $GRPC_LOADGEN in
  h2load) GRPC_EXAMPLE=grpc_frame ;;
  tonic) GRPC_EXAMPLE=grpc_load ;;
  *) die "GRPC_LOADGEN is h2load or tonic, not '$GRPC_LOADGEN'" ;;
esac
[[ $H2_CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "H2_CONNECTIONS is a positive number, not '$H2_CONNECTIONS'"

scripts/setup-onnxruntime.sh
log "building switchyard and examples/$GRPC_EXAMPLE ($PROFILE)"
if [ "$PROFILE" = release ]; then
  cargo build --quiet --release --bin switchyard --example "$GRPC_EXAMPLE"
else
  cargo build --quiet --bin switchyard --example "$GRPC_EXAMPLE"
  PROFILE=debug
fi
BIN=target/$PROFILE
if [ "$LOADGEN" = wrk ]; then WRK_BIN=$(ensure_wrk); else OHA_BIN=$(ensure_oha); fi
[ "$GRPC_LOADGEN" = h2load ] && H2LOAD_BIN=$(ensure_h2load)
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
# gRPC (h2load): the length-prefixed ModelInferRequest, one file per model.
if [ "$GRPC_LOADGEN" = h2load ]; then
  for m in $MODELS; do
    "$BIN/examples/grpc_frame" --model "$m" --version "$(version_of "$m")" --out "$OUT/$m.grpc"
  done
fi

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
GRPC_URL="http://127.0.0.1:$GRPC_PORT/inference.GRPCInferenceService/ModelInfer"

# grpc_counters MODEL: "ok not_ok refused" from the server's /metrics: its
# gRPC answers for MODEL of status 2xx and of any other status
# (switchyard_requests_total), and the requests it refused before they
# reached a version (load shedding, any listener; rate limits, any model).
grpc_counters() {
  curl -fsS --max-time 10 "http://127.0.0.1:$ADMIN_PORT/metrics" | awk -v model="$1" '
    /^switchyard_requests_total\{/ && /protocol="grpc"/ && index($0, "model=\"" model "\"") {
      if (/status="2xx"/) ok += $NF; else bad += $NF }
    /^switchyard_(load_shed|rate_limited)_total[{ ]/ { refused += $NF }
    END { printf "%.0f %.0f %.0f\n", ok, bad, refused }' \
    || { log "could not read the server's counters (http://127.0.0.1:$ADMIN_PORT/metrics)"; return 1; }
}

# run_h2load PREFIX FRAME C SECONDS [N]: h2load POSTs FRAME as gRPC calls, c
# in flight (h2_layout), for SECONDS (or N calls when N is given); its
# summary into PREFIX.h2load.txt, one line per call into PREFIX.h2load.log.
run_h2load() {
  local prefix=$1 frame=$2 c=$3 d=$4 conns streams mode
  read -r conns streams < <(h2_layout "$c")
  if [ -n "${5:-}" ]; then mode=(-n "$5"); else mode=(-D "$d"); fi
  rm -f "$prefix.h2load.log"
  timeout --kill-after=10 $((d + 60)) "$H2LOAD_BIN" -t1 -c"$conns" -m"$streams" "${mode[@]}" \
    -H "content-type: application/grpc" -H "te: trailers" -d "$frame" \
    --log-file="$prefix.h2load.log" "$GRPC_URL" >"$prefix.h2load.txt"
}

# check_frame MODEL: one call with the model's frame must come back 200 and
# be counted by the server as one OK gRPC answer for the model.
check_frame() {
  local m=$1 ok0 bad0 refused0 ok1 bad1 refused1 status
  read -r ok0 bad0 refused0 < <(grpc_counters "$m")
  run_h2load "$OUT/check-$m" "$OUT/$m.grpc" 1 0 1 || die "h2load failed (see $OUT/check-$m.h2load.txt)"
  read -r ok1 bad1 refused1 < <(grpc_counters "$m")
  status=$(cut -f2 "$OUT/check-$m.h2load.log" 2>/dev/null || true)
  if [ "$status" != 200 ] || [ $((ok1 - ok0)) -ne 1 ] || [ $((bad1 - bad0 + refused1 - refused0)) -ne 0 ]; then
    die "the gRPC frame for $m was not accepted: HTTP status '$status', server counted $((ok1 - ok0)) OK, $((bad1 - bad0)) not OK, $((refused1 - refused0)) refused (see $OUT/check-$m.h2load.txt, $OUT/server.log)"
  fi
  log "gRPC frame for $m accepted (1 call, 1 OK answer counted by the server)"
}
if [ "$GRPC_LOADGEN" = h2load ]; then
  for m in $MODELS; do check_frame "$m"; done
fi

# load PROTOCOL MODEL C SECONDS PREFIX: one run of the protocol's load
# generator, its output into PREFIX.json (wrk, oha, grpc_load) or
# PREFIX.h2load.txt and PREFIX.h2load.log (h2load).
load() {
  local protocol=$1 m=$2 c=$3 d=$4 out=$5.json v url
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
      if [ "$GRPC_LOADGEN" = h2load ]; then
        run_h2load "$5" "$OUT/$m.grpc" "$c" "$d"
      else
        timeout --kill-after=10 $((d + 60)) "$BIN/examples/grpc_load" --addr "127.0.0.1:$GRPC_PORT" \
          --model "$m" --version "$v" --concurrency "$c" --duration "$d" --warmup 0 \
          --connections "$CONNECTIONS" >"$out"
      fi
      ;;
  esac
}

# h2load_row PREFIX "COUNTERS_BEFORE" "COUNTERS_AFTER": "req/s p50_ms p99_ms
# errors ok server_ok" from h2load's per-call log (start, HTTP status or -1,
# microseconds) and the server's counters (grpc_counters) around the run.
# ok = 200 answers less those the server did not count as OK; req/s = ok
# over DURATION (h2load's main phase is a timer of exactly -D).
h2load_row() {
  "$PYTHON" - "$1.h2load.log" "$DURATION" "$2" "$3" <<'PY'
import math, sys
lat, not_200 = [], 0
for line in open(sys.argv[1]):
    f = line.split("\t")
    if len(f) < 3:
        continue
    if f[1] == "200":
        lat.append(int(f[2]))
    else:
        not_200 += 1
ok0, bad0, refused0 = map(int, sys.argv[3].split())
ok1, bad1, refused1 = map(int, sys.argv[4].split())
server_ok = ok1 - ok0
# calls h2load saw answered (HTTP 200) that the server did not count as OK
# answers: refused before reaching a version (no counter of their own)
missing = max(0, len(lat) - server_ok)
errors = not_200 + (bad1 - bad0) + (refused1 - refused0) + missing
lat.sort()
pct = lambda q: "%.3f" % (lat[max(0, math.ceil(q * len(lat)) - 1)] / 1000) if lat else "nan"
ok = len(lat) - missing
print("%.0f %s %s %d %d %d" % (ok / float(sys.argv[2]), pct(0.50), pct(0.99), errors, ok, server_ok))
PY
}

# row PROTOCOL PREFIX: "req/s p50_ms p99_ms errors ok".
row() {
  if [ "$1" = grpc-raw ]; then
    "$PYTHON" -c 'import json,sys; s=json.load(open(sys.argv[1])); print("%.0f %.3f %.3f %d %d" % (s["req_s"], s["p50_ms"], s["p99_ms"], s["errors"], s["ok"]))' "$2.json"
  else
    local rps p50 p99 non2xx errors ok
    if [ "$LOADGEN" = wrk ]; then
      read -r rps p50 p99 non2xx errors ok < <(wrk_row "$2.json")
    else
      read -r rps p50 p99 non2xx errors ok < <(oha_row "$2.json")
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
  local h2 counters0 counters1 server_ok note=
  [ "$protocol" = grpc-raw ] && [ "$GRPC_LOADGEN" = h2load ] && h2=1
  [ "$WARMUP" -gt 0 ] && { load "$protocol" "$m" "$c" "$WARMUP" "$base.warmup" || true; }
  [ -n "${h2:-}" ] && counters0=$(grpc_counters "$m")
  cpu0=$(cpu_ticks "$SERVER"); busy0=$(machine_busy_ticks); t0=$(date +%s.%N)
  TIMEFORMAT='%U %S'
  { time load "$protocol" "$m" "$c" "$DURATION" "$base"; } 2>"$base.time" \
    || { log "$protocol failed on $m c=$c pass $pass"; failed=1; return 0; }
  t1=$(date +%s.%N); cpu1=$(cpu_ticks "$SERVER"); busy1=$(machine_busy_ticks)
  if [ -n "${h2:-}" ]; then
    counters1=$(grpc_counters "$m")
    read -r rps p50 p99 errors ok server_ok < <(h2load_row "$base" "$counters0" "$counters1")
    note=" (server counted $server_ok OK gRPC answers)"
  else
    read -r rps p50 p99 errors ok < <(row "$protocol" "$base")
  fi
  read -r cpu_pct client_pct others_pct < <(awk -v s0="$cpu0" -v s1="$cpu1" -v b0="$busy0" -v b1="$busy1" \
    -v t0="$t0" -v t1="$t1" -v hz="$CLK_TCK" -v lgt="$(tail -1 "$base.time")" 'BEGIN {
      wall = t1 - t0; split(lgt, o, " "); server = (s1 - s0) / hz; client = o[1] + o[2]; all = (b1 - b0) / hz
      others = all - server - client; if (others < 0) others = 0
      printf "%.0f %.0f %.0f\n", 100 * server / wall, 100 * client / wall, 100 * others / wall }')
  if [ "$errors" -ne 0 ] || [ "$ok" -eq 0 ]; then failed=1; fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$protocol" "$m" "$c" "$pass" "$rps" "$p50" "$p99" \
    "$cpu_pct" "$client_pct" "$others_pct" "$errors" >>"$RESULTS"
  log "$protocol $m c=$c pass $pass: $rps req/s, p50 $p50 ms, p99 $p99 ms, server CPU $cpu_pct%, client $client_pct%, others $others_pct%, $errors errors$note"
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
  if [ "$GRPC_LOADGEN" = h2load ]; then
    grpc_gen="h2load $("$H2LOAD_BIN" --version | awk '{print $2}') (1 thread, min(c, $H2_CONNECTIONS) HTTP/2 connections x c/connections streams; errors from the server's counters)"
  else
    grpc_gen="grpc_load (tonic, $CONNECTIONS HTTP/2 connection(s))"
  fi
  echo "switchyard $(git describe --always --dirty 2>/dev/null || echo '?'), HTTP: $http_gen (c keep-alive connections), gRPC: $grpc_gen, ${DURATION}s per case, $(nproc) cores, medians of $PASSES interleaved passes"
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
