#!/usr/bin/env bash
# Fetches the pinned ONNX Runtime shared library into .onnxruntime/ (git-ignored).
# Idempotent: does nothing when the library is already there with the right sha256.
# The library comes from the onnxruntime wheel on PyPI, via `pip download`.
set -euo pipefail

VERSION=1.31.1
LIB=libonnxruntime.so.${VERSION}
SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DEST=${ONNXRUNTIME_DIR:-$ROOT/.onnxruntime}

check() { [ -f "$DEST/$LIB" ] && echo "$SHA256  $DEST/$LIB" | sha256sum --check --status; }

if check; then
  exit 0
fi

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "setup-onnxruntime: python3 with pip is needed to fetch ONNX Runtime" >&2; exit 1; }
mkdir -p "$DEST"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "setup-onnxruntime: fetching onnxruntime==$VERSION (manylinux x86_64 wheel)" >&2
"$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 \
  "onnxruntime==$VERSION" -d "$tmp"
wheel=$(ls "$tmp"/onnxruntime-"$VERSION"-*.whl)
"$PYTHON" - "$wheel" "$tmp" "$LIB" <<'PY'
import sys, zipfile
wheel, out, lib = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    z.extract(f"onnxruntime/capi/{lib}", out)
PY
mv "$tmp/onnxruntime/capi/$LIB" "$DEST/$LIB"
if ! check; then
  echo "setup-onnxruntime: sha256 of $DEST/$LIB does not match the pinned $SHA256" >&2
  rm -f "$DEST/$LIB"
  exit 1
fi
ln -sf "$LIB" "$DEST/libonnxruntime.so"
echo "setup-onnxruntime: ONNX Runtime $VERSION is in $DEST" >&2
