#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, idempotently:
# - .venv/test: a Python venv with the stock clients of tests/clients/requirements.txt
#   (tritonclient, kserve, grpcio-health-checking, grpcio-reflection), used by tests/clients.rs
#   and tests/grpc_proto.rs. The venv is rebuilt when
#   requirements.txt changes (its sha256 is stamped inside the venv).
# - prometheus and promtool (Debian package prometheus), used by tests/metrics.rs,
#   tests/prometheus.rs, tests/grafana.rs, the fleet tests and
#   deploy/prometheus/check.sh;
# - chromium and chromedriver (Debian packages chromium and chromium-driver),
#   used by tests/ui_browser.rs (the live page in headless Chromium);
# - curl (7.84 or later: --parallel, %header{}), which tests/fleet.rs drives
#   10,000 users' predicts with;
# installed with apt-get when missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

missing=()
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v curl >/dev/null || missing+=(curl)
if [ ${#missing[@]} -gt 0 ]; then
  command -v apt-get >/dev/null || { echo "setup-test-deps: install ${missing[*]} (Prometheus, Chromium, chromedriver and curl on PATH)" >&2; exit 1; }
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup-test-deps: installing the Debian packages ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
VENV=.venv/test
REQUIREMENTS=tests/clients/requirements.txt
STAMP=$VENV/.requirements.sha256

want=$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "setup-test-deps: $PYTHON is needed for the stock-client tests" >&2; exit 1; }
echo "setup-test-deps: building $VENV from $REQUIREMENTS" >&2
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
if ! "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"; then
  rm -rf "$VENV"   # never leave a half-built venv that looks usable
  echo "setup-test-deps: installing $REQUIREMENTS failed" >&2
  exit 1
fi
# tritonclient.grpc and kserve both register package `inference` in protobuf's
# default descriptor pool: one process cannot import both.
for modules in "tritonclient.http, tritonclient.grpc, grpc_health.v1.health_pb2, grpc_reflection.v1alpha.proto_reflection_descriptor_database, numpy" "kserve, numpy"; do
  "$VENV/bin/python" -c "import $modules" || { rm -rf "$VENV"; exit 1; }
done
echo "$want" > "$STAMP"
echo "setup-test-deps: $VENV is ready" >&2
