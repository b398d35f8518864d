//! Triton's statistics extension end to end: counts follow the requests
//! sent, failures inside ONNX Runtime count as failures, unknown names 404.

mod common;

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::{json, Value};

/// The one model stat of `model` version `version`.
async fn stat(s: &TestServer, model: &str, version: &str) -> Value {
    let (st, body) = s
        .get(&format!("/v2/models/{model}/versions/{version}/stats"))
        .await;
    assert_eq!(st, 200, "{body}");
    let list = body["model_stats"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{body}");
    list[0].clone()
}

fn num(v: &Value, path: &str) -> u64 {
    let mut cur = v;
    for key in path.split('.') {
        cur = &cur[key];
    }
    cur.as_u64()
        .unwrap_or_else(|| panic!("{path} is not a count in {v}"))
}

/// `batch_stats` entry for `batch_size` (count of runs, or 0 when absent).
fn batch_runs(v: &Value, batch_size: u64) -> u64 {
    v["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["batch_size"] == batch_size)
        .map_or(0, |b| num(b, "compute_infer.count"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_follow_the_requests_sent() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_fixture("digits_faulty", "digits_faulty");
    let s = TestServer::start(repo.path()).await;
    let (_, meta) = s.get("/v2").await;
    assert!(
        meta["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("statistics")),
        "{meta}"
    );

    // the shape, exactly as Triton's extension_statistics.md gives it
    let before = stat(&s, "digits", "1").await;
    assert_eq!(before["name"], "digits");
    assert_eq!(before["version"], "1");
    let mut keys: Vec<&str> = before.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "batch_stats",
            "execution_count",
            "inference_count",
            "inference_stats",
            "last_inference",
            "name",
            "version"
        ]
    );
    let mut kinds: Vec<&str> = before["inference_stats"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "cache_hit",
            "cache_miss",
            "compute_infer",
            "compute_input",
            "compute_output",
            "fail",
            "queue",
            "success"
        ]
    );
    for (kind, d) in before["inference_stats"].as_object().unwrap() {
        assert!(d["count"].is_u64() && d["ns"].is_u64(), "{kind}: {d}");
    }

    // five 1-row requests and one 3-row request, one after another (so the
    // batcher has nothing to merge)
    let samples = digits_samples();
    let one = digits_request(&[samples[0].0.clone()]);
    for _ in 0..5 {
        let (st, body) = s.post("/v2/models/digits/versions/1/infer", &one).await;
        assert_eq!(st, 200, "{body}");
    }
    let three = digits_request(&[samples[1].0.clone(), samples[2].0.clone(), samples[3].0.clone()]);
    let (st, body) = s.post("/v2/models/digits/versions/1/infer", &three).await;
    assert_eq!(st, 200, "{body}");
    // a bad request never reaches the model: counted nowhere
    let (st, _) = s
        .post("/v2/models/digits/versions/1/infer", &json!({"inputs": []}))
        .await;
    assert_eq!(st, 400);

    let after = stat(&s, "digits", "1").await;
    let delta = |path: &str| num(&after, path) - num(&before, path);
    assert_eq!(delta("inference_stats.success.count"), 6);
    assert_eq!(delta("inference_stats.fail.count"), 0);
    assert_eq!(delta("inference_stats.queue.count"), 6);
    assert_eq!(delta("inference_stats.compute_input.count"), 6);
    assert_eq!(delta("inference_stats.compute_infer.count"), 6);
    assert_eq!(delta("inference_stats.compute_output.count"), 6);
    assert_eq!(delta("inference_stats.cache_hit.count"), 0);
    assert!(delta("inference_stats.success.ns") > 0);
    assert!(delta("inference_stats.compute_infer.ns") > 0);
    assert_eq!(delta("inference_count"), 5 + 3, "rows, not requests");
    assert_eq!(delta("execution_count"), 6);
    assert_eq!(batch_runs(&after, 1) - batch_runs(&before, 1), 5);
    assert_eq!(batch_runs(&after, 3) - batch_runs(&before, 3), 1);
    let b3 = after["batch_stats"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["batch_size"] == 3)
        .unwrap();
    for part in ["compute_input", "compute_infer", "compute_output"] {
        assert_eq!(b3[part]["count"], 1, "{b3}");
    }
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let last = num(&after, "last_inference");
    assert!(
        last <= now_ms && now_ms - last < 60_000,
        "last_inference {last} vs now {now_ms}"
    );

    // version 2 saw none of it; the label names version 1
    let v2 = stat(&s, "digits", "2").await;
    assert_eq!(v2["version"], "2");
    assert_eq!(stat(&s, "digits", "stable").await["version"], "1");
    let v1_again = stat(&s, "digits", "1").await;
    assert_eq!(num(&v1_again, "inference_count"), num(&after, "inference_count"));

    // a failure inside ONNX Runtime counts as fail, not as success or rows
    let f0 = stat(&s, "digits_faulty", "1").await;
    let mut row = samples[0].0.clone();
    row[10] = 101.0;
    let (st, body) = s
        .post("/v2/models/digits_faulty/infer", &digits_request(&[row]))
        .await;
    assert_eq!(st, 500, "{body}");
    let (st, body) = s.post("/v2/models/digits_faulty/infer", &one).await;
    assert_eq!(st, 200, "{body}");
    let f1 = stat(&s, "digits_faulty", "1").await;
    let fdelta = |path: &str| num(&f1, path) - num(&f0, path);
    assert_eq!(fdelta("inference_stats.fail.count"), 1);
    assert_eq!(fdelta("inference_stats.success.count"), 1);
    assert_eq!(fdelta("inference_count"), 1);
    assert_eq!(fdelta("execution_count"), 1);

    // the lists: every READY version of every model, or of one model
    let (st, all) = s.get("/v2/models/stats").await;
    assert_eq!(st, 200);
    let names: Vec<(String, String)> = all["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().into(),
                m["version"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [("digits", "1"), ("digits", "2"), ("digits_faulty", "1")];
    assert_eq!(names, want.map(|(a, b)| (a.to_string(), b.to_string())), "{all}");
    let (st, digits) = s.get("/v2/models/digits/stats").await;
    assert_eq!(st, 200);
    assert_eq!(digits["model_stats"].as_array().unwrap().len(), 2, "{digits}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_models_and_versions_are_404() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    for path in [
        "/v2/models/nope/stats",
        "/v2/models/nope/versions/1/stats",
        "/v2/models/digits/versions/9/stats",
        "/v2/models/digits/versions/gold/stats",
    ] {
        let (st, body) = s.get(path).await;
        assert_eq!(st, 404, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (_, body) = s.get("/v2/models/nope/stats").await;
    assert!(body["error"].as_str().unwrap().contains("'nope'"), "{body}");
    // metadata routes still work next to the stats routes
    assert_eq!(s.get("/v2/models/digits").await.0, 200);
    assert_eq!(s.get("/v2/models/digits/versions/1").await.0, 200);
    s.stop().await;
}
