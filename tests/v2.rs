//! The Open Inference Protocol (V2) end to end: real models, real ONNX
//! Runtime, a real listener on 127.0.0.1:0.

mod common;

use std::sync::Arc;

use common::{digits_request, digits_samples, readme_accuracy, TestRepo, TestServer};
use serde_json::{json, Value};

fn argmax(v: &[Value]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if x.as_f64().unwrap() > v[best].as_f64().unwrap() {
            best = i;
        }
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_held_out_digit_is_predicted_with_the_documented_accuracy() {
    let repo = TestRepo::bundled(&["digits"]);
    let server = Arc::new(TestServer::start(repo.path()).await);
    let samples = Arc::new(digits_samples());
    assert!(samples.len() >= 400, "samples.json holds the held-out split");
    for version in [1u64, 2] {
        let mut tasks = Vec::new();
        for chunk in 0..4 {
            let server = server.clone();
            let samples = samples.clone();
            tasks.push(tokio::spawn(async move {
                let mut correct = 0;
                for (row, label) in samples.iter().skip(chunk).step_by(4) {
                    let body = json!({
                        "id": format!("s{chunk}"),
                        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [row]}]
                    });
                    let (status, resp) = server
                        .post(&format!("/v2/models/digits/versions/{version}/infer"), &body)
                        .await;
                    assert_eq!(status, 200, "{resp}");
                    assert_eq!(resp["model_version"], version.to_string());
                    assert_eq!(resp["id"], format!("s{chunk}"));
                    let predicted = resp["outputs"][0]["data"][0].as_i64().unwrap();
                    // label and probabilities agree with each other
                    let probs = resp["outputs"][1]["data"].as_array().unwrap();
                    assert_eq!(argmax(probs) as i64, predicted);
                    if predicted == *label {
                        correct += 1;
                    }
                }
                correct
            }));
        }
        let mut correct = 0;
        for t in tasks {
            correct += t.await.unwrap();
        }
        let (want_correct, want_total) = readme_accuracy("digits", version);
        assert_eq!(want_total, samples.len(), "README total for v{version}");
        assert_eq!(correct, want_correct, "digits v{version} correct predictions");
    }
    let (c1, _) = readme_accuracy("digits", 1);
    let (c2, _) = readme_accuracy("digits", 2);
    assert!(c2 > c1, "v2 scores higher than v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_answer_with_the_right_statuses() {
    let repo = TestRepo::bundled(&["digits", "breast_cancer"]);
    let s = TestServer::start(repo.path()).await;

    let (st, v) = s.get("/v2").await;
    assert_eq!(st, 200);
    assert_eq!(v["name"], "switchyard");
    assert!(v["version"].is_string() && v["extensions"].is_array());
    assert_eq!(s.get("/v2/").await.0, 200);
    assert_eq!(s.get("/v2/health/live").await, (200, json!({"live": true})));
    assert_eq!(s.get("/v2/health/ready").await, (200, json!({"ready": true})));
    assert_eq!(s.get("/health").await.0, 200);
    assert_eq!(s.get("/ready").await.0, 200);

    // metadata, versionless and versioned (number and label)
    let (st, meta) = s.get("/v2/models/digits").await;
    assert_eq!(st, 200, "{meta}");
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["platform"], "onnx_onnxv1");
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(
        meta["inputs"],
        json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
    );
    assert_eq!(
        meta["outputs"],
        json!([
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, 10]}
        ])
    );
    assert_eq!(s.get("/v2/models/digits/versions/2").await.0, 200);
    assert_eq!(s.get("/v2/models/digits/versions/stable").await.0, 200);
    let (st, bc) = s.get("/v2/models/breast_cancer").await;
    assert_eq!(st, 200);
    assert_eq!(bc["inputs"][0]["shape"], json!([-1, 30]));

    // readiness per model
    assert_eq!(
        s.get("/v2/models/digits/ready").await,
        (200, json!({"name": "digits", "ready": true}))
    );
    assert_eq!(s.get("/v2/models/digits/versions/2/ready").await.0, 200);

    // unknown model / version / label → 404 with a JSON error naming it
    for path in [
        "/v2/models/nope",
        "/v2/models/nope/ready",
        "/v2/models/digits/versions/9",
        "/v2/models/digits/versions/9/ready",
        "/v2/models/digits/versions/gold",
    ] {
        let (st, body) = s.get(path).await;
        assert_eq!(st, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (_, body) = s.get("/v2/models/nope").await;
    assert!(body["error"].as_str().unwrap().contains("'nope'"), "{body}");
    let (_, body) = s.get("/v2/models/digits/versions/9").await;
    assert!(body["error"].as_str().unwrap().contains('9'), "{body}");

    // infer: versionless goes to the stable label (v1), versioned to the version
    let samples = digits_samples();
    let req = digits_request(&[samples[0].0.clone()]);
    let resp = s
        .client
        .post(s.url("/v2/models/digits/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-model-version"], "1");
    assert_eq!(resp.headers()["x-route"], "stable");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["model_name"], "digits");
    assert_eq!(body["model_version"], "1");
    assert!(body.get("id").is_none(), "no id when none was sent");
    let resp = s
        .client
        .post(s.url("/v2/models/digits/versions/2/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-model-version"], "2");
    assert_eq!(resp.headers()["x-route"], "explicit");
    let resp = s
        .client
        .post(s.url("/v2/models/digits/versions/stable/infer"))
        .json(&req)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-model-version"], "1");
    assert_eq!(resp.headers()["x-route"], "label");

    // outputs filter
    let mut filtered = req.clone();
    filtered["outputs"] = json!([{"name": "probabilities"}]);
    let (st, body) = s.post("/v2/models/digits/infer", &filtered).await;
    assert_eq!(st, 200);
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(body["outputs"][0]["name"], "probabilities");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 10]));

    // breast cancer: the trees model answers too
    let bc_row: Vec<f64> = vec![
        17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589,
        153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193, 25.38, 17.33, 184.6, 2019.0, 0.1622,
        0.6656, 0.7119, 0.2654, 0.4601, 0.1189,
    ];
    let (st, body) = s
        .post(
            "/v2/models/breast_cancer/infer",
            &json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": bc_row}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    // the first row of sklearn's data set is malignant (class 0)
    assert_eq!(body["outputs"][0]["data"], json!([0]));

    // wrong methods and unknown paths get JSON errors too
    let (st, body) = s.get("/v2/models/digits/infer").await;
    assert_eq!(st, 405, "{body}");
    assert!(body["error"].is_string());
    let (st, body) = s.get("/nothing/here").await;
    assert_eq!(st, 404);
    assert!(body["error"].is_string());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_the_server_keeps_serving() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.body_limit = 64 * 1024).await;
    let row: Vec<f64> = digits_samples()[0].0.clone();
    let good = digits_request(std::slice::from_ref(&row));
    let path = "/v2/models/digits/infer";

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("malformed JSON", "{\"inputs\": [".into(), 400, "invalid inference request"),
        ("empty body", "".into(), 400, "empty"),
        ("missing inputs", json!({"id": "x"}).to_string(), 400, "inputs"),
        (
            "unknown input name",
            json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": row}]}).to_string(),
            400,
            "pixels",
        ),
        (
            "wrong datatype",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP64", "data": row}]}).to_string(),
            400,
            "FP64",
        ),
        (
            "unknown datatype",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FLOAT", "data": row}]}).to_string(),
            400,
            "FLOAT",
        ),
        (
            "shape/data length mismatch",
            json!({"inputs": [{"name": "input", "shape": [2, 64], "datatype": "FP32", "data": row}]}).to_string(),
            400,
            "128",
        ),
        (
            "wrong width",
            json!({"inputs": [{"name": "input", "shape": [1, 32], "datatype": "FP32", "data": &row[..32]}]})
                .to_string(),
            400,
            "shape [1, 32]",
        ),
        (
            "wrong rank",
            json!({"inputs": [{"name": "input", "shape": [64], "datatype": "FP32", "data": row}]}).to_string(),
            400,
            "shape [64]",
        ),
        (
            "nested data not matching the shape",
            json!({"inputs": [{"name": "input", "shape": [2, 32], "datatype": "FP32",
                   "data": [&row[..40], &row[40..]]}]})
            .to_string(),
            400,
            "nested",
        ),
        (
            "an array for the request",
            "[1, 2]".to_string(),
            400,
            "invalid inference request: request body must be a JSON object with \"inputs\"",
        ),
        (
            "a single value for data",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": "x"}]}).to_string(),
            400,
            "input 'input': data must be an array (flat, or nested as shape [1, 64]), not a single value",
        ),
        (
            "an object for data",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": {"a": 1}}]})
                .to_string(),
            400,
            "not an object",
        ),
        (
            "BYTES where FP32 is expected",
            json!({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "BYTES", "data": ["abc"]}]})
                .to_string(),
            400,
            "BYTES",
        ),
        (
            "strings in FP32 data",
            json!({"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": ["a", "b"]}]})
                .to_string(),
            400,
            "FP32",
        ),
        (
            "a float for an INT64 input",
            json!({"inputs": [{"name": "input", "shape": [1, 1], "datatype": "INT64", "data": [1.5]}]})
                .to_string(),
            400,
            "INT64",
        ),
        (
            "negative dimension",
            json!({"inputs": [{"name": "input", "shape": [-1, 64], "datatype": "FP32", "data": row}]})
                .to_string(),
            400,
            "input 'input': shape [-1, 64] is invalid: a dimension is negative",
        ),
        (
            "missing data",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32"}]}).to_string(),
            400,
            "data",
        ),
        (
            "unknown output",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}],
                   "outputs": [{"name": "logits"}]})
            .to_string(),
            400,
            "logits",
        ),
        (
            "body over the limit",
            json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![1.0; 20000]}]})
                .to_string(),
            413,
            "limit",
        ),
    ];
    for (what, body, status, needle) in cases {
        let (st, resp) = s.post_raw(path, body).await;
        assert_eq!(st, status, "{what}: {resp}");
        let msg = resp["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no JSON error: {resp}"));
        assert!(msg.contains(needle), "{what}: '{msg}' should mention '{needle}'");
        // the server keeps serving
        let (st, ok) = s.post(path, &good).await;
        assert_eq!(st, 200, "after {what}: {ok}");
    }

    // unknown model / version with a valid body
    let (st, resp) = s.post("/v2/models/nope/infer", &good).await;
    assert_eq!(st, 404);
    assert!(resp["error"].as_str().unwrap().contains("nope"));
    let (st, resp) = s.post("/v2/models/digits/versions/7/infer", &good).await;
    assert_eq!(st, 404);
    assert!(resp["error"].as_str().unwrap().contains('7'));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_batching_merges_requests_and_splits_answers_back() {
    // a slow version: its worker threads batch
    merges_and_splits(
        "mlp_wide",
        1,
        "[execution]\nmax_batch_size = 64\nmax_queue_delay_us = 2000\n",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_version_batches_on_the_http_threads_and_splits_answers_back() {
    // a fast version (whatever a debug build takes per run): each HTTP
    // thread runs the requests of one turn together
    merges_and_splits(
        "digits",
        2,
        "[execution]\ninstances = 2\nmax_batch_size = 64\nmax_queue_delay_us = 0\ninline_below_us = 10000000\n[versions]\npolicy = \"all\"\n",
    )
    .await;
}

/// Concurrent requests of one or two rows to `model` version `version`
/// (digits-shaped inputs) get the answers they get one at a time, and
/// runs of several requests were formed.
async fn merges_and_splits(model: &str, version: u64, config: &str) {
    let repo = TestRepo::bundled(&[model]);
    repo.config(model, config);
    let s = Arc::new(TestServer::start(repo.path()).await);
    let route = format!("/v2/models/{model}/versions/{version}/infer");
    let samples = digits_samples();

    // unbatched reference answers, one request at a time
    let rows: Vec<Vec<f64>> = samples.iter().take(48).map(|(r, _)| r.clone()).collect();
    let mut reference = Vec::new();
    for r in &rows {
        let (st, body) = s.post(&route, &digits_request(std::slice::from_ref(r))).await;
        assert_eq!(st, 200);
        reference.push(body["outputs"].clone());
    }

    // concurrent requests of 1 or 2 rows each
    let mut tasks = Vec::new();
    for round in 0..4 {
        for i in 0..24 {
            let (s, route) = (s.clone(), route.clone());
            let (a, b) = (rows[2 * i].clone(), rows[2 * i + 1].clone());
            let two = (i + round) % 2 == 0;
            tasks.push(tokio::spawn(async move {
                let req = if two {
                    digits_request(&[a, b])
                } else {
                    digits_request(&[a])
                };
                let (st, body) = s.post(&route, &req).await;
                assert_eq!(st, 200, "{body}");
                (i, two, body)
            }));
        }
    }
    for t in tasks {
        let (i, two, body) = t.await.unwrap();
        let outputs = body["outputs"].as_array().unwrap();
        let labels = outputs[0]["data"].as_array().unwrap();
        let probs = outputs[1]["data"].as_array().unwrap();
        let n = if two { 2 } else { 1 };
        assert_eq!(labels.len(), n);
        assert_eq!(probs.len(), 10 * n);
        for k in 0..n {
            let want = &reference[2 * i + k];
            assert_eq!(labels[k], want[0]["data"][0], "row {} label", 2 * i + k);
            for j in 0..10 {
                let got = probs[10 * k + j].as_f64().unwrap();
                let exp = want[1]["data"][j].as_f64().unwrap();
                assert!(
                    (got - exp).abs() < 1e-5,
                    "row {} prob {j}: {got} vs {exp}",
                    2 * i + k
                );
            }
        }
    }
    let snapshot = s.server.as_ref().unwrap().state.repo.snapshot();
    let runtime = snapshot.models[model].versions[&version].runtime.clone().unwrap();
    let batches = runtime.stats().batch_stats();
    let largest = *batches.keys().max().unwrap();
    assert!(
        largest > 2,
        "batches of several requests were formed: {batches:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_gives_503_and_deadline_gives_504() {
    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.config(
        "mlp_wide",
        "[execution]\nmax_batch_size = 0\nmax_queue = 1\ntimeout_ms = 20000\n",
    );
    let s = Arc::new(TestServer::start(repo.path()).await);
    let big: Vec<Vec<f64>> = (0..3000).map(|i| vec![(i % 17) as f64; 64]).collect();
    let big_req = digits_request(&big);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let s = s.clone();
        let req = big_req.clone();
        tasks.push(tokio::spawn(async move {
            let resp = s
                .client
                .post(s.url("/v2/models/mlp_wide/infer"))
                .json(&req)
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let retry = resp.headers().get("retry-after").is_some();
            let body: Value = resp.json().await.unwrap();
            (status, retry, body)
        }));
    }
    let mut rejected = 0;
    for t in tasks {
        let (status, retry, body) = t.await.unwrap();
        assert!(status == 200 || status == 503, "{status}: {body}");
        if status == 503 {
            rejected += 1;
            assert!(retry, "503 carries Retry-After");
            assert!(body["error"].as_str().unwrap().contains("queue"), "{body}");
        }
    }
    assert!(rejected >= 1, "some requests found the queue full");

    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.config("mlp_wide", "[execution]\ntimeout_ms = 30\n");
    let s = TestServer::start(repo.path()).await;
    let (st, body) = s.post("/v2/models/mlp_wide/infer", &big_req).await;
    assert_eq!(st, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("30 ms"), "{body}");
    // once the worker is free again a small request succeeds
    let mut ok = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (st, _) = s
            .post("/v2/models/mlp_wide/infer", &digits_request(&[vec![0.0; 64]]))
            .await;
        if st == 200 {
            ok = true;
            break;
        }
    }
    assert!(ok, "a small request succeeds after the deadline case");
    s.stop().await;
}
