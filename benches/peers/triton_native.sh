#!/usr/bin/env bash
# The triton-native peer of benches/peers/run.sh: NVIDIA Triton Inference
# Server 2.51 with its NATIVE ONNX Runtime backend (C++, r24.10 = Triton 2.51),
# CPU only, on the same .onnx files and ORT threads as switchyard.
#
#   * tritonserver + libtritonserver: the ones nvidia-pytriton 0.7.0 bundles
#     (Triton 2.51.0, python backend only), from the peers' venv .venv/peers
#     (benches/peers/requirements.txt);
#   * the onnxruntime backend: compiled here (cmake + g++, one to a few minutes on
#     2 cores) from its r24.10 sources, against
#       - the C API headers of Debian trixie's libonnxruntime-dev (ORT 1.21,
#         ORT_API_VERSION 21): the .deb is fetched with `apt-get download`
#         through a private apt state under $TRITON_NATIVE_DIR/apt-trixie,
#         from the mirror this machine's apt already uses, and only unpacked
#         (nothing is installed from trixie, the system's apt state is not
#         touched);
#       - the pinned ONNX Runtime 1.31.1 library of scripts/setup-onnxruntime.sh
#         (.onnxruntime/), the one switchyard loads (C API 21 <= 1.31: it runs).
#
# ONE-TIME MANUAL STEP, before `build` (no script here downloads from GitHub):
# the public repositories triton-inference-server/onnxruntime_backend, common,
# core and backend, each at branch r24.10, unpacked into
# $TRITON_NATIVE_DIR/src/<name> (src/onnxruntime_backend, src/common,
# src/core, src/backend). Where GitHub is reachable:
#   for r in onnxruntime_backend common core backend; do
#     git clone --depth 1 -b r24.10 https://github.com/triton-inference-server/$r.git \
#       .venv/triton-native/src/$r; done
# From a local snapshot of each repository (a clone or a bare git directory):
#   for r in onnxruntime_backend common core backend; do
#     mkdir -p .venv/triton-native/src/$r
#     git --git-dir=<snapshot of $r> archive r24.10 | tar -x -C .venv/triton-native/src/$r; done
# or let `build` run that git archive itself: TRITON_GITDIRS=<dir> where each
# snapshot is the bare git directory <dir>/triton-inference-server+<name>/repo
# (a folder of owner+name snapshots):
#   TRITON_GITDIRS=<dir> benches/peers/triton_native.sh build
# `build` records the commit of each extracted tree in src/SOURCES.
#
# Usage (from anywhere; paths are relative to the repository):
#   benches/peers/triton_native.sh build            apt deps, ORT lib + headers, compile and install the
#                                                   backend into $TRITON_NATIVE_DIR/backends/onnxruntime
#   benches/peers/triton_native.sh repo [DIR]       Triton model repository from models/ (digits/2, mlp_wide/1,
#                                                   triton_native_repo.py), default $TRITON_NATIVE_DIR/repo
#   benches/peers/triton_native.sh serve REPO PORT  tritonserver in the foreground (exec; run.sh's way)
#   benches/peers/triton_native.sh start|stop|status  the same in the background on 127.0.0.1:$TRITON_PORT
#                                                   (28500), repository $TRITON_NATIVE_DIR/repo (made if
#                                                   missing), PID in triton.pid, log in logs/triton.log;
#                                                   stop ends that PID only
#   benches/peers/triton_native.sh describe         one line: versions and commits (for BENCHMARKS.md)
#   benches/peers/triton_native.sh clean            removes the build and the installed backend (not src/)
# Env: TRITON_NATIVE_DIR (.venv/triton-native), TRITON_PORT (28500), TRITON_GITDIRS (above).
#
# Layout of $TRITON_NATIVE_DIR:
#   src/{onnxruntime_backend,common,core,backend}/  the r24.10 sources (manual step), src/SOURCES
#   apt-trixie/                                     private apt state and the libonnxruntime-dev .deb
#   ortinc/                                         ORT C API headers (from that .deb)
#   build/                                          cmake build tree of the backend
#   backends/onnxruntime/                           libtriton_onnxruntime.so, libonnxruntime.so.1 (a copy of
#                                                   .onnxruntime's 1.31.1), libtritonserver.so (a symlink to
#                                                   pytriton's renamed copy: the backend NEEDs this name)
#   repo/  logs/  triton.pid  triton.port           start/stop's repository, logs, PID and port
set -euo pipefail
source "$(dirname "$0")/../lib.sh"
cd "$BENCH_ROOT"

TAG=r24.10
D=${TRITON_NATIVE_DIR:-$BENCH_ROOT/.venv/triton-native}
PORT=${TRITON_PORT:-28500}
BK=$D/backends/onnxruntime
ORT_LIB=$BENCH_ROOT/.onnxruntime/libonnxruntime.so.1.31.1
SOURCES="onnxruntime_backend common core backend"
mkdir -p "$D/logs"

site_packages() { "$PEERS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'; }
tritonserver_bin() { echo "$(site_packages)/pytriton/tritonserver/bin/tritonserver"; }
libtritonserver() { ls "$(site_packages)"/nvidia_pytriton.libs/libtritonserver-*.so 2>/dev/null | head -n1; }

step_sources() {
  local r missing=
  for r in $SOURCES; do
    [ -f "$D/src/$r/CMakeLists.txt" ] && continue
    if [ -z "${TRITON_GITDIRS:-}" ]; then missing="$missing $r"; continue; fi
    local gd=$TRITON_GITDIRS/triton-inference-server+$r/repo
    [ -d "$gd" ] || die "no git directory $gd (TRITON_GITDIRS)"
    git --git-dir="$gd" rev-parse --verify -q "$TAG^{commit}" >/dev/null || die "$gd has no branch $TAG"
    rm -rf "$D/src/$r"
    mkdir -p "$D/src/$r"
    git --git-dir="$gd" archive "$TAG" | tar -x -C "$D/src/$r"
    echo "$r $TAG $(git --git-dir="$gd" rev-parse "$TAG^{commit}")" >>"$D/src/SOURCES"
    log "triton-native: extracted $r@$TAG into $D/src/$r"
  done
  [ -z "$missing" ] || die "triton-native: no Triton sources for:$missing. One-time manual step: unpack \
triton-inference-server/{onnxruntime_backend,common,core,backend} at branch $TAG into $D/src/<name> \
(see the header of benches/peers/triton_native.sh, or BENCHMARKS.md section 1)"
}

step_apt() {
  local need=()
  command -v cmake >/dev/null || need+=(cmake)
  command -v g++ >/dev/null || need+=(g++)
  command -v make >/dev/null || need+=(make)
  command -v curl >/dev/null || need+=(curl)
  [ -f /usr/include/rapidjson/document.h ] || need+=(rapidjson-dev)
  [ -d /usr/src/googletest ] || need+=(googletest)
  [ ${#need[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || die "triton-native: install ${need[*]} (Debian package names)"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  log "triton-native: installing the Debian packages ${need[*]} (apt-get install)"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

step_venv() {
  ensure_peers_venv
  [ -x "$(tritonserver_bin)" ] || die "triton-native: no tritonserver in nvidia-pytriton ($PEERS_VENV)"
  [ -n "$(libtritonserver)" ] || die "triton-native: no libtritonserver in nvidia-pytriton ($PEERS_VENV)"
}

step_ort_lib() {
  scripts/setup-onnxruntime.sh
  [ -f "$ORT_LIB" ] || die "triton-native: no $ORT_LIB"
}

# ORT C API headers -> $D/ortinc, from Debian trixie's libonnxruntime-dev.
step_ort_headers() {
  [ -f "$D/ortinc/onnxruntime_c_api.h" ] && return 0
  local A=$D/apt-trixie uri=
  # The mirror this machine's apt already uses (deb822 or one-line sources), not the security one.
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" && $0 !~ /security/ { for (i = 2; i <= NF; i++) if ($i ~ /^https?:\/\//) { print $i; exit } }' \
      /etc/apt/sources.list)
  fi
  [ -n "$uri" ] || die "triton-native: cannot find this machine's Debian mirror in its apt sources"
  rm -rf "$A"
  mkdir -p "$A/lists/partial" "$A/cache/archives/partial" "$A/debs"
  : >"$A/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $uri trixie main" >"$A/sources.list"
  local o=(-o "Dir::Etc::SourceList=$A/sources.list" -o Dir::Etc::SourceParts=/nonexistent
    -o "Dir::State::Lists=$A/lists" -o "Dir::Cache=$A/cache" -o "Dir::State::status=$A/status"
    -o APT::Architecture=amd64 -o APT::Sandbox::User=root)
  log "triton-native: fetching Debian trixie's libonnxruntime-dev (headers only; apt-get download, private state)"
  apt-get "${o[@]}" update -qq
  (cd "$A/debs" && apt-get "${o[@]}" download libonnxruntime-dev)
  local deb
  deb=$(ls "$A"/debs/libonnxruntime-dev_*.deb 2>/dev/null | head -n1)
  [ -n "$deb" ] || die "triton-native: apt-get download libonnxruntime-dev gave no .deb"
  dpkg-deb -x "$deb" "$A/x"
  [ -f "$A/x/usr/include/onnxruntime/onnxruntime_c_api.h" ] || die "triton-native: no onnxruntime_c_api.h in $deb"
  mkdir -p "$D/ortinc"
  cp -r "$A"/x/usr/include/onnxruntime/. "$D/ortinc/"
  rm -rf "$A/x" "$A/lists" "$A/cache"
  log "triton-native: ORT headers from $(basename "$deb"): $(grep -m1 'define ORT_API_VERSION' "$D/ortinc/onnxruntime_c_api.h")"
}

# The backend's runtime directory: the backend, ORT 1.31.1 under the name it
# NEEDs, and libtritonserver.so (pytriton ships it auditwheel-renamed).
install_backend() {
  mkdir -p "$BK"
  cp "$D/build/libtriton_onnxruntime.so" "$BK/"
  cmp -s "$ORT_LIB" "$BK/libonnxruntime.so.1" || cp "$ORT_LIB" "$BK/libonnxruntime.so.1"
  ln -sfn "$(libtritonserver)" "$BK/libtritonserver.so"
}

step_backend() {
  local B=$D/build
  if [ ! -f "$B/libtriton_onnxruntime.so" ]; then
    mkdir -p "$B"
    log "triton-native: configuring the onnxruntime backend (log: $D/logs/cmake.log)"
    # Every FetchContent dependency points at a local tree and FetchContent is
    # disconnected: the build downloads nothing.
    (cd "$B" && cmake "$D/src/onnxruntime_backend" -DCMAKE_BUILD_TYPE=Release \
      -DTRITON_ENABLE_GPU=OFF -DTRITON_ENABLE_ONNXRUNTIME_TENSORRT=OFF -DTRITON_ENABLE_ONNXRUNTIME_OPENVINO=OFF \
      -DTRITON_ONNXRUNTIME_INCLUDE_PATHS="$D/ortinc" -DTRITON_ONNXRUNTIME_LIB_PATHS="$BENCH_ROOT/.onnxruntime" \
      -DTRITON_COMMON_REPO_TAG=$TAG -DTRITON_CORE_REPO_TAG=$TAG -DTRITON_BACKEND_REPO_TAG=$TAG \
      -DFETCHCONTENT_SOURCE_DIR_REPO-COMMON="$D/src/common" \
      -DFETCHCONTENT_SOURCE_DIR_REPO-CORE="$D/src/core" \
      -DFETCHCONTENT_SOURCE_DIR_REPO-BACKEND="$D/src/backend" \
      -DFETCHCONTENT_SOURCE_DIR_GOOGLETEST=/usr/src/googletest -DFETCHCONTENT_FULLY_DISCONNECTED=ON \
      >"$D/logs/cmake.log" 2>&1) || { tail -n 30 "$D/logs/cmake.log" >&2; die "triton-native: cmake failed"; }
    log "triton-native: compiling the onnxruntime backend (log: $D/logs/make.log)"
    make -C "$B" -j"$(nproc)" triton-onnxruntime-backend >"$D/logs/make.log" 2>&1 \
      || { tail -n 30 "$D/logs/make.log" >&2; die "triton-native: make failed"; }
  fi
  install_backend
  log "triton-native: backend installed in $BK"
}

built() { [ -f "$BK/libtriton_onnxruntime.so" ] && [ -f "$BK/libonnxruntime.so.1" ]; }

step_repo() {
  local out=${1:-$D/repo}
  ensure_peers_venv
  "$PEERS_VENV/bin/python" benches/peers/triton_native_repo.py "$BENCH_ROOT/models" "$out" digits:2 mlp_wide:1
}

# serve REPO PORT: exec tritonserver (HTTP only, on 127.0.0.1:PORT).
step_serve() {
  local repo=$1 port=$2
  built || die "triton-native: backend not built: benches/peers/triton_native.sh build"
  [ -d "$repo" ] || die "triton-native: no model repository $repo"
  ln -sfn "$(libtritonserver)" "$BK/libtritonserver.so"
  LD_LIBRARY_PATH="$(site_packages)/nvidia_pytriton.libs:$BK" exec "$(tritonserver_bin)" \
    --model-repository="$repo" --backend-directory="$D/backends" \
    --http-address=127.0.0.1 --http-port="$port" --allow-grpc=false --allow-metrics=false \
    --disable-auto-complete-config --log-verbose=0
}

# One line for BENCHMARKS.md: what exactly the triton-native peer is.
step_describe() {
  local backend='?' api='?' pytriton
  [ -f "$D/src/SOURCES" ] && backend=$(awk '$1 == "onnxruntime_backend" { print substr($3, 1, 12) }' "$D/src/SOURCES")
  [ -f "$D/ortinc/onnxruntime_c_api.h" ] && api=$(awk '/define ORT_API_VERSION/ { print $3; exit }' "$D/ortinc/onnxruntime_c_api.h")
  pytriton=$("$PEERS_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("nvidia-pytriton"))' 2>/dev/null || echo '?')
  local triton="tritonserver of nvidia-pytriton $pytriton"
  [ "$pytriton" = 0.7.0 ] && triton="Triton 2.51.0 (the tritonserver of nvidia-pytriton 0.7.0)"
  echo "$triton + onnxruntime_backend $TAG (${backend:-?}) built against" \
    "ORT C API $api headers, running ONNX Runtime 1.31.1 (.onnxruntime)"
}

running() { [ -f "$D/triton.pid" ] && kill -0 "$(cat "$D/triton.pid")" 2>/dev/null; }

step_start() {
  if running; then log "triton-native: already running (pid $(cat "$D/triton.pid"))"; return 0; fi
  built || die "triton-native: backend not built: benches/peers/triton_native.sh build"
  [ -d "$D/repo" ] || step_repo "$D/repo"
  "$0" serve "$D/repo" "$PORT" >"$D/logs/triton.log" 2>&1 &
  echo $! >"$D/triton.pid"
  echo "$PORT" >"$D/triton.port"
  if ! wait_http "http://127.0.0.1:$PORT/v2/health/ready" "$!" 120; then
    tail -n 30 "$D/logs/triton.log" >&2
    step_stop
    die "triton-native: not ready (log: $D/logs/triton.log)"
  fi
  log "triton-native: ready on 127.0.0.1:$PORT (pid $(cat "$D/triton.pid"), repository $D/repo)"
}

step_stop() {
  [ -f "$D/triton.pid" ] || return 0
  stop_pid "$(cat "$D/triton.pid")"
  rm -f "$D/triton.pid" "$D/triton.port"
  log "triton-native: stopped"
}

case ${1:-} in
  build) step_sources; step_apt; step_venv; step_ort_lib; step_ort_headers; step_backend ;;
  repo) step_repo "${2:-}" ;;
  serve) [ $# -eq 3 ] || die "usage: $0 serve REPO PORT"; step_serve "$2" "$3" ;;
  start) step_start ;;
  stop) step_stop ;;
  status) if running; then echo "running $(cat "$D/triton.pid") on 127.0.0.1:$(cat "$D/triton.port")"; else echo stopped; fi ;;
  describe) step_describe ;;
  clean) rm -rf "$D/build" "$D/backends"; log "triton-native: removed $D/build and $D/backends" ;;
  *) die "usage: $0 build | repo [DIR] | serve REPO PORT | start | stop | status | describe | clean" ;;
esac
