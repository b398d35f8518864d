# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
LISTEN ?= 127.0.0.1:8080
ADMIN_LISTEN ?= 127.0.0.1:8081
GRPC_LISTEN ?= 127.0.0.1:8001

.PHONY: run test setup setup-test build lint models bench bench-load image

## Fetch what is missing (the pinned ONNX Runtime library).
setup:
	@scripts/setup-onnxruntime.sh

## Build in release mode and serve models/ on $(LISTEN).
run: setup
	cargo build --release
	@echo
	@echo "switchyard: serving models/ on http://$(LISTEN)  (admin on http://$(ADMIN_LISTEN), gRPC on $(GRPC_LISTEN))"
	@echo "try:  curl -s http://$(LISTEN)/v2/models/digits/infer -H 'content-type: application/json' \\"
	@echo "        -d '{\"inputs\":[{\"name\":\"input\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[0,0,7,16,14,3,0,0,0,0,9,14,11,15,0,0,0,0,1,5,0,15,5,0,0,0,0,0,0,16,5,0,0,0,0,0,3,16,4,0,0,0,0,1,12,14,1,0,0,0,5,12,16,16,14,1,0,0,8,16,14,10,13,3]}]}'"
	@echo
	./target/release/switchyard serve --model-repository models --listen $(LISTEN) --admin-listen $(ADMIN_LISTEN) --grpc-listen $(GRPC_LISTEN)

## Everything the test suite needs besides Rust (idempotent).
setup-test: setup
	@scripts/setup-test-deps.sh

## Format check, lints, the whole test suite.
test: setup-test
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	cargo test

## Rebuild the bundled models and test fixtures (pinned Python packages in .venv/models).
models:
	python3 -m venv .venv/models
	.venv/models/bin/pip install --quiet -r models/requirements.txt
	.venv/models/bin/python models/build.py

## criterion micro-benchmarks.
bench: setup
	cargo bench

## End-to-end load: oha at concurrency 1, 8, 64 on digits and mlp_wide.
bench-load: setup
	benches/load.sh
