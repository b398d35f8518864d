#!/usr/bin/env bash
# End-to-end load on switchyard: release build, the bundled models, oha at
# several concurrencies, one table, next to the bare ONNX Runtime time per row.
#
#   benches/load.sh                         # 10 s per case, c = 1, 8, 64
#   DURATION=2 benches/load.sh              # quick check
#   CONCURRENCY="1 64" MODELS=digits DURATION=5 benches/load.sh
#
# Env: DURATION (seconds per case, 10), CONCURRENCY ("1 8 64"),
# MODELS ("digits mlp_wide"), MODEL_REPOSITORY (models), OHA (path to oha;
# installed into .venv/tools when missing), OUT (results folder,
# bench-results/load-<time>), WRITE_BENCHMARKS (1: replace the load section
# of BENCHMARKS.md with this table; default 0). digits is driven at version 2 (the MLP),
# mlp_wide at version 1, with the first held-out digits row as a 1-row V2
# JSON request. Exits non-zero if any answer was not 2xx.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-1 8 64}
MODELS=${MODELS:-digits mlp_wide}
MODEL_REPOSITORY=${MODEL_REPOSITORY:-models}
OUT=${OUT:-bench-results/load-$(date -u +%Y%m%dT%H%M%SZ)}
WRITE_BENCHMARKS=${WRITE_BENCHMARKS:-0}
COMMAND="DURATION=$DURATION CONCURRENCY=\"$CONCURRENCY\" $0 $*"
mkdir -p "$OUT"

version_of() { case $1 in digits) echo 2 ;; *) echo 1 ;; esac; }

scripts/setup-onnxruntime.sh
log "building (cargo build --release, example ort_floor)"
cargo build --quiet --release --bin switchyard --example ort_floor
OHA_BIN=$(ensure_oha)

# The floor: bare ONNX Runtime per row, same library and session options,
# measured now (before the server starts) on this machine.
floor_args=()
for m in $MODELS; do floor_args+=("$MODEL_REPOSITORY/$m:$(version_of "$m")"); done
log "measuring the bare ONNX Runtime time per row (ort_floor)"
target/release/examples/ort_floor --secs 2 "${floor_args[@]}" | tee "$OUT/ort_floor.tsv" >&2
# The same with the core idle for 200 µs before each run, as a worker at c=1
# sees it (about one request round trip).
target/release/examples/ort_floor --secs 2 --gap-us 200 "${floor_args[@]}" | tee "$OUT/ort_floor_cold.tsv" >&2

PORT=$(free_port)
ADMIN_PORT=$(free_port)
BODY=$OUT/request.json
write_body "$BODY"

target/release/switchyard serve --model-repository "$MODEL_REPOSITORY" \
  --listen "127.0.0.1:$PORT" --admin-listen "127.0.0.1:$ADMIN_PORT" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'stop_pid $SERVER' EXIT
wait_http "http://127.0.0.1:$PORT/ready" "$SERVER" 120 || { tail -20 "$OUT/server.log" >&2; exit 1; }
log "switchyard ready on 127.0.0.1:$PORT (pid $SERVER); ${DURATION}s per case"

# The HTTP floor: an empty GET (/v2/health/live) at c=1, no model involved.
timeout --kill-after=10 $((DURATION + 60)) "$OHA_BIN" --no-tui --output-format json -w -z "${DURATION}s" -c 1 \
  "http://127.0.0.1:$PORT/v2/health/live" >"$OUT/live-c1.json" || die "oha failed on /v2/health/live"
read -r live_rps live_p50 live_p99 _ < <(oha_row "$OUT/live-c1.json")
log "GET /v2/health/live c=1: $live_rps req/s, p50 $live_p50 ms, p99 $live_p99 ms"

failed=0
rows=()
for m in $MODELS; do
  v=$(version_of "$m")
  url="http://127.0.0.1:$PORT/v2/models/$m/versions/$v/infer"
  curl -fsS -H 'content-type: application/json' --data-binary @"$BODY" "$url" >"$OUT/$m.answer.json" \
    || die "$url did not answer 200 to the request body"
  floor=$(awk -F'\t' -v m="$m" '$1 == m && $3 == 1 { print $5 }' "$OUT/ort_floor.tsv")
  for c in $CONCURRENCY; do
    run_oha "$OUT/$m-c$c.json" "$url" "$BODY" "$c" "$DURATION" || die "oha failed on $m c=$c"
    read -r rps p50 p99 non2xx errors ok < <(oha_row "$OUT/$m-c$c.json")
    if [ "$non2xx" -ne 0 ] || [ "$errors" -ne 0 ] || [ "$ok" -eq 0 ]; then failed=1; fi
    rows+=("$(printf '| %s v%s | %s | %s | %s | %s | %s | %s |' "$m" "$v" "$c" "$rps" "$p50" "$p99" "$((non2xx + errors))" "$floor")")
    log "$m c=$c: $rps req/s, p50 $p50 ms, p99 $p99 ms, $non2xx non-2xx, $errors errors"
  done
done

stop_pid "$SERVER"
trap - EXIT

{
  echo "Measured $(date -u '+%Y-%m-%d %H:%M UTC') with \`$COMMAND\`; load average at the end $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  echo "switchyard $(git describe --always --dirty 2>/dev/null || echo '?'), oha $("$OHA_BIN" --version | awk '{print $2}'), ${DURATION}s per case, $(nproc) cores"
  echo
  echo "| model | concurrency | req/s | p50 ms | p99 ms | errors | bare ORT µs/row (batch 1) |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"
  printf '%s\n' "${rows[@]}"
  echo
  echo "The HTTP floor: \`GET /v2/health/live\` (no model, no body) at c=1: p50 $live_p50 ms, p99 $live_p99 ms ($live_rps req/s)."
  echo
  echo "bare ORT (examples/ort_floor, OnnxBackend, 1 intra-op thread, median), back to back:"
  column -t -s $'\t' "$OUT/ort_floor.tsv" | sed 's/^/    /'
  echo
  echo "and with the core idle for 200 µs before each run (\`--gap-us 200\`, what a c=1 request meets):"
  column -t -s $'\t' "$OUT/ort_floor_cold.tsv" | sed 's/^/    /'
} | tee "$OUT/table.md"

if [ "$WRITE_BENCHMARKS" = 1 ]; then
  "$PYTHON" benches/bench_md.py BENCHMARKS.md load "$OUT/table.md"
  log "wrote the load section of BENCHMARKS.md"
fi

if [ "$failed" -ne 0 ]; then
  die "some requests did not get a 2xx answer (see $OUT/*.json)"
fi
