#!/usr/bin/env bash
# Where switchyard's time goes under load: `perf record` on the running
# server while oha drives one model, then the top functions by self time
# and by inclusive time.
#
#   benches/profile.sh                      # digits v2, c=64, 10 s profiled
#   MODEL=mlp_wide C=64 SECS=10 benches/profile.sh
#
# Needs perf (Debian: linux-perf). Call graphs use DWARF unwinding (the
# release profile keeps line tables: `debug = 1`). Output in OUT
# (bench-results/profile-<time>): perf.data, self.txt, children.txt,
# threads.txt, dso.txt.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$BENCH_ROOT"

MODEL=${MODEL:-digits}
C=${C:-64}
SECS=${SECS:-10}
MODEL_REPOSITORY=${MODEL_REPOSITORY:-models}
OUT=${OUT:-bench-results/profile-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
command -v perf >/dev/null || die "perf is missing (apt-get install linux-perf)"
version=1; [ "$MODEL" = digits ] && version=2

scripts/setup-onnxruntime.sh
cargo build --quiet --release --bin switchyard
OHA_BIN=$(ensure_oha)
BODY=$OUT/request.json
write_body "$BODY"
PORT=$(free_port)
target/release/switchyard serve --model-repository "$MODEL_REPOSITORY" --listen "127.0.0.1:$PORT" \
  --admin-listen "127.0.0.1:$(free_port)" >"$OUT/server.log" 2>&1 &
SERVER=$!
trap 'stop_pid $SERVER' EXIT
wait_http "http://127.0.0.1:$PORT/ready" "$SERVER" 120
url="http://127.0.0.1:$PORT/v2/models/$MODEL/versions/$version/infer"

# oha runs 2 s longer on each side than perf records.
run_oha "$OUT/oha.json" "$url" "$BODY" "$C" $((SECS + 4)) &
OHA_PID=$!
sleep 2
perf record -q -o "$OUT/perf.data" -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$SERVER" -- sleep "$SECS" \
  2>"$OUT/perf-record.log" || die "perf record failed (see $OUT/perf-record.log)"
wait "$OHA_PID"
log "load during the profile: $(oha_row "$OUT/oha.json" | awk '{print $1 " req/s, p50 " $2 " ms, p99 " $3 " ms"}')"

perf report -i "$OUT/perf.data" --no-children --sort dso,symbol --stdio --percent-limit 0.7 -g none \
  2>/dev/null >"$OUT/self.txt"
perf report -i "$OUT/perf.data" --children --sort symbol --stdio --percent-limit 3 -g none \
  2>/dev/null >"$OUT/children.txt"
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio -g none 2>/dev/null >"$OUT/threads.txt"
perf report -i "$OUT/perf.data" --no-children --sort dso --stdio -g none 2>/dev/null >"$OUT/dso.txt"
# perf pads every line with trailing columns; drop them.
sed -i 's/[[:space:]]*-[[:space:]]*-[[:space:]]*$//; s/[[:space:]]*$//' "$OUT"/{self,children,threads,dso}.txt
echo "== CPU by library ==";         grep -v '^#' "$OUT/dso.txt" | grep -v '^$' | head -8
echo "== CPU by thread ==";          grep -v '^#' "$OUT/threads.txt" | grep -v '^$' | head -10
echo "== top functions by self time ==";  grep -v '^#' "$OUT/self.txt" | grep -v '^$' | head -40
echo "== top functions by inclusive time =="; grep -v '^#' "$OUT/children.txt" | grep -v '^$' | grep -v '(inlined)' | head -60
