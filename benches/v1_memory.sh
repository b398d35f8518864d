#!/usr/bin/env bash
# Peak resident memory of a server answering 8 parallel 7 MiB V1 requests
# (rows of digits pixels as compact JSON, row format) on the bundled digits
# model.
#
#   benches/v1_memory.sh                      # target/release/switchyard
#   BIN=/path/to/switchyard benches/v1_memory.sh
#
# Env: BIN (the server binary), PARALLEL (8), MIB (7 per body), RUNS (3).
# Prints, per run, the server's RSS before, its peak (VmHWM) and the growth
# against the bytes of the bodies in flight; the run starts a fresh server.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/release/switchyard}
PARALLEL=${PARALLEL:-8}
MIB=${MIB:-7}
RUNS=${RUNS:-3}
LIB=${ORT_DYLIB_PATH:-$PWD/.onnxruntime/libonnxruntime.so.1.31.1}
work=$(mktemp -d)
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
pid=

mkdir -p "$work/repo"
cp -r models/digits "$work/repo/"
python3 - "$work/body.json" "$MIB" <<'EOF'
import json, sys
path, mib = sys.argv[1], int(sys.argv[2])
samples = json.load(open("models/digits/samples.json"))["samples"]
# compact, as clients send it: whole pixel values, no spaces (the most
# elements per byte, the worst case for memory)
row = json.dumps([int(v) for v in samples[0]["inputs"]["input"][0]], separators=(",", ":"))
n = mib * 1024 * 1024 // (len(row) + 1)
open(path, "w").write('{"instances":[' + ",".join([row] * n) + "]}")
EOF
body_kib=$(( $(stat -c %s "$work/body.json") / 1024 ))
python3 - "$work/small.json" <<'EOF'
import json, sys
samples = json.load(open("models/digits/samples.json"))["samples"]
json.dump({"instances": [samples[0]["inputs"]["input"][0]] * 100}, open(sys.argv[1], "w"))
EOF

kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$pid/status"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

echo "binary: $BIN; $PARALLEL parallel V1 bodies of $body_kib KiB each"
for run in $(seq "$RUNS"); do
  port=$(free_port); admin=$(free_port)
  RUST_LOG=warn "$BIN" serve --model-repository "$work/repo" --listen "127.0.0.1:$port" \
    --admin-listen "127.0.0.1:$admin" --state-dir "$work/state-$run" --onnxruntime-lib "$LIB" \
    --grpc-listen off --drain-secs 0 >/dev/null 2>&1 &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/ready" >/dev/null; do sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$port/v1/models/digits:predict" --data-binary @"$work/small.json"
  before=$(kib VmRSS)
  codes=$(for _ in $(seq "$PARALLEL"); do
    curl -s -o /dev/null -w '%{http_code}\n' "http://127.0.0.1:$port/v1/models/digits:predict" \
      -H 'content-type: application/json' --data-binary @"$work/body.json" &
  done; wait)
  peak=$(kib VmHWM); after=$(kib VmRSS)
  kill "$pid"; wait "$pid" 2>/dev/null || true
  grew=$(( peak - before ))
  echo "run $run: statuses $(echo $codes | tr '\n' ' '); RSS before $(( before / 1024 )) MiB, peak $(( peak / 1024 )) MiB" \
    "(+$(( grew / 1024 )) MiB = $(python3 -c "print(f'{$grew / ($PARALLEL * $body_kib):.2f}')")x the bodies), after $(( after / 1024 )) MiB"
done
