//! A slow shadow does not slow the primary down beyond noise. Its own test
//! binary, so no other test competes for the CPU while it measures.
//!
//! The shadow is made slow by keeping it busy: a background client sends
//! large batches straight to it in both phases, so CPU contention is the
//! same with and without mirroring, and each mirrored copy waits behind
//! those batches for tens of milliseconds. A primary that waited for its
//! shadow would show that wait; one that does not stays within noise.

mod common;

use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::json;

async fn median_latency(s: &TestServer, row: &[f64], n: usize) -> Duration {
    let body = digits_request(std::slice::from_ref(&row.to_vec()));
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let resp = s
            .client
            .post(s.url("/v2/models/digits/infer"))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-model-version"], "1");
        resp.bytes().await.unwrap();
        times.push(t.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_shadow_leaves_the_primary_latency_alone() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    // version 4 of digits is the heavy mlp_wide (same signature)
    repo.add_version("models/mlp_wide/1", "digits", 4);
    let s = TestServer::start(repo.path()).await;
    let row = digits_samples()[0].0.clone();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let background = {
        let (client, url, stop) = (
            s.client.clone(),
            s.url("/v2/models/digits/versions/4/infer"),
            stop.clone(),
        );
        let big: Vec<Vec<f64>> = (0..400).map(|i| vec![(i % 17) as f64; 64]).collect();
        let body = digits_request(&big);
        tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                resp.bytes().await.unwrap();
                n += 1;
            }
            n
        })
    };
    let plain = json!({"stable": 1});
    let shadowed = json!({"stable": 1, "shadow": {"version": 4, "rate": 1.0}});
    // alternate the phases so drift on a shared machine hits both alike
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..4 {
        s.set_policy("digits", plain.clone()).await;
        without.push(median_latency(&s, &row, 150).await);
        s.set_policy("digits", shadowed.clone()).await;
        with.push(median_latency(&s, &row, 150).await);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(background.await.unwrap() > 0);
    without.sort();
    with.sort();
    let (a, b) = (without[2], with[2]);
    eprintln!("primary median latency: {a:?} without a shadow, {b:?} with a slow shadow");
    assert!(
        b < a * 2 + Duration::from_millis(2),
        "primary median {b:?} with a slow shadow vs {a:?} without"
    );
    s.stop().await;
}
