#!/usr/bin/env bash
# Installs what the test suite needs besides Rust, idempotently.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
