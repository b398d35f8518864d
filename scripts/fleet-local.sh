#!/usr/bin/env bash
# A switchyard fleet on this machine, no cluster needed:
#   scripts/fleet-local.sh start [N]   # N replicas (default 3)
#   scripts/fleet-local.sh stop
#
# `start` builds the server and the test-only Kubernetes API stand-in
# (examples/kube_standin), starts the stand-in, a Prometheus scraping every
# replica each second, and N `switchyard serve --fleet kubernetes` processes
# on loopback, each with its own ports and state directory, waits until all
# are ready, and prints one JSON line:
#   {"kube": URL, "prometheus": URL, "pods": [{"name", "pid", "data", "admin", "grpc"}], "token": TOKEN}
# `stop` stops every process it started, by PID.
#
# Environment: FLEET_DIR (state, logs, PIDs; default .cache/fleet-local),
# MODEL_REPOSITORY (default models), PROFILE (debug or release),
# SWITCHYARD_BIN and KUBE_STANDIN_BIN (prebuilt binaries: no build),
# SWITCHYARD_ADMIN_TOKEN (default: a random one), LEASE_DURATION /
# LEASE_RENEW_DEADLINE / LEASE_RETRY_PERIOD (default 3s / 2s / 500ms).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
FLEET_DIR=${FLEET_DIR:-$ROOT/.cache/fleet-local}
PIDS=$FLEET_DIR/pids

log() { printf 'fleet-local: %s\n' "$*" >&2; }
# A failed start stops what it had started (the PIDs file lists it).
die() {
  log "FAIL: $*"
  [ -f "$PIDS" ] && stop >/dev/null 2>&1
  exit 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# kill_wait SIGNAL PID...: signals each PID, then waits up to 10 s for all
# of them, then kills what is left.
kill_wait() {
  local sig=$1 pid
  shift
  for pid in "$@"; do kill "-$sig" "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

stop() {
  [ -f "$PIDS" ] || { log "nothing to stop ($PIDS does not exist)"; return 0; }
  local all=()
  mapfile -t all <"$PIDS"
  # the replicas first (the leader releases its Lease through the stand-in),
  # then Prometheus and the stand-in (the first two PIDs)
  kill_wait TERM "${all[@]:2}"
  kill_wait TERM "${all[@]:0:2}"
  rm -f "$PIDS"
  log "stopped"
}

wait_ready() {
  local url=$1 deadline=$((SECONDS + 180))
  until curl -fs -o /dev/null "$url"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

start() {
  local n=${1:-3}
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "start takes a replica count, got '$n'"
  [ ! -f "$PIDS" ] || die "a fleet is running ($PIDS); run '$0 stop' first"
  command -v prometheus >/dev/null || die "prometheus is missing: run 'make setup-test'"
  local profile=${PROFILE:-debug} flags=()
  [ "$profile" = release ] && flags=(--release)
  local bin=${SWITCHYARD_BIN:-} standin=${KUBE_STANDIN_BIN:-}
  if [ -z "$bin" ] || [ -z "$standin" ]; then
    log "building switchyard and the Kubernetes API stand-in ($profile)"
    cargo build --quiet "${flags[@]}" --bin switchyard >&2
    cargo build --quiet "${flags[@]}" --example kube_standin >&2
    bin=$ROOT/target/$profile/switchyard
    standin=$ROOT/target/$profile/examples/kube_standin
  fi
  local ort=${ORT_DYLIB_PATH:-$ROOT/.onnxruntime/libonnxruntime.so.1.31.1}
  [ -f "$ort" ] || die "ONNX Runtime is missing: run 'make setup'"

  rm -rf "$FLEET_DIR"
  mkdir -p "$FLEET_DIR"
  : >"$PIDS"
  local token=${SWITCHYARD_ADMIN_TOKEN:-$(python3 -c 'import secrets; print(secrets.token_hex(16))')}

  # the stand-in prints {"url": ...} once it listens
  "$standin" --listen 127.0.0.1:0 >"$FLEET_DIR/kube.out" 2>"$FLEET_DIR/kube.log" &
  echo $! >>"$PIDS"
  local kube=
  for _ in $(seq 1 100); do
    kube=$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$FLEET_DIR/kube.out")
    [ -n "$kube" ] && break
    sleep 0.1
  done
  [ -n "$kube" ] || die "the stand-in did not start (see $FLEET_DIR/kube.log)"
  cat >"$FLEET_DIR/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: standin
    cluster:
      server: $kube
contexts:
  - name: standin
    context:
      cluster: standin
      namespace: default
      user: standin
users:
  - name: standin
    user: {}
current-context: standin
EOF

  local i names=() data=() admin=() grpc=() targets=()
  for i in $(seq 1 "$n"); do
    names+=("pod-$i")
    data+=("$(free_port)")
    admin+=("$(free_port)")
    grpc+=("$(free_port)")
    targets+=("\"127.0.0.1:${admin[-1]}\"")
  done
  local prom_port
  prom_port=$(free_port)
  cat >"$FLEET_DIR/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: switchyard
    static_configs:
      - targets: [$(IFS=,; echo "${targets[*]}")]
EOF
  prometheus --config.file="$FLEET_DIR/prometheus.yml" --storage.tsdb.path="$FLEET_DIR/prometheus" \
    --web.listen-address="127.0.0.1:$prom_port" >"$FLEET_DIR/prometheus.log" 2>&1 &
  echo $! >>"$PIDS"
  local prom=http://127.0.0.1:$prom_port

  local pids=()
  for i in $(seq 0 $((n - 1))); do
    SWITCHYARD_ADMIN_TOKEN=$token ORT_DYLIB_PATH=$ort "$bin" serve \
      --model-repository "${MODEL_REPOSITORY:-$ROOT/models}" \
      --listen "127.0.0.1:${data[$i]}" --admin-listen "127.0.0.1:${admin[$i]}" \
      --grpc-listen "127.0.0.1:${grpc[$i]}" \
      --state-dir "$FLEET_DIR/${names[$i]}" --pod-name "${names[$i]}" \
      --fleet kubernetes --kubeconfig "$FLEET_DIR/kubeconfig" --namespace default \
      --prometheus-url "$prom" \
      --lease-duration "${LEASE_DURATION:-3s}" --lease-renew-deadline "${LEASE_RENEW_DEADLINE:-2s}" \
      --lease-retry-period "${LEASE_RETRY_PERIOD:-500ms}" \
      >"$FLEET_DIR/${names[$i]}.log" 2>&1 &
    pids+=($!)
    echo $! >>"$PIDS"
  done
  for i in $(seq 0 $((n - 1))); do
    wait_ready "http://127.0.0.1:${data[$i]}/ready" \
      || die "${names[$i]} did not turn ready (see $FLEET_DIR/${names[$i]}.log)"
  done
  wait_ready "$prom/-/ready" || die "Prometheus did not start (see $FLEET_DIR/prometheus.log)"

  local pods=
  for i in $(seq 0 $((n - 1))); do
    [ -z "$pods" ] || pods+=", "
    pods+="{\"name\": \"${names[$i]}\", \"pid\": ${pids[$i]}, \"data\": \"http://127.0.0.1:${data[$i]}\", \"admin\": \"http://127.0.0.1:${admin[$i]}\", \"grpc\": \"127.0.0.1:${grpc[$i]}\"}"
  done
  log "$n replicas ready; logs and state in $FLEET_DIR; stop with '$0 stop'"
  printf '{"kube": "%s", "prometheus": "%s", "pods": [%s], "token": "%s"}\n' "$kube" "$prom" "$pods" "$token"
}

case "${1:-}" in
  start) shift; start "$@" ;;
  stop) stop ;;
  *) echo "usage: $0 start [N] | stop" >&2; exit 2 ;;
esac
