#!/usr/bin/env bash
# Builds the container image from the Dockerfile on a machine that cannot pull
# from any container registry (no Docker engine either), then runs it and
# checks it for real: /health, /ready, a digits inference, the HEALTHCHECK,
# the non-root user and a graceful stop.
#
#   scripts/image.sh          build + check (what .ci/run does)
#   scripts/image.sh clean    remove the images and the cached rootfs
#
# How, without a registry:
#   1. `debootstrap` a Debian bookworm rootfs (minbase, slimmed like -slim),
#      cached as .cache/image/bookworm-rootfs.tar (git-ignored), and
#      `podman import` it as $BASE_IMAGE: the Dockerfile's RUNTIME_IMAGE.
#   2. $RUST_IMAGE = that base + gcc + libc6-dev + the host's Rust toolchain
#      (`rustc --print sysroot`): the Dockerfile's RUST_IMAGE. The binary is
#      still compiled from source inside the build stage, as with Docker.
#   3. `buildah bud --pull=never --isolation chroot --format docker` (docker
#      format keeps HEALTHCHECK; --layers caches steps between runs).
# The images are named localhost/... and passed as build args rather than
# tagged with the official names, so nothing here passes for an official image.
#
# Site CA certificates: when this host trusts extra CAs (Debian's
# /usr/local/share/ca-certificates, e.g. for a TLS-inspecting proxy in front of
# the package registries), that directory is mounted read-only into the build
# steps, so cargo and pip there trust what the host trusts. Only the build
# image made here keeps them (in its CA bundle); the runtime image does not.
#
# Run with podman as root on this kind of machine: crun cannot handle the
# hybrid cgroup layout (runc can), and there is no CAP_SYS_RESOURCE to raise
# rlimits, so the container gets limits at or below the current ones.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

IMAGE=${IMAGE:-localhost/switchyard:dev}
BASE_IMAGE=localhost/switchyard-base:bookworm
CACHE=$ROOT/.cache/image
ROOTFS_TAR=$CACHE/bookworm-rootfs.tar
PODMAN_RUNTIME=${PODMAN_RUNTIME:-runc}
NAME=switchyard-image-check-$$
SITE_CA_DIR=/usr/local/share/ca-certificates
READY_TIMEOUT_SECS=${READY_TIMEOUT_SECS:-180}

log() { printf 'image: %s\n' "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }
timed() {
  local what=$1 start=$SECONDS
  shift
  "$@"
  log "$what: $((SECONDS - start)) s"
}

# Mounts for build steps (see "Site CA certificates" above).
build_volumes=()
if compgen -G "$SITE_CA_DIR/*.crt" >/dev/null; then
  build_volumes=(--volume "$SITE_CA_DIR:$SITE_CA_DIR:ro")
fi

tmp=$(mktemp -d)
container_started=
cleanup() {
  if [ -n "$container_started" ]; then
    podman --runtime "$PODMAN_RUNTIME" rm -f --time 5 "$NAME" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# --- tools -------------------------------------------------------------------
ensure_tools() {
  local missing=() pair
  for pair in debootstrap:debootstrap buildah:buildah podman:podman runc:runc curl:curl; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]} with apt-get"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
  fi
  command -v python3 >/dev/null || die "python3 is needed to check the inference answer"
}

# --- 1. base image: a debootstrapped bookworm --------------------------------
make_rootfs() {
  local dir=${tmp:?}/rootfs
  log "debootstrap bookworm (minbase) into a temporary directory"
  if ! debootstrap --variant=minbase bookworm "$dir" >"$tmp/debootstrap.log" 2>&1; then
    tail -n 30 "$tmp/debootstrap.log" >&2
    die "debootstrap failed"
  fi
  # Security and point-release updates, from the mirror debootstrap chose.
  local mirror
  mirror=$(sed -n 's|^deb \(.*\)/debian bookworm main$|\1|p' "$dir/etc/apt/sources.list")
  [ -n "$mirror" ] || die "cannot read the mirror from the rootfs' sources.list"
  cat >"$dir/etc/apt/sources.list" <<EOF
deb $mirror/debian bookworm main
deb $mirror/debian bookworm-updates main
deb $mirror/debian-security bookworm-security main
EOF
  # Like Debian's -slim container images: no documentation, man pages or
  # translations, and apt keeps neither downloaded packages nor its caches.
  cat >"$dir/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
  cat >"$dir/etc/apt/apt.conf.d/slim" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
EOF
  chroot "$dir" sh -c 'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y -q upgrade && apt-get clean' \
    >>"$tmp/debootstrap.log" 2>&1 || { tail -n 30 "$tmp/debootstrap.log" >&2; die "apt-get upgrade in the rootfs failed"; }
  # Files installed before the excludes above took effect. ${dir:?}: never
  # the host's own /usr/share.
  find "${dir:?}/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  find "${dir:?}/usr/share/doc" -mindepth 1 -type d -empty -delete
  find "${dir:?}/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  rm -rf "${dir:?}"/usr/share/{man,groff,info,lintian,linda}/* "${dir:?}"/var/lib/apt/lists/* "${dir:?}"/var/cache/apt/*.bin
  mkdir -p "$CACHE"
  tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.part" .
  mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
  rm -rf "$dir"
}

base_image() {
  if ! podman image exists "$BASE_IMAGE"; then
    [ -f "$ROOTFS_TAR" ] || timed "rootfs (debootstrap)" make_rootfs
    log "importing the rootfs as $BASE_IMAGE"
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' \
      "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
  fi
}

# --- 2. build-stage image: base + C linker + the host's Rust toolchain -------
rust_image() {
  local sysroot version ctr
  sysroot=$(rustc --print sysroot)
  version=$(rustc --version | awk '{print $2}')
  RUST_IMAGE=localhost/switchyard-rust:$version-bookworm
  podman image exists "$RUST_IMAGE" && return 0
  log "making $RUST_IMAGE from $BASE_IMAGE and the toolchain in $sysroot"
  ctr=$(buildah from --pull=never --quiet "$BASE_IMAGE")
  buildah run --isolation chroot "${build_volumes[@]}" "$ctr" -- sh -c \
    'apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ca-certificates gcc libc6-dev && rm -rf /var/lib/apt/lists/*' \
    >"$tmp/rust-image.log" 2>&1 || { tail -n 30 "$tmp/rust-image.log" >&2; buildah rm "$ctr" >/dev/null; die "apt-get in the rust image failed"; }
  buildah copy --quiet "$ctr" "$sysroot/lib" /usr/local/rust/lib >/dev/null
  local b
  for b in cargo rustc rustdoc; do
    buildah copy --quiet "$ctr" "$sysroot/bin/$b" "/usr/local/rust/bin/$b" >/dev/null
  done
  # The same environment as the official rust images: CARGO_HOME is where the
  # Dockerfile's cache mount for downloaded crates points.
  buildah config \
    --env CARGO_HOME=/usr/local/cargo \
    --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    "$ctr"
  buildah commit --quiet --format docker "$ctr" "$RUST_IMAGE" >/dev/null
  buildah rm "$ctr" >/dev/null
}

# --- 3. the image ------------------------------------------------------------
build_image() {
  log "buildah bud -> $IMAGE"
  buildah bud --pull=never --isolation chroot --format docker --layers --force-rm "${build_volumes[@]}" \
    --build-arg "RUST_IMAGE=$RUST_IMAGE" \
    --build-arg "RUNTIME_IMAGE=$BASE_IMAGE" \
    -t "$IMAGE" . >"$tmp/build.log" 2>&1 || { tail -n 60 "$tmp/build.log" >&2; die "buildah bud failed"; }
  awk '/STEP [0-9]/ { if (s) print s; s = "image:   " substr($0, 1, 100) }
       /Using cache/ { s = s " (cached)" }
       END { if (s) print s }' "$tmp/build.log" >&2
}

# --- 4. run it and check it ----------------------------------------------------
podman_run() { podman --runtime "$PODMAN_RUNTIME" "$@"; }

http_status() { curl -s -o "$tmp/body" -w '%{http_code}' "$@" || true; }

expect_200() {
  local what=$1 status
  shift
  status=$(http_status "$@")
  [ "$status" = 200 ] || die "$what answered $status: $(cat "$tmp/body" 2>/dev/null)"
  log "ok: $what -> 200"
}

check_image() {
  local nofile token data admin started deadline status
  nofile=$(ulimit -Hn)
  if [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ]; then
    nofile=65536
  fi
  token=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
  mkdir -m 0750 "$tmp/state"
  chown 10001:10001 "$tmp/state"
  # Like the Kubernetes pod: read-only root, writable /tmp and state dir,
  # the admin token from the environment.
  podman_run run -d --name "$NAME" \
    --ulimit "nofile=$nofile:$nofile" --ulimit nproc=4096:4096 \
    --read-only --tmpfs /tmp -v "$tmp/state:/var/lib/switchyard" \
    -p 127.0.0.1::8080 -p 127.0.0.1::8081 \
    -e "SWITCHYARD_ADMIN_TOKEN=$token" \
    "$IMAGE" >"$tmp/run.log" 2>&1 || { cat "$tmp/run.log" >&2; die "podman run failed"; }
  # (podman complains on stderr that it cannot schedule the HEALTHCHECK
  # without systemd; `podman healthcheck run` below runs it by hand.)
  container_started=1
  data=$(podman_run port "$NAME" 8080 | head -n1)
  admin=$(podman_run port "$NAME" 8081 | head -n1)
  log "container $NAME: data on $data, admin on $admin"

  started=$SECONDS
  deadline=$((SECONDS + READY_TIMEOUT_SECS))
  while :; do
    status=$(http_status "http://$data/ready")
    [ "$status" = 200 ] && break
    if [ "$(podman_run inspect -f '{{.State.Running}}' "$NAME")" != true ]; then
      podman_run logs "$NAME" >&2 || true
      die "the container exited before it was ready"
    fi
    if [ $SECONDS -ge $deadline ]; then
      podman_run logs "$NAME" >&2 || true
      die "/ready was still $status after ${READY_TIMEOUT_SECS}s"
    fi
    sleep 1
  done
  log "ready after $((SECONDS - started)) s"

  expect_200 "GET /health" "http://$data/health"
  expect_200 "GET /ready" "http://$data/ready"
  expect_200 "GET /health (admin listener)" "http://$admin/health"
  # The admin API wants the token from the environment.
  status=$(http_status "http://$admin/admin/v1/models")
  if [ "$status" = 404 ]; then
    log "skipped: no admin API in this build"
  else
    [ "$status" = 401 ] || die "GET /admin/v1/models without the token answered $status (want 401)"
    expect_200 "GET /admin/v1/models with the token" -H "Authorization: Bearer $token" "http://$admin/admin/v1/models"
  fi

  # The first held-out digit of models/digits/samples.json must get its label.
  python3 - models/digits/samples.json >"$tmp/request.json" 3>"$tmp/expected" <<'PY'
import json, os, sys
doc = json.load(open(sys.argv[1]))
sample = doc["samples"][0]
row = sample["inputs"]["input"][0]
json.dump({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}, sys.stdout)
with os.fdopen(3, "w") as f:
    f.write(f'{doc["label_output"]} {sample["label"]}\n')
PY
  expect_200 "POST /v2/models/digits/infer" -H 'content-type: application/json' \
    --data-binary "@$tmp/request.json" "http://$data/v2/models/digits/infer"
  python3 - "$tmp/body" "$tmp/expected" <<'PY' || die "the digits answer has the wrong label"
import json, sys
answer = json.load(open(sys.argv[1]))
name, expected = open(sys.argv[2]).read().split()
got = [o["data"] for o in answer["outputs"] if o["name"] == name]
print(f"image: digits version {answer['model_version']}: {name} = {got[0]}, expected [{expected}]", file=sys.stderr)
sys.exit(0 if got and [int(x) for x in got[0]] == [int(expected)] else 1)
PY

  podman_run healthcheck run "$NAME" >/dev/null || die "the image's HEALTHCHECK failed"
  log "ok: HEALTHCHECK"
  [ "$(podman_run exec "$NAME" id -u)" = 10001 ] || die "the server does not run as uid 10001"
  log "ok: runs as uid 10001"

  # SIGTERM: readiness 503 during the drain, then exit 0.
  podman_run kill --signal TERM "$NAME" >/dev/null
  sleep 1
  status=$(http_status "http://$data/ready")
  [ "$status" = 503 ] || die "/ready answered $status during the drain (want 503)"
  log "ok: /ready -> 503 while draining"
  podman_run wait "$NAME" >/dev/null
  status=$(podman_run inspect -f '{{.State.ExitCode}}' "$NAME")
  [ "$status" = 0 ] || { podman_run logs "$NAME" >&2; die "exit code $status after SIGTERM (want 0)"; }
  log "ok: exit 0 after SIGTERM"
}

clean() {
  local image
  for image in "$IMAGE" "$BASE_IMAGE" $(podman images --format '{{.Repository}}:{{.Tag}}' | grep '^localhost/switchyard-rust:' || true); do
    podman image exists "$image" && podman rmi -f "$image" >/dev/null && log "removed $image"
  done
  rm -rf "${CACHE:?}"
  log "removed $CACHE"
  # The untagged layers that `buildah bud --layers` kept for these builds.
  podman image prune -f >/dev/null
}

case ${1:-build} in
  clean) clean; exit 0 ;;
  build) ;;
  *) echo "usage: scripts/image.sh [clean]" >&2; exit 2 ;;
esac

start=$SECONDS
timed "tools" ensure_tools
timed "base image" base_image
timed "rust image" rust_image
timed "image build" build_image
timed "image check" check_image
log "$IMAGE built and checked in $((SECONDS - start)) s"
