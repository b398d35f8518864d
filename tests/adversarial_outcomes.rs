//! "Trust no caller", what counts against a version: only the server's own
//! failures (inference errors, the model's own deadline) reach a version's
//! circuit breaker and analysis window; breakers close again without user
//! traffic; a rollout (or a retry) starts from a clean slate.
//!
//! 3. a client deadline opened a candidate's breaker and aborted a canary;
//! 4. a breaker nobody sends traffic to stayed open forever.

mod common;

use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::guard::CircuitState;

/// `n` digits rows (a batch that takes the MLP well over a millisecond).
fn rows(n: usize) -> Vec<Vec<f64>> {
    let samples = digits_samples();
    (0..n).map(|i| samples[i % samples.len()].0.clone()).collect()
}

async fn infer_with(s: &TestServer, path: &str, body: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = s
        .client
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let st = resp.status().as_u16();
    (st, resp.json().await.unwrap_or(Value::Null))
}

fn window_errors(s: &TestServer, model: &str, version: u64) -> (u64, u64) {
    let w = s.snapshot().models[model].versions[&version]
        .runtime
        .as_ref()
        .unwrap()
        .window()
        .summary(UNIX_EPOCH);
    (w.requests, w.errors)
}

/// Case 3: five requests with `x-request-timeout-ms: 1` to the candidate
/// get 504, and neither its breaker nor its window nor the canary notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_a_client_deadline_never_counts_against_the_version() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let spec = json!({"strategy": "canary", "candidate": 2, "skip_validation": true,
                      "steps": [{"weight": "10%", "bake": "10m"}],
                      "analysis": {"interval": "1s", "min_requests": 1000}});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let big = digits_request(&rows(20_000)).to_string();
    let path = "/v2/models/digits/versions/2/infer";
    for _ in 0..6 {
        let (st, body) = infer_with(&s, path, &big, &[("x-request-timeout-ms", "1")]).await;
        assert_eq!(st, 504, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("the request allowed"),
            "{body}"
        );
    }
    let state = s.state();
    assert_eq!(state.guard.breakers.state("digits", 2), CircuitState::Closed);
    assert_eq!(
        window_errors(&s, "digits", 2),
        (0, 0),
        "nothing reached version 2's window"
    );
    // several analysis ticks later the canary still progresses
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "progressing", "{r}");
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_circuit_state{model=\"digits\",version=\"2\"} 0"),
        "{text}"
    );
    s.stop().await;
}

/// The other side of case 3: a miss of the model's *own* deadline is the
/// version's failure and still opens its breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case3_the_models_own_deadline_still_counts() {
    let repo = TestRepo::bundled(&[]);
    repo.add_version("models/digits/2", "hasty", 1);
    repo.config("hasty", "[execution]\ntimeout_ms = 1\n");
    let s = TestServer::start_with(repo.path(), |c| c.breaker_failures = 3).await;
    let big = digits_request(&rows(20_000)).to_string();
    for _ in 0..3 {
        let (st, body) = infer_with(&s, "/v2/models/hasty/infer", &big, &[]).await;
        assert_eq!(st, 504, "{body}");
        assert!(body["error"].as_str().unwrap().contains("its deadline"), "{body}");
    }
    assert!(s.state().breaker_open("hasty", 1));
    let (requests, errors) = window_errors(&s, "hasty", 1);
    assert_eq!((requests, errors), (3, 3));
    s.stop().await;
}

/// Shedding (a full queue: 503) is load, not a fault of the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_not_a_failure_of_the_version() {
    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.config("mlp_wide", "[execution]\nmax_batch_size = 0\nmax_queue = 1\n");
    let s = TestServer::start_with(repo.path(), |c| c.breaker_failures = 2).await;
    let body = digits_request(&rows(256)).to_string();
    let mut tasks = Vec::new();
    for _ in 0..24 {
        let (client, url, body) = (s.client.clone(), s.url("/v2/models/mlp_wide/infer"), body.clone());
        tasks.push(tokio::spawn(async move {
            let resp = client
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let shed = statuses.iter().filter(|&&st| st == 503).count();
    assert!(shed > 0, "the queue of one overflowed: {statuses:?}");
    assert!(statuses.iter().all(|&st| st == 200 || st == 503), "{statuses:?}");
    let served = statuses.iter().filter(|&&st| st == 200).count() as u64;
    assert_eq!(window_errors(&s, "mlp_wide", 1), (served, 0));
    assert_eq!(
        s.state().guard.breakers.state("mlp_wide", 1),
        CircuitState::Closed
    );
    s.stop().await;
}

/// A repository where version 3 of digits fails inside ONNX Runtime when
/// any pixel is above 100 (and answers the warm-up sample).
fn faulty_repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n\n[labels]\nstable = 1\n");
    repo.add_version("tests/fixtures/models/digits_faulty/1", "digits", 3);
    repo
}

/// Opens version 3's breaker with explicit bad requests.
async fn open_breaker(s: &TestServer) {
    let bad = digits_request(&[vec![200.0; 64]]).to_string();
    for _ in 0..3 {
        let (st, body) = infer_with(s, "/v2/models/digits/versions/3/infer", &bad, &[]).await;
        assert_eq!(st, 500, "{body}");
    }
    assert!(s.state().breaker_open("digits", 3));
}

/// Case 4: with no traffic at all, the breaker is probed after its open
/// period (a warm-up row) and closes; the gauge follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_an_open_breaker_closes_without_user_traffic() {
    let repo = faulty_repo();
    let s = TestServer::start_with(repo.path(), |c| {
        c.breaker_failures = 3;
        c.breaker_open_secs = 1;
    })
    .await;
    open_breaker(&s).await;
    let series = "switchyard_circuit_state{model=\"digits\",version=\"3\"}";
    assert_eq!(s.metric(series).await, 1.0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.metric(series).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "the breaker stayed open without traffic"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!s.state().breaker_open("digits", 3));
    s.stop().await;
}

/// Case 4: a new rollout of a candidate whose breaker is open starts with a
/// closed breaker (and does not abort on the old failures); so does a retry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case4_a_rollout_and_a_retry_start_with_a_closed_breaker() {
    let repo = faulty_repo();
    // an hour-long open period: only the fresh start can close it
    let s = TestServer::start_with(repo.path(), |c| {
        c.breaker_failures = 3;
        c.breaker_open_secs = 3600;
    })
    .await;
    open_breaker(&s).await;
    let spec = json!({"strategy": "canary", "candidate": 3, "skip_validation": true,
                      "steps": [{"weight": "10%", "bake": "10m"}],
                      "analysis": {"interval": "1s", "min_requests": 1000}});
    let start = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(start.0, 200, "{}", start.1);
    assert_eq!(s.state().guard.breakers.state("digits", 3), CircuitState::Closed);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "progressing", "{r}");
    // abort, open the breaker again, retry: closed again
    let (st, _) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollout/abort", None)
        .await;
    assert_eq!(st, 200);
    open_breaker(&s).await;
    let (st, r) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollout/retry", None)
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(s.state().guard.breakers.state("digits", 3), CircuitState::Closed);
    s.stop().await;
}

/// A rollout starts with fresh shadow counters for its (stable, candidate)
/// pair: earlier comparisons do not decide it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_starts_with_fresh_shadow_counters() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    s.set_policy(
        "digits",
        json!({"stable": 1, "shadow": {"version": 2, "rate": 1.0}}),
    )
    .await;
    for _ in 0..10 {
        assert_eq!(
            s.post("/v2/models/digits/infer", &digits_request(&rows(1)))
                .await
                .0,
            200
        );
    }
    let compared = |v: &Value| {
        v["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["primary_version"] == 1 && p["shadow_version"] == 2)
            .map_or(0, |p| p["compared"].as_u64().unwrap())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, v) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
        if compared(&v) == 10 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mirrored copies were not compared: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.set_policy("digits", json!({"stable": 1})).await;
    let spec = json!({"strategy": "shadow", "candidate": 2, "skip_validation": true, "min_samples": 1000});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let (_, v) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
    assert_eq!(compared(&v), 0, "{v}");
    s.stop().await;
}
