//! A model repository written the way Triton's documentation writes one
//! (`config.pbtxt`, no `config.toml`) serves unchanged; what cannot be
//! honoured is refused with a reason, what is not acted on is named.

mod common;

use std::time::{Duration, Instant};

use common::{copy_dir, digits_request, digits_samples, root, TestRepo, TestServer};
use reqwest::Method;
use serde_json::Value;

/// digits as a Triton user configures it: batched, two CPU instances, the
/// dynamic batcher, both versions, a warm-up Triton runs and we do not.
const DIGITS_PBTXT: &str = r#"
name: "digits"
platform: "onnxruntime_onnx"
max_batch_size: 8
input [
  {
    name: "input"
    data_type: TYPE_FP32
    dims: [ 64 ]
  }
]
output [
  {
    name: "label"
    data_type: TYPE_INT64
    dims: [ 1 ]
    reshape: { shape: [ ] }
  },
  {
    name: "probabilities"
    data_type: TYPE_FP32
    dims: [ 10 ]
  }
]
instance_group [
  {
    count: 2
    kind: KIND_CPU
  }
]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 100
}
version_policy: { all: { } }
model_warmup [
  {
    name: "zeros"
    batch_size: 1
    inputs { key: "input" value: { data_type: TYPE_FP32 dims: [ 64 ] zero_data: true } }
  }
]
"#;

/// A repository holding digits (models/digits with its config.toml
/// replaced by `pbtxt`, and no `stable` label) under `name`.
fn triton_repo(repo: &TestRepo, name: &str, pbtxt: &str) {
    let dir = repo.path().join(name);
    copy_dir(&root().join("models/digits"), &dir);
    std::fs::remove_file(dir.join("config.toml")).unwrap();
    std::fs::write(
        dir.join("config.pbtxt"),
        pbtxt.replace("\"digits\"", &format!("\"{name}\"")),
    )
    .unwrap();
}

async fn model(s: &TestServer, name: &str) -> Value {
    let (st, m) = s
        .admin(Method::GET, &format!("/admin/v1/models/{name}"), None)
        .await;
    assert_eq!(st, 200, "{m}");
    m
}

fn threads(prefix: &str) -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|n| n.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triton_config_pbtxt_is_read_and_served() {
    let repo = TestRepo::empty();
    // a name of its own: its worker threads are counted below
    triton_repo(&repo, "tdigits", DIGITS_PBTXT);
    let s = TestServer::start(repo.path()).await;
    let m = model(&s, "tdigits").await;
    // version_policy all: both versions, READY
    let states: Vec<(u64, &str)> = m["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["version"].as_u64().unwrap(), v["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, vec![(1, "READY"), (2, "READY")], "{m}");
    // what switchyard does not act on is named, never silently dropped
    let warnings: Vec<&str> = m["config_warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert!(warnings.contains(&"model_warmup"), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("reshape")), "{warnings:?}");
    // the execution settings came from the pbtxt
    let snapshot = s.snapshot();
    let exec = &snapshot.models["tdigits"].config.execution;
    assert_eq!(
        (exec.instances, exec.max_batch_size, exec.max_queue_delay_us),
        (2, 8, 100)
    );
    assert_eq!(threads("ort-tdigits-2-"), 2, "two instances of version 2");
    // and it serves: a batch of 3 rows, V2 JSON
    let rows: Vec<Vec<f64>> = digits_samples().iter().take(3).map(|(r, _)| r.clone()).collect();
    let (st, body) = s
        .post("/v2/models/tdigits/versions/2/infer", &digits_request(&rows))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], serde_json::json!([3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_toml_wins_and_what_cannot_be_honoured_is_refused() {
    let repo = TestRepo::empty();
    // config.toml beside the pbtxt wins key by key
    triton_repo(&repo, "digits", DIGITS_PBTXT);
    std::fs::write(
        repo.path().join("digits/config.toml"),
        "[execution]\ninstances = 1\n[versions]\npolicy = \"latest\"\nlatest = 1\n",
    )
    .unwrap();
    // a GPU instance group: refused with the reason
    triton_repo(&repo, "on_gpu", &DIGITS_PBTXT.replace("KIND_CPU", "KIND_GPU"));
    // a declared input the model does not have: each version refused
    triton_repo(
        &repo,
        "mismatch",
        &DIGITS_PBTXT.replace("dims: [ 64 ]", "dims: [ 65 ]"),
    );
    let s = TestServer::start(repo.path()).await;

    let snapshot = s.snapshot();
    let digits = &snapshot.models["digits"];
    assert_eq!(digits.config.execution.instances, 1, "config.toml wins");
    assert_eq!(
        digits.config.execution.max_batch_size, 8,
        "the pbtxt fills the rest"
    );
    assert_eq!(digits.versions.keys().copied().collect::<Vec<_>>(), vec![2]);

    let gpu = model(&s, "on_gpu").await;
    assert!(gpu["error"].as_str().unwrap().contains("KIND_GPU"), "{gpu}");
    let (st, body) = s
        .post(
            "/v2/models/on_gpu/infer",
            &digits_request(&[digits_samples()[0].0.clone()]),
        )
        .await;
    assert_eq!(st, 503, "{body}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let mismatch = loop {
        let m = model(&s, "mismatch").await;
        if m["versions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|v| v["state"] != "LOADING")
        {
            break m;
        }
        assert!(Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for v in mismatch["versions"].as_array().unwrap() {
        assert_eq!(v["state"], "UNAVAILABLE", "{mismatch}");
        assert!(v["reason"].as_str().unwrap().contains("dims [65]"), "{mismatch}");
    }
    // the others keep serving
    let (st, body) = s
        .post(
            "/v2/models/digits/infer",
            &digits_request(&[digits_samples()[0].0.clone()]),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}
