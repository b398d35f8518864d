//! In-process benchmarks: where the time of one inference goes without TCP.
//!
//! Groups (criterion ids; `cargo bench` writes medians to
//! `target/criterion/<group>/<id>/new/estimates.json`, and
//! `benches/criterion_medians.py` prints them as a table):
//!
//! - `json_decode`: `tensor::json::decode` of the `data` array of a 1-row and
//!   a 32-row request (held-out digits rows, nested as clients send them).
//! - `json_encode`: serde_json of digits v2's outputs (label, probabilities)
//!   for 1 and 32 rows with `tensor::json::FlatJson`, as the V2 handler does.
//! - `path`: decode → `VersionRuntime::infer` (digits v2 loaded through
//!   `repository::Repository`, its batching worker thread included) →
//!   serde_json encode of the outputs with `tensor::json::FlatJson`.
//! - `router`: the whole V2 infer request through `switchyard::api::app`
//!   with `tower::ServiceExt::oneshot` (routing, body, JSON both ways,
//!   runtime), no TCP.
//! - `ort`: bare ONNX Runtime, `OnnxBackend::open` + `Backend::run` on the
//!   calling thread, for digits v1, v2 and mlp_wide at batch 1 and 32
//!   (throughput is in rows, so criterion also prints rows/s).
//!
//! The ONNX Runtime library is the one `scripts/setup-onnxruntime.sh`
//! fetches (or `$ORT_DYLIB_PATH`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde::Serialize;
use tower::ServiceExt;

use switchyard::repository::Repository;
use switchyard::runtime::onnx::{self, OnnxBackend};
use switchyard::runtime::{Backend, VersionRuntime};
use switchyard::serving::AppState;
use switchyard::tensor::json::{decode, FlatJson};
use switchyard::tensor::{DataType, Tensor, TensorData};
use switchyard::Config;

const DIGITS_VERSION: u64 = 2;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn init_ort() {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".onnxruntime/libonnxruntime.so.1.31.1"));
    let lib = if lib.is_relative() { root().join(lib) } else { lib };
    onnx::init(&lib).unwrap_or_else(|e| panic!("{e}"));
}

/// The first `n` held-out digits rows, each 64 pixel values.
fn held_out_rows(n: usize) -> Vec<Vec<f32>> {
    let text = std::fs::read_to_string(root().join("models/digits/samples.json")).expect("samples.json");
    let samples: serde_json::Value = serde_json::from_str(&text).expect("samples.json is JSON");
    samples["samples"]
        .as_array()
        .expect("samples")
        .iter()
        .take(n)
        .map(|s| {
            s["inputs"]["input"][0]
                .as_array()
                .expect("a [1, 64] row")
                .iter()
                .map(|v| v.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

/// The `data` value of a request for `rows` (nested `[[..], ..]`).
fn data_json(rows: &[Vec<f32>]) -> String {
    serde_json::to_string(rows).expect("rows encode")
}

/// A whole V2 inference request body for `rows`.
fn request_body(rows: &[Vec<f32>]) -> String {
    format!(
        r#"{{"inputs":[{{"name":"input","shape":[{},64],"datatype":"FP32","data":{}}}]}}"#,
        rows.len(),
        data_json(rows)
    )
}

fn input_tensor(rows: &[Vec<f32>]) -> Tensor {
    Tensor {
        name: "input".into(),
        shape: vec![rows.len() as i64, 64],
        data: TensorData::Fp32(rows.concat()),
    }
}

#[derive(Serialize)]
struct Output<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    data: FlatJson<'a>,
}

/// Encodes outputs the way the V2 handler does (flat data per output).
fn encode(outputs: &[Tensor]) -> Vec<u8> {
    let outs: Vec<Output<'_>> = outputs
        .iter()
        .map(|t| Output {
            name: &t.name,
            datatype: t.dtype().name(),
            shape: &t.shape,
            data: FlatJson(&t.data),
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "model_name": "digits",
        "model_version": DIGITS_VERSION.to_string(),
        "outputs": outs,
    }))
    .expect("outputs encode")
}

fn json_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("json_decode");
    for n in [1usize, 32] {
        let raw = data_json(&held_out_rows(n));
        let shape = [n as i64, 64];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("digits_rows", n), &raw, |b, raw| {
            b.iter(|| decode(black_box(raw), DataType::Fp32, &shape).expect("decodes"))
        });
    }
    group.finish();
}

fn json_encode(c: &mut Criterion) {
    init_ort();
    let (mut backend, _) =
        OnnxBackend::open(&root().join("models/digits/2/model.onnx"), 1).unwrap_or_else(|e| panic!("{e}"));
    let mut group = c.benchmark_group("json_encode");
    for n in [1usize, 32] {
        let outputs = backend.run(vec![input_tensor(&held_out_rows(n))]).expect("runs");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("digits_outputs", n), &outputs, |b, outputs| {
            b.iter(|| encode(black_box(outputs)))
        });
    }
    group.finish();
}

/// Loads `models/digits` (both versions, as configured) and returns v2's runtime.
fn digits_runtime(repo: &Repository) -> Arc<VersionRuntime> {
    repo.load_model("digits");
    let snapshot = repo.snapshot();
    snapshot.models["digits"].versions[&DIGITS_VERSION]
        .runtime
        .clone()
        .expect("digits v2 is READY")
}

fn path(c: &mut Criterion) {
    init_ort();
    let repo = Repository::new(root().join("models"));
    let runtime = digits_runtime(&repo);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("path");
    for n in [1usize, 32] {
        let raw = data_json(&held_out_rows(n));
        let shape = [n as i64, 64];
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("decode_infer_encode", n), &raw, |b, raw| {
            b.iter(|| {
                let data = decode(black_box(raw), DataType::Fp32, &shape).expect("decodes");
                let inputs = vec![Tensor {
                    name: "input".into(),
                    shape: shape.to_vec(),
                    data,
                }];
                let outputs = rt.block_on(runtime.infer(inputs, None, false)).expect("infers");
                encode(&outputs)
            })
        });
        let input = input_tensor(&held_out_rows(n));
        group.bench_with_input(BenchmarkId::new("infer_only", n), &input, |b, input| {
            b.iter(|| {
                rt.block_on(runtime.infer(vec![input.clone()], None, false))
                    .expect("infers")
            })
        });
        // the same with nothing else being served: a fast version runs here
        group.bench_with_input(BenchmarkId::new("infer_inline", n), &input, |b, input| {
            b.iter(|| {
                rt.block_on(runtime.infer(vec![input.clone()], None, true))
                    .expect("infers")
            })
        });
        group.bench_with_input(BenchmarkId::new("infer_blocking", n), &input, |b, input| {
            b.iter(|| runtime.infer_blocking(vec![input.clone()]).expect("infers"))
        });
    }
    group.finish();
}

fn router(c: &mut Criterion) {
    init_ort();
    let mut config = Config::for_repository(root().join("models"));
    // the rollout store goes to a scratch directory, not into models/
    config.state_dir = std::env::temp_dir().join(format!("switchyard-bench-{}", std::process::id()));
    let repo = Arc::new(Repository::new(config.model_repository.clone()));
    repo.load_model("digits");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // the state starts the shadow worker task, so it needs the runtime
    let _enter = rt.enter();
    let state = Arc::new(AppState::new(repo, config.settings()).expect("state opens"));
    state.mark_restored();
    let app = switchyard::api::app(state);
    let uri = format!("/v2/models/digits/versions/{DIGITS_VERSION}/infer");
    let mut group = c.benchmark_group("router");
    for n in [1usize, 32] {
        let body = bytes::Bytes::from(request_body(&held_out_rows(n)));
        // One request first, so a broken path fails loudly instead of timing errors.
        let check = rt
            .block_on(app.clone().oneshot(request(&uri, body.clone())))
            .expect("router");
        assert_eq!(check.status(), StatusCode::OK, "{uri} with {n} rows");
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("v2_infer", n), &body, |b, body| {
            b.iter(|| {
                rt.block_on(async {
                    let resp = app
                        .clone()
                        .oneshot(request(&uri, body.clone()))
                        .await
                        .expect("router");
                    assert_eq!(resp.status(), StatusCode::OK);
                    axum::body::to_bytes(resp.into_body(), usize::MAX)
                        .await
                        .expect("body")
                })
            })
        });
    }
    group.finish();
}

fn request(uri: &str, body: bytes::Bytes) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body))
        .expect("request")
}

fn bare_ort(c: &mut Criterion) {
    init_ort();
    let mut group = c.benchmark_group("ort");
    let models: [(&str, &Path); 3] = [
        ("digits_v1", Path::new("models/digits/1/model.onnx")),
        ("digits_v2", Path::new("models/digits/2/model.onnx")),
        ("mlp_wide", Path::new("models/mlp_wide/1/model.onnx")),
    ];
    for (name, file) in models {
        let (mut backend, _) =
            OnnxBackend::open(&root().join(file), 1).unwrap_or_else(|e| panic!("{name}: {e}"));
        for n in [1usize, 32] {
            let input = input_tensor(&held_out_rows(n));
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::new(name, n), &input, |b, input| {
                b.iter(|| backend.run(vec![input.clone()]).expect("runs"))
            });
        }
    }
    group.finish();
}

criterion_group!(benches, json_decode, json_encode, path, router, bare_ort);
criterion_main!(benches);
