# switchyard container image.
#
# With Docker (BuildKit):   docker build -t switchyard:0.1.0 .
# Without registry access:  scripts/image.sh (makes both base images itself and
#                           passes them in as RUST_IMAGE and RUNTIME_IMAGE).
#
# Stages: `build` compiles the binary from source, `onnxruntime` fetches the
# pinned ONNX Runtime library from its PyPI wheel (sha256-checked by the same
# script `make` uses), the last stage is the non-root runtime.
#
# Admin listener: the image listens for admin on 0.0.0.0:8081 so that
# Prometheus and `kubectl port-forward` reach /metrics and the admin API.
# A non-loopback admin listener requires SWITCHYARD_ADMIN_TOKEN; the
# Kubernetes manifests (deploy/k8s) supply it from a Secret. With a plain
# `docker run`, pass `-e SWITCHYARD_ADMIN_TOKEN=...` (see docs/kubernetes.md).

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- build: the release binary, from source --------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY benches benches
# build.rs compiles proto/ (the gRPC interface) in pure Rust: no protoc
COPY proto proto
COPY src src
# The cache mounts keep downloaded crates and incremental build output between
# builds; the binary is copied out of the mount inside the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin switchyard \
    && install -D -m 0755 target/release/switchyard /out/switchyard

# --- onnxruntime: the pinned library from the PyPI wheel -------------------
FROM ${RUNTIME_IMAGE} AS onnxruntime
# Versions of Debian packages are not pinned: bookworm's point releases and
# security updates replace them, and a pinned version stops being installable.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY scripts/setup-onnxruntime.sh /usr/local/bin/setup-onnxruntime.sh
RUN ONNXRUNTIME_DIR=/opt/onnxruntime setup-onnxruntime.sh

# --- runtime ---------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
# curl is what HEALTHCHECK probes with (Kubernetes ignores HEALTHCHECK and
# uses the probes in deploy/k8s instead).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 switchyard \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/switchyard --shell /usr/sbin/nologin switchyard \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/switchyard

COPY --from=onnxruntime /opt/onnxruntime /opt/onnxruntime
COPY --from=build /out/switchyard /usr/local/bin/switchyard
# The bundled model repository; mount a volume at /models to serve your own.
COPY models /models

# SWITCHYARD_STATE_DIR: durable state (rollouts, audit log) for --state-dir;
# mount a volume there to keep it across restarts.
ENV ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so.1.31.1 \
    SWITCHYARD_STATE_DIR=/var/lib/switchyard

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# 8080 HTTP data, 8081 admin and metrics, 8001 gRPC
EXPOSE 8080 8081 8001
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["switchyard"]
CMD ["serve", "--model-repository", "/models", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:8081", "--grpc-listen", "0.0.0.0:8001"]
