//! Protection over HTTP with real models: rate limits, circuit breakers,
//! load shedding under overload, body limit and deadlines.

mod common;

use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::{json, Value};

/// The overload test measures the RSS of this whole test process and drives
/// 300 clients; the oversized-body test holds multi-MiB bodies. Run side by
/// side (one binary, parallel tests) each disturbs the other, so they take
/// turns.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// POSTs a digits V2 body; (status, x-route, x-model-version, Retry-After, body).
async fn infer(
    s: &TestServer,
    path: &str,
    rows: &[Vec<f64>],
    headers: &[(&str, &str)],
) -> (u16, String, String, Option<u64>, Value) {
    let mut req = s.client.post(s.url(path)).json(&digits_request(rows));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (route, version) = (h("x-route"), h("x-model-version"));
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (
        status,
        route,
        version,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_over_the_rate_limit_get_429_and_others_are_unaffected() {
    let repo = TestRepo::bundled(&["digits"]);
    // a second model with its own, stricter limit
    repo.add_version("models/digits/1", "strict", 1);
    repo.config(
        "strict",
        "[limits]\nrate_limit = \"1/60s\"\nrate_limit_burst = 2\n",
    );
    // the test client is the trusted proxy that sets x-user-id
    let s = TestServer::start_with(repo.path(), |c| {
        c.rate_limit = Some("3/60s".parse().unwrap());
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let row = vec![digits_samples()[0].0.clone()];
    let path = "/v2/models/digits/infer";
    for _ in 0..3 {
        assert_eq!(infer(&s, path, &row, &[("x-user-id", "alice")]).await.0, 200);
    }
    let (st, _, _, retry, body) = infer(&s, path, &row, &[("x-user-id", "alice")]).await;
    assert_eq!(st, 429, "{body}");
    let retry = retry.expect("Retry-After on 429");
    assert!((1..=20).contains(&retry), "Retry-After {retry}");
    assert!(body["error"].as_str().unwrap().contains("alice"), "{body}");
    // V1 shares the user's bucket
    let (st, _) = s
        .post("/v1/models/digits:predict", &json!({"instances": row.clone()}))
        .await;
    assert_eq!(st, 200, "anonymous V1 is another bucket");
    let resp = s
        .client
        .post(s.url("/v1/models/digits:predict"))
        .header("x-user-id", "alice")
        .json(&json!({"instances": row.clone()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    // another user is unaffected
    for _ in 0..3 {
        assert_eq!(infer(&s, path, &row, &[("x-user-id", "bob")]).await.0, 200);
    }
    // V2 parameters.user_id is the same key as the header
    let mut body = digits_request(&row);
    body["parameters"] = json!({"user_id": "alice"});
    let (st, _) = s.post(path, &body).await;
    assert_eq!(st, 429);
    // anonymous clients share their IP's bucket: one anonymous call was made above
    assert_eq!(infer(&s, path, &row, &[]).await.0, 200);
    assert_eq!(infer(&s, path, &row, &[]).await.0, 200);
    let (st, _, _, retry, _) = infer(&s, path, &row, &[]).await;
    assert_eq!(st, 429);
    assert!(retry.unwrap() >= 1);
    // [limits] of a model replaces the global limit: burst 2
    let strict = "/v2/models/strict/infer";
    assert_eq!(infer(&s, strict, &row, &[("x-user-id", "carol")]).await.0, 200);
    assert_eq!(infer(&s, strict, &row, &[("x-user-id", "carol")]).await.0, 200);
    assert_eq!(infer(&s, strict, &row, &[("x-user-id", "carol")]).await.0, 429);
    // counted
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_rate_limited_total{model=\"digits\"}"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_opens_its_breaker_and_traffic_falls_back_to_stable() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    // version 3 fails inside ORT when any pixel is > 100
    repo.add_version("tests/fixtures/models/digits_faulty/1", "digits", 3);
    let s = TestServer::start_with(repo.path(), |c| {
        c.breaker_failures = 3;
        c.breaker_open_secs = 2;
    })
    .await;
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 3, "weight": "100%"}}),
    )
    .await;
    let state = s.server.as_ref().unwrap().state.clone();
    let good = vec![digits_samples()[0].0.clone()];
    let bad = vec![vec![200.0; 64]];
    let path = "/v2/models/digits/infer";

    let (st, route, version, _, _) = infer(&s, path, &good, &[]).await;
    assert_eq!((st, route.as_str(), version.as_str()), (200, "weighted", "3"));
    // three failures open the breaker
    for i in 0..3 {
        assert!(!state.breaker_open("digits", 3), "open after {i} failures");
        let (st, _, version, _, body) = infer(&s, path, &bad, &[]).await;
        assert_eq!((st, version.as_str()), (500, "3"), "{body}");
    }
    assert!(state.breaker_open("digits", 3));
    assert!(!state.breaker_open("digits", 1));
    let opened = Instant::now();
    // while open: every request falls back to stable and succeeds
    let mut served = 0;
    while opened.elapsed() < Duration::from_millis(1500) {
        let rows = if served % 2 == 0 { &bad } else { &good };
        let (st, route, version, _, body) = infer(&s, path, rows, &[]).await;
        assert_eq!(
            (st, route.as_str(), version.as_str()),
            (200, "fallback", "1"),
            "{body}"
        );
        served += 1;
    }
    assert!(served > 5, "only {served} requests during the open period");
    // an explicit request for the failing version is refused, not failed
    let (st, _, _, retry, body) = infer(&s, "/v2/models/digits/versions/3/infer", &good, &[]).await;
    assert_eq!(st, 503, "{body}");
    assert!(retry.unwrap() >= 1);
    assert!(
        body["error"].as_str().unwrap().contains("circuit breaker"),
        "{body}"
    );
    // after the open period a good probe closes it
    tokio::time::sleep(Duration::from_millis(2200).saturating_sub(opened.elapsed())).await;
    let (st, route, version, _, _) = infer(&s, path, &good, &[]).await;
    assert_eq!((st, route.as_str(), version.as_str()), (200, "weighted", "3"));
    assert!(!state.breaker_open("digits", 3));
    for _ in 0..5 {
        let (st, route, _, _, _) = infer(&s, path, &good, &[]).await;
        assert_eq!((st, route.as_str()), (200, "weighted"));
    }
    s.stop().await;
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_early_and_memory_stays_bounded() {
    let _turn = HEAVY.lock().await;
    const CLIENTS: usize = 300;
    const SECONDS: u64 = 10;
    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.config(
        "mlp_wide",
        "[execution]\nmax_batch_size = 8\nmax_queue = 16\ntimeout_ms = 2000\n",
    );
    let s = TestServer::start_with(repo.path(), |c| c.max_in_flight = 32).await;
    let rows: Vec<Vec<f64>> = digits_samples().into_iter().take(4).map(|(r, _)| r).collect();
    let body = digits_request(&rows).to_string();
    // warm up, then measure
    for _ in 0..5 {
        let (st, b) = s.post_raw("/v2/models/mlp_wide/infer", body.clone()).await;
        assert_eq!(st, 200, "{b}");
    }
    let rss_before = rss_kib();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .unwrap();
    let url = s.url("/v2/models/mlp_wide/infer");
    let end = Instant::now() + Duration::from_secs(SECONDS);
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            while Instant::now() < end {
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match resp {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        if st != 200 {
                            assert!(
                                r.headers().contains_key("retry-after"),
                                "{st} without Retry-After"
                            );
                        }
                        let _ = r.bytes().await;
                        seen.push((st, t.elapsed()));
                    }
                    Err(e) => panic!("request failed (hang or reset): {e}"),
                }
            }
            seen
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let rss_after = rss_kib();
    let mut by_status = std::collections::BTreeMap::new();
    for (st, _) in &all {
        *by_status.entry(*st).or_insert(0usize) += 1;
    }
    let mut lat: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
    lat.sort();
    let p99 = lat[lat.len() * 99 / 100];
    let ok_lat: Vec<Duration> = {
        let mut v: Vec<Duration> = all.iter().filter(|(s, _)| *s == 200).map(|(_, d)| *d).collect();
        v.sort();
        v
    };
    let p99_ok = ok_lat.get(ok_lat.len() * 99 / 100).copied().unwrap_or_default();
    eprintln!(
        "overload: {CLIENTS} clients for {SECONDS}s: {} requests {by_status:?}; p99 {p99:?} (200s: p99 {p99_ok:?}); \
         RSS {rss_before} KiB -> {rss_after} KiB ({:+} KiB)",
        all.len(),
        rss_after as i64 - rss_before as i64
    );
    assert!(
        by_status.keys().all(|st| matches!(st, 200 | 429 | 503)),
        "{by_status:?}"
    );
    assert!(
        by_status.get(&200).copied().unwrap_or(0) > 0,
        "nothing served: {by_status:?}"
    );
    assert!(
        by_status.get(&503).copied().unwrap_or(0) > 0,
        "nothing shed: {by_status:?}"
    );
    assert!(p99 < Duration::from_secs(5), "p99 {p99:?}");
    assert!(
        rss_after < rss_before + 200 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_load_shed_total{reason=\"in_flight\"}"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_get_413_and_deadlines_504() {
    let _turn = HEAVY.lock().await;
    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.add_version("models/mlp_wide/1", "slow", 1);
    repo.config("slow", "[execution]\ntimeout_ms = 1\n");
    let s = TestServer::start_with(repo.path(), |c| c.body_limit = 1 << 20).await;
    // 413 with a JSON error. The server answers before reading the whole
    // body and then closes the connection, so each oversized request goes
    // on a fresh connection (a pooled one may be closing under it).
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = "x".repeat(2 << 20);
    for path in ["/v2/models/mlp_wide/infer", "/v1/models/mlp_wide:predict"] {
        let resp = fresh
            .post(s.url(path))
            .header("content-type", "application/json")
            .body(big.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 413, "{path}");
        let body: Value = resp.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("limit"),
            "{path}: {body}"
        );
    }
    // 256 rows of the wide MLP take well over a millisecond
    let rows: Vec<Vec<f64>> = (0..256).map(|i| digits_samples()[i % 20].0.clone()).collect();
    let (st, _, _, _, body) = infer(&s, "/v2/models/slow/infer", &rows, &[]).await;
    assert_eq!(st, 504, "model timeout_ms: {body}");
    // the header lowers the deadline ...
    let (st, _, _, _, body) = infer(
        &s,
        "/v2/models/mlp_wide/infer",
        &rows,
        &[("x-request-timeout-ms", "1")],
    )
    .await;
    assert_eq!(st, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("1 ms"), "{body}");
    let resp = s
        .client
        .post(s.url("/v1/models/mlp_wide:predict"))
        .header("x-request-timeout-ms", "1")
        .json(&json!({"instances": rows.clone()}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    // ... but never raises it
    let (st, _, _, _, body) = infer(
        &s,
        "/v2/models/slow/infer",
        &rows,
        &[("x-request-timeout-ms", "60000")],
    )
    .await;
    assert_eq!(st, 504, "{body}");
    let (st, _, _, _, _) = infer(
        &s,
        "/v2/models/mlp_wide/infer",
        &rows[..1],
        &[("x-request-timeout-ms", "5000")],
    )
    .await;
    assert_eq!(st, 200);
    let (st, _, _, _, body) = infer(
        &s,
        "/v2/models/mlp_wide/infer",
        &rows[..1],
        &[("x-request-timeout-ms", "soon")],
    )
    .await;
    assert_eq!(st, 400, "{body}");
    s.stop().await;
}
