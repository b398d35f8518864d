//! "Trust no caller", error answers (case 10 of issue 12): every error is
//! JSON, including those raised before a handler runs; float values beyond
//! FP32 are refused; non-finite answers to finite inputs are counted (and
//! refused on request).

mod common;

use common::raw::exchange;
use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::{json, Value};

/// Sends raw bytes to both listeners; each must answer `status` with a JSON
/// error.
async fn both_listeners(s: &TestServer, request: &[u8], status: u16, needle: &str) {
    for base in [&s.base, &s.admin] {
        let answer = exchange(base, request).await;
        assert_eq!(answer.status, status, "{base}: {answer:?}");
        assert!(
            answer.head.contains("content-type: application/json"),
            "{answer:?}"
        );
        let error = answer.json()["error"].as_str().unwrap().to_string();
        assert!(error.contains(needle), "{error:?} does not mention {needle:?}");
    }
}

/// Case 10: errors raised before a handler runs are JSON like every other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_errors_before_handlers_are_json() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    // invalid UTF-8 in a path segment (axum's path rejection)
    let answer = exchange(
        &s.base,
        b"GET /v2/models/%FF%FE/ready HTTP/1.1\r\nhost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(
        answer.json()["error"].as_str().unwrap().contains("UTF-8"),
        "{answer:?}"
    );
    let answer = exchange(&s.admin, b"GET /admin/v1/models/%FF HTTP/1.1\r\nhost: x\r\n\r\n").await;
    assert_eq!(answer.status, 400, "{answer:?}");
    assert!(answer.json()["error"].is_string());
    // a 64 KiB URL (hyper's own 414)
    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(64 << 10));
    both_listeners(&s, long.as_bytes(), 414, "URL").await;
    // 500 headers (hyper's own 431)
    let mut many = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..500 {
        many.push_str(&format!("x-h{i}: {i}\r\n"));
    }
    many.push_str("\r\n");
    both_listeners(&s, many.as_bytes(), 431, "headers").await;
    // a request line that is no HTTP (hyper's own 400)
    both_listeners(&s, b"GARBAGE\r\n\r\n", 400, "malformed").await;
    // the server goes on serving
    let body = digits_request(&[digits_samples()[0].0.clone()]);
    assert_eq!(s.post("/v2/models/digits/infer", &body).await.0, 200);
    s.stop().await;
}

/// Case 10: FP32 values beyond the float range are a 400 naming the input,
/// in V2 and V1, instead of a silent infinity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case10_fp32_values_beyond_the_range_are_refused() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut row: Vec<Value> = digits_samples()[0].0.iter().map(|v| json!(v)).collect();
    row[3] = serde_json::from_str("1e39").unwrap();
    let v2 =
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [row.clone()]}]});
    let (st, body) = s.post("/v2/models/digits/infer", &v2).await;
    assert_eq!(st, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("'input'") && error.contains("1e39") && error.contains("FP32"),
        "{error}"
    );
    let (st, body) = s
        .post("/v1/models/digits:predict", &json!({"instances": [row]}))
        .await;
    assert_eq!(st, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("'input'") && error.contains("range"), "{error}");
    // the named infinities of V1 still mean infinity
    let (st, body) = s
        .post_raw(
            "/v1/models/digits:predict",
            format!("{{\"instances\": [[Infinity{}]]}}", ", 0".repeat(63)),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    s.stop().await;
}

/// Non-finite outputs of finite inputs: counted, and a 422 when the request
/// asks for it (header or V2 parameter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonfinite_answers_to_finite_inputs_are_counted_and_refusable() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    // finite but huge pixels overflow the logistic regression's scores
    let huge = vec![vec![3.0e38; 64]];
    let body = digits_request(&huge);
    let series = "switchyard_nonfinite_outputs_total{model=\"digits\",version=\"1\"}";
    let (st, answer) = s.post("/v2/models/digits/infer", &body).await;
    assert_eq!(st, 200, "{answer}");
    assert_eq!(s.metric(series).await, 1.0);
    let mut asked = body.clone();
    asked["parameters"] = json!({"reject_nonfinite": true});
    let (st, answer) = s.post("/v2/models/digits/infer", &asked).await;
    assert_eq!(st, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("non-finite"),
        "{answer}"
    );
    let resp = s
        .client
        .post(s.url("/v1/models/digits:predict"))
        .header("x-reject-nonfinite", "true")
        .json(&json!({"instances": huge}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 422);
    assert_eq!(s.metric(series).await, 3.0);
    // NaN in, NaN out is no surprise and not counted
    let (st, _) = s
        .post_raw(
            "/v1/models/digits:predict",
            format!("{{\"instances\": [[NaN{}]]}}", ", 0".repeat(63)),
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(s.metric(series).await, 3.0);
    s.stop().await;
}
