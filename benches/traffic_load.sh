#!/usr/bin/env bash
# End-to-end cost of traffic policies: oha against versionless digits with
# (a) all traffic on stable, (b) a 10% canary, (c) a shadow at rate 1.0,
# in one run, and each as a ratio to (a). Usage: benches/traffic_load.sh
# (DURATION=10 CONCURRENCY=64 by default; needs oha, see benches/load.sh).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
DURATION=${DURATION:-10}
CONCURRENCY=${CONCURRENCY:-64}
OHA=${OHA:-$(command -v oha || echo "$ROOT/.venv/tools/bin/oha")}
[ -x "$OHA" ] || { echo "traffic_load: oha not found; run benches/load.sh once (it installs oha) or set OHA" >&2; exit 1; }
scripts/setup-onnxruntime.sh
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
port=$((20000 + RANDOM % 20000)); admin=$((port + 1))
state=$(mktemp -d)
./target/release/switchyard serve --model-repository models --listen 127.0.0.1:$port \
  --admin-listen 127.0.0.1:$admin --state-dir "$state" >"$state/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$state"' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$port/ready" >/dev/null && break; sleep 0.2; done
python3 - "$state/request.json" <<'PY'
import json, sys
row = json.load(open("models/digits/samples.json"))["samples"][0]["inputs"]["input"][0]
json.dump({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]}, open(sys.argv[1], "w"))
PY
policy() { curl -sf -X PUT "http://127.0.0.1:$admin/admin/v1/models/digits/policy" -d "$1" >/dev/null; }
run() {
  "$OHA" --no-tui --output-format json -z "${DURATION}s" -c "$CONCURRENCY" -m POST -T application/json \
    -D "$state/request.json" "http://127.0.0.1:$port/v2/models/digits/infer" >"$state/$1.json"
  python3 - "$state/$1.json" "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
ok = sum(v for k, v in r.get("statusCodeDistribution", {}).items() if k.startswith("2"))
rps = ok / r["summary"]["total"]
p = r["latencyPercentiles"]
print(f"{sys.argv[2]:<12} {rps:>10.0f} req/s  p50 {p['p50']*1000:.3f} ms  p99 {p['p99']*1000:.3f} ms  non-2xx {sum(r.get('statusCodeDistribution', {}).values()) - ok}")
open(sys.argv[1] + ".rps", "w").write(str(rps))
PY
}
policy '{"stable": 1}'; run plain
policy '{"stable": 1, "candidate": {"version": 2, "weight": 1000}}'; run canary-10
policy '{"stable": 1, "shadow": {"version": 2, "rate": 1.0}}'; run shadow-1.0
python3 - "$state" <<'PY'
import sys
d = sys.argv[1]
plain = float(open(f"{d}/plain.json.rps").read())
for name in ["canary-10", "shadow-1.0"]:
    print(f"{name} / plain = {float(open(f'{d}/{name}.json.rps').read()) / plain:.3f}")
PY
curl -s "http://127.0.0.1:$admin/admin/v1/models/digits/shadow" | python3 -c "import json,sys; p=json.load(sys.stdin)['pairs']; print('shadow:', [{k: x[k] for k in ('compared','dropped','agreement')} for x in p])"
