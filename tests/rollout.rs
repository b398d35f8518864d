//! Rollouts end to end with real models and a real server, time scaled down
//! (bake and interval of about a second).

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// digits with v1 stable, v2 loaded, and `extra` fixture versions.
fn repo_with(extra: &[(&str, u64)], config: &str) -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    for (src, v) in extra {
        repo.add_version(src, "digits", *v);
    }
    repo.config(
        "digits",
        &format!("[execution]\nmax_batch_size = 16\n[versions]\npolicy = \"specific\"\nspecific = [1, 2]\n[labels]\nstable = 1\n{config}"),
    );
    repo
}

/// Clients sending held-out samples with user ids and posting feedback:
/// `Correct` posts 1/0 for a right/wrong label, `TrueClassProbability`
/// the probability given to the true class.
#[derive(Clone, Copy)]
enum Feedback {
    None,
    Correct,
    TrueClassProbability,
}

fn traffic(
    s: Arc<TestServer>,
    stop: Arc<AtomicBool>,
    feedback: Feedback,
    streams: usize,
) -> Vec<tokio::task::JoinHandle<u64>> {
    let samples = Arc::new(digits_samples());
    (0..streams)
        .map(|k| {
            let (s, stop, samples) = (s.clone(), stop.clone(), samples.clone());
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let i = (n as usize * streams + k) % samples.len();
                    let (row, label) = &samples[i];
                    let id = format!("req-{k}-{n}");
                    let mut body = digits_request(std::slice::from_ref(row));
                    body["id"] = json!(id);
                    let resp = s
                        .client
                        .post(s.url("/v2/models/digits/infer"))
                        .header("x-user-id", format!("user-{}", (n as usize * streams + k) % 997))
                        .json(&body)
                        .send()
                        .await
                        .unwrap();
                    let ok = resp.status().is_success();
                    let out: Value = resp.json().await.unwrap_or(Value::Null);
                    n += 1;
                    if !ok {
                        continue;
                    }
                    let value = match feedback {
                        Feedback::None => continue,
                        Feedback::Correct => {
                            if out["outputs"][0]["data"][0].as_i64() == Some(*label) {
                                1.0
                            } else {
                                0.0
                            }
                        }
                        Feedback::TrueClassProbability => {
                            out["outputs"][1]["data"][*label as usize].as_f64().unwrap()
                        }
                    };
                    let (st, body) = s
                        .post(
                            "/v2/models/digits/feedback",
                            &json!({"request_id": id, "value": value}),
                        )
                        .await;
                    assert_eq!(st, 200, "{body}");
                }
                n
            })
        })
        .collect()
}

/// Waits until `version` of digits has answered `n` requests.
async fn wait_served(s: &TestServer, version: u64, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = s.snapshot();
        let served = snapshot.models["digits"].versions[&version]
            .runtime
            .as_ref()
            .map_or(0, |r| r.window().summary(std::time::UNIX_EPOCH).requests);
        if served >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "version {version} served only {served} requests"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_phase(s: &TestServer, phases: &[&str], timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let (st, r) = s
            .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
            .await;
        assert_eq!(st, 200, "{r}");
        if phases.contains(&r["phase"].as_str().unwrap()) {
            return r;
        }
        assert!(Instant::now() < deadline, "rollout did not reach {phases:?}: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn events(s: &TestServer) -> Vec<Value> {
    let (st, body) = s.admin(Method::GET, "/admin/v1/models/digits/events", None).await;
    assert_eq!(st, 200);
    body["events"].as_array().unwrap().clone()
}

async fn start(s: &TestServer, spec: Value) -> Value {
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    body
}

/// Analysis every second. The p95 limit is loose: debug builds on a shared
/// 2-core machine have noisy latencies, and these tests are about the other
/// checks (the p95 check itself is unit-tested in rollout::analysis).
fn fast_analysis(min_requests: u64) -> Value {
    json!({"interval": "1s", "min_requests": min_requests, "failure_limit": 2, "progress_deadline": "30s",
           "max_p95_ratio": 5.0})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_canary_walks_its_steps_and_promotes() {
    let repo = repo_with(&[], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::Correct, 4);
    start(
        &s,
        json!({"strategy": "canary", "candidate": 2,
               "steps": [{"weight": "10%", "bake": "1s"}, {"weight": "50%", "bake": "1s"}, {"weight": "100%"}],
               "analysis": fast_analysis(5)}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(90)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(r["phase"], "promoted", "{r}");
    let events = events(&s).await;
    let decisions: Vec<&str> = events.iter().map(|e| e["decision"].as_str().unwrap()).collect();
    let weights: Vec<&str> = events.iter().map(|e| e["weight"].as_str().unwrap()).collect();
    assert!(decisions[0].starts_with("started"), "{decisions:?}");
    assert!(
        decisions.iter().any(|d| d.contains("validation passed")),
        "{decisions:?}"
    );
    // weights followed the steps: 10% → 50% → promoted (100%)
    let mut seen = weights.clone();
    seen.dedup();
    assert_eq!(seen, vec!["0%", "10%", "50%", "100%"], "{events:?}");
    assert!(decisions.last().unwrap().contains("promoted"));
    // every analysis event carries the metrics that decided
    assert!(events
        .iter()
        .filter(|e| e["decision"].as_str().unwrap().contains("analysis passed"))
        .all(|e| e["metrics"]["verdict"].is_object()));
    // traffic is on v2 now
    let (_, body) = s
        .post(
            "/v2/models/digits/infer",
            &digits_request(&[digits_samples()[0].0.clone()]),
        )
        .await;
    assert_eq!(body["model_version"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_canary_aborts_on_feedback_and_traffic_returns_to_stable() {
    // v3 = a model trained on shuffled labels: valid, fast, and wrong
    let repo = repo_with(&[("tests/fixtures/models/digits_bad/1", 3)], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::Correct, 4);
    start(
        &s,
        json!({"strategy": "canary", "candidate": 3,
               "steps": [{"weight": "30%", "bake": "30s"}, {"weight": "100%"}],
               "analysis": fast_analysis(10)}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(60)).await;
    assert_eq!(r["phase"], "aborted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("feedback"), "{r}");
    let events = events(&s).await;
    let failed: Vec<&Value> = events
        .iter()
        .filter(|e| e["decision"].as_str().unwrap().contains("feedback"))
        .collect();
    assert!(
        failed.len() <= 2,
        "aborted within failure_limit analyses: {events:?}"
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    // 100% back on the stable version
    for u in 0..50 {
        let resp = s
            .client
            .post(s.url("/v2/models/digits/infer"))
            .header("x-user-id", format!("user-{u}"))
            .json(&digits_request(&[digits_samples()[0].0.clone()]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.headers()["x-model-version"], "1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traffic_a_step_holds_then_aborts_at_the_progress_deadline() {
    let repo = repo_with(&[], "");
    let s = TestServer::start(repo.path()).await;
    start(
        &s,
        json!({"strategy": "canary", "candidate": 2,
               "steps": [{"weight": "20%", "bake": "0s"}, {"weight": "100%"}],
               "analysis": {"interval": "1s", "min_requests": 50, "progress_deadline": "3s"}}),
    )
    .await;
    // the first analysis finds too few requests: the step holds
    let deadline = Instant::now() + Duration::from_secs(20);
    while !events(&s)
        .await
        .iter()
        .any(|e| e["decision"].as_str().unwrap().contains("inconclusive"))
    {
        assert!(Instant::now() < deadline, "no inconclusive analysis");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(
        (r["phase"].as_str(), r["step"].as_u64()),
        (Some("progressing"), Some(0)),
        "held: {r}"
    );
    let r = wait_phase(&s, &["aborted", "promoted"], Duration::from_secs(20)).await;
    assert_eq!(r["phase"], "aborted");
    assert!(r["reason"].as_str().unwrap().contains("progress deadline"), "{r}");
    let ev = events(&s).await;
    assert!(
        ev.iter()
            .any(|e| e["decision"].as_str().unwrap().contains("inconclusive")),
        "{ev:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_in_one_swap_and_retires_the_old_stable() {
    let repo = repo_with(&[], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::None, 3);
    wait_served(&s, 1, 20).await;
    start(
        &s,
        // latency on a shared, loaded test machine is noisy: this test is
        // about the switch, so the p95 limit is loose
        json!({"strategy": "blue-green", "candidate": 2, "observe": "2s",
               "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 5.0}}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(r["phase"], "promoted", "{r}");
    let ev = events(&s).await;
    let switch = ev
        .iter()
        .find(|e| e["decision"].as_str().unwrap().starts_with("switched"))
        .unwrap();
    assert_eq!(switch["weight"], "100%", "one swap from 0% to 100%");
    // after the window the old stable is unloaded
    let snapshot = s.snapshot();
    assert!(
        !snapshot.models["digits"].versions.contains_key(&1),
        "v1 unloaded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blue_green_switches_back_when_the_post_switch_check_fails() {
    // v3 fails inside ORT for pixel values > 100; clients send such rows
    let repo = repo_with(&[("tests/fixtures/models/digits_faulty/1", 3)], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = {
        let (s, stop) = (s.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let _ = s
                    .post("/v2/models/digits/infer", &digits_request(&[vec![200.0; 64]]))
                    .await;
            }
        })
    };
    wait_served(&s, 1, 20).await;
    start(
        &s,
        json!({"strategy": "blue-green", "candidate": 3, "observe": "30s", "analysis": fast_analysis(5)}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    bad.await.unwrap();
    assert_eq!(r["phase"], "aborted", "{r}");
    // either the post-switch analysis or the candidate's circuit breaker
    // (which aborts at once) ends it; both switch straight back
    let reason = r["reason"].as_str().unwrap();
    assert!(
        reason.contains("switched back") || reason.contains("circuit breaker open"),
        "{r}"
    );
    let (_, body) = s
        .post(
            "/v2/models/digits/infer",
            &digits_request(&[digits_samples()[0].0.clone()]),
        )
        .await;
    assert_eq!(body["model_version"], "1", "instantly back on the old stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ab_test_finds_the_better_model_and_no_difference_between_twins() {
    // v3 is a byte-identical copy of v2
    let repo = repo_with(&[("models/digits/2", 3)], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::TrueClassProbability, 4);
    start(
        &s,
        // v2 gives the true class ~1.3 points more probability than v1 with a
        // spread of ~0.15: about 2,000 samples per arm make that significant
        json!({"strategy": "ab-test", "candidate": 2, "split": "50%", "min_samples": 2500, "alpha": 0.05,
               "analysis": fast_analysis(1)}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(240)).await;
    let result = &r["ab_result"];
    assert!(result["significant"].as_bool().unwrap(), "{r}");
    assert!(result["result"]["p_value"].as_f64().unwrap() < 0.05);
    assert!(
        result["winner"].as_str().unwrap().contains("version 2"),
        "{result}"
    );
    assert!(result["result"]["mean_candidate"].as_f64() > result["result"]["mean_stable"].as_f64());
    let ci = result["result"]["ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() > 0.0, "the 95% CI excludes zero: {ci:?}");

    // v2 vs its twin v3: no significant difference. Each row goes to both
    // arms (by explicit version) with its feedback, so the arms see the same
    // values and the verdict cannot depend on which users the hash split.
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    s.set_policy("digits", json!({"stable": 2})).await;
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/3/load", None)
        .await;
    assert_eq!(st, 200, "{body}");
    // Windows resolve to 5 s buckets: the second test's window must not
    // share a bucket with the first test's last feedback for version 2.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64(5.0 - secs % 5.0 + 0.05)).await;
    start(
        &s,
        json!({"strategy": "ab-test", "candidate": 3, "min_samples": 300, "analysis": fast_analysis(1)}),
    )
    .await;
    let samples = digits_samples();
    let mut sent = 0usize;
    let deadline = Instant::now() + Duration::from_secs(120);
    let r = loop {
        let (row, label) = &samples[sent % samples.len()];
        for version in [2, 3] {
            let id = format!("twin-{version}-{sent}");
            let mut body = digits_request(std::slice::from_ref(row));
            body["id"] = json!(id);
            let (st, out) = s
                .post(&format!("/v2/models/digits/versions/{version}/infer"), &body)
                .await;
            assert_eq!(st, 200, "{out}");
            let value = out["outputs"][1]["data"][*label as usize].as_f64().unwrap();
            let (st, body) = s
                .post(
                    "/v2/models/digits/feedback",
                    &json!({"request_id": id, "value": value}),
                )
                .await;
            assert_eq!(st, 200, "{body}");
        }
        sent += 1;
        if sent.is_multiple_of(50) {
            let (_, r) = s
                .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
                .await;
            if ["promoted", "aborted"].contains(&r["phase"].as_str().unwrap()) {
                break r;
            }
        }
        assert!(Instant::now() < deadline, "the twin A/B test did not conclude");
    };
    // Both arms saw the same values, up to a row or two at the edges of the
    // analysis window (5 s buckets; a tick between the two posts of a row):
    // out of hundreds of rows that moves the means by well under 0.01.
    let result = &r["ab_result"]["result"];
    let difference = result["difference"].as_f64().unwrap();
    assert!(difference.abs() < 0.01, "the arms saw the same values: {r}");
    assert!(result["p_value"].as_f64().unwrap() > 0.5, "{r}");
    assert_eq!(r["ab_result"]["winner"], "no significant difference", "{r}");
    assert_eq!(r["phase"], "aborted", "the stable version stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_stops_bad_candidates_before_any_traffic() {
    let cases = [
        ("tests/fixtures/models/digits_incompatible/1", "", "signature"),
        ("tests/fixtures/models/digits_nan/1", "", "samples"),
        (
            "tests/fixtures/models/digits_bad/1",
            "[validation]\nmin_accuracy = 0.9\n",
            "accuracy",
        ),
        (
            "models/digits/2",
            "[validation]\nmax_p95_ms = 0.000001\n",
            "latency",
        ),
    ];
    for (src, config, check) in cases {
        let repo = repo_with(&[(src, 3)], config);
        let s = TestServer::start(repo.path()).await;
        start(
            &s,
            json!({"strategy": "canary", "candidate": 3, "steps": [{"weight": "10%"}], "analysis": fast_analysis(1)}),
        )
        .await;
        let r = wait_phase(
            &s,
            &["aborted", "progressing", "promoted"],
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(r["phase"], "aborted", "{check}: {r}");
        let reason = r["reason"].as_str().unwrap();
        assert!(
            reason.starts_with("validation failed") && reason.contains(check),
            "{check}: {reason}"
        );
        let ev = events(&s).await;
        assert!(
            ev.iter().all(|e| e["weight"] == "0%"),
            "no traffic ever reached the candidate: {ev:?}"
        );
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rollouts_are_refused() {
    let repo = repo_with(&[], "");
    let s = TestServer::start(repo.path()).await;
    for (spec, status) in [
        (
            json!({"strategy": "canary", "candidate": 9, "steps": [{"weight": "1%"}]}),
            404,
        ),
        (
            json!({"strategy": "canary", "candidate": 1, "steps": [{"weight": "1%"}]}),
            400,
        ),
        (json!({"strategy": "canary", "candidate": 2, "steps": []}), 400),
        (json!({"strategy": "warp", "candidate": 2}), 400),
        (json!({"strategy": "ab-test", "candidate": 2, "split": "0%"}), 400),
    ] {
        let (st, body) = s
            .admin(
                Method::POST,
                "/admin/v1/models/digits/rollouts",
                Some(spec.clone()),
            )
            .await;
        assert_eq!(st, status, "{spec}: {body}");
        assert!(body["error"].is_string());
    }
    start(
        &s,
        json!({"strategy": "canary", "candidate": 2, "steps": [{"weight": "1%", "bake": "1h"}]}),
    )
    .await;
    let (st, _) = s
        .admin(
            Method::POST,
            "/admin/v1/models/digits/rollouts",
            Some(json!({"strategy": "canary", "candidate": 2, "steps": [{"weight": "1%"}]})),
        )
        .await;
    assert_eq!(st, 409, "one active rollout per model");
    let (st, _) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollout/fly", None)
        .await;
    assert_eq!(st, 404);
    let (st, body) = s
        .post(
            "/v2/models/digits/feedback",
            &json!({"request_id": "never-seen", "value": 1}),
        )
        .await;
    assert_eq!(st, 404, "{body}");
    let (st, _) = s
        .post(
            "/v2/models/digits/feedback",
            &json!({"user_id": "u", "value": "good"}),
        )
        .await;
    assert_eq!(st, 400);
    let (st, _) = s
        .post(
            "/v1/models/digits/feedback",
            &json!({"user_id": "u", "value": 0.5}),
        )
        .await;
    assert_eq!(st, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_rollout_passes_on_agreement_then_continues_into_a_canary() {
    let repo = repo_with(&[], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::None, 3);
    start(
        &s,
        json!({"strategy": "shadow", "candidate": 2, "rate": 1.0, "min_agreement": 0.9, "min_samples": 100,
               "then_canary": [{"weight": "50%", "bake": "1s"}, {"weight": "100%"}],
               "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 5.0}}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(90)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(r["phase"], "promoted", "{r}");
    let ev = events(&s).await;
    let verdict = ev
        .iter()
        .find(|e| {
            e["decision"]
                .as_str()
                .unwrap()
                .starts_with("shadow verdict passed")
        })
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(verdict["metrics"]["shadow"]["compared"].as_u64().unwrap() >= 100);
    assert!(verdict["metrics"]["shadow"]["agreement"].as_f64().unwrap() >= 0.9);
    let mut weights: Vec<&str> = ev.iter().map(|e| e["weight"].as_str().unwrap()).collect();
    weights.dedup();
    assert_eq!(
        weights,
        vec!["0%", "50%", "100%"],
        "shadow (0%) → canary 50% → promoted"
    );

    // a shadow that disagrees too often is aborted
    let repo = repo_with(&[("tests/fixtures/models/digits_bad/1", 3)], "");
    let s = Arc::new(TestServer::start(repo.path()).await);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = traffic(s.clone(), stop.clone(), Feedback::None, 3);
    start(
        &s,
        json!({"strategy": "shadow", "candidate": 3, "min_agreement": 0.9, "min_samples": 50,
               "analysis": {"interval": "1s"}}),
    )
    .await;
    let r = wait_phase(&s, &["promoted", "aborted"], Duration::from_secs(60)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(r["phase"], "aborted", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("agreement"), "{r}");
}
