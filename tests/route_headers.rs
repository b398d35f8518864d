//! What a predict answer says about routing: `x-model-version` and
//! `x-route` only when a version answered (never on a 400), and
//! `x-pin-ignored` when the caller's `x-model-version` pin was not followed.

mod common;

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::json;

async fn post(s: &TestServer, path: &str, body: String, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

fn header(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers().get(name).map(|v| v.to_str().unwrap().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_names_no_version() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    for (path, body) in [
        ("/v2/models/digits/infer", "{\"inputs\": [".to_string()),
        (
            "/v2/models/digits/infer",
            json!({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]})
                .to_string(),
        ),
        (
            "/v1/models/digits:predict",
            "{\"instances\": [[1, 2]]".to_string(),
        ),
    ] {
        let resp = post(&s, path, body, &[]).await;
        assert_eq!(resp.status(), 400, "{path}");
        assert_eq!(header(&resp, "x-model-version"), None, "{path}");
        assert_eq!(header(&resp, "x-route"), None, "{path}");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert!(body["error"].is_string(), "{body}");
    }
    let ok = post(
        &s,
        "/v2/models/digits/infer",
        digits_request(&[digits_samples()[0].0.clone()]).to_string(),
        &[],
    )
    .await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "x-model-version").as_deref(), Some("1"));
    assert_eq!(header(&ok, "x-route").as_deref(), Some("stable"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_that_is_not_followed_says_why() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let body = digits_request(&[digits_samples()[0].0.clone()]).to_string();
    // no policy: pins are off
    let resp = post(
        &s,
        "/v2/models/digits/infer",
        body.clone(),
        &[("x-model-version", "2")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-model-version").as_deref(), Some("1"));
    let why = header(&resp, "x-pin-ignored").expect("the pin was ignored");
    assert!(why.contains("pins are off"), "{why}");

    s.set_policy("digits", json!({"stable": 1, "pins": "off"})).await;
    let resp = post(
        &s,
        "/v1/models/digits:predict",
        json!({"instances": [digits_samples()[0].0]}).to_string(),
        &[("x-model-version", "2")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(header(&resp, "x-pin-ignored")
        .unwrap()
        .contains("pins are off in the traffic policy"));

    s.set_policy("digits", json!({"stable": 1, "pins": "all"})).await;
    let resp = post(
        &s,
        "/v2/models/digits/infer",
        body.clone(),
        &[("x-model-version", "2")],
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(header(&resp, "x-model-version").as_deref(), Some("2"));
    assert_eq!(header(&resp, "x-route").as_deref(), Some("pin"));
    assert_eq!(header(&resp, "x-pin-ignored"), None);
    // without a pin, nothing is said
    let resp = post(&s, "/v2/models/digits/infer", body, &[]).await;
    assert_eq!(header(&resp, "x-pin-ignored"), None);
    s.stop().await;
}
