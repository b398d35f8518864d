//! Zero-failure hot swaps: load, switch and unload versions while clients
//! keep sending requests; the repository API; poll mode.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use parking_lot::Mutex;
use reqwest::Method;
use serde_json::{json, Value};

/// (time the policy took effect, versions it routes to), in order.
type PolicyLog = Arc<Mutex<Vec<(Instant, Vec<u64>)>>>;

fn routable_between(log: &[(Instant, Vec<u64>)], start: Instant, end: Instant) -> Vec<u64> {
    // the policy in force at `start`, plus every one installed before `end`
    let mut out = Vec::new();
    for (i, (at, versions)) in log.iter().enumerate() {
        let next = log.get(i + 1).map(|(t, _)| *t);
        let overlaps = *at <= end && next.is_none_or(|n| n >= start);
        if overlaps {
            out.extend(versions);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_versions_under_load_fails_no_request() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config(
        "digits",
        "[execution]\nmax_batch_size = 16\n[versions]\npolicy = \"all\"\n",
    );
    let s = Arc::new(TestServer::start(repo.path()).await);
    let samples = Arc::new(digits_samples());
    let log: PolicyLog = Arc::new(Mutex::new(vec![(Instant::now(), vec![2])]));
    s.set_policy("digits", json!({"stable": 2})).await;
    log.lock().push((Instant::now(), vec![2]));

    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..8 {
        let (s, samples, log, stop) = (s.clone(), samples.clone(), log.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let (row, _) = &samples[(n as usize * 8 + c) % samples.len()];
                let start = Instant::now();
                let resp = s
                    .client
                    .post(s.url("/v2/models/digits/infer"))
                    .header("x-user-id", format!("user-{c}-{}", n % 50))
                    .json(&digits_request(std::slice::from_ref(row)))
                    .send()
                    .await
                    .unwrap();
                let end = Instant::now();
                let status = resp.status().as_u16();
                let version: u64 = resp.headers()["x-model-version"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                let body: Value = resp.json().await.unwrap();
                assert_eq!(status, 200, "request failed during a swap: {body}");
                assert_eq!(body["model_version"], version.to_string());
                let allowed = routable_between(&log.lock(), start, end);
                assert!(
                    allowed.contains(&version),
                    "v{version} was not routable (allowed {allowed:?})"
                );
                n += 1;
            }
            n
        }));
    }

    let set = |policy: Value, routed: Vec<u64>| {
        let s = s.clone();
        let log = log.clone();
        async move {
            // while the swap is in flight both the old and the new policy
            // may answer; afterwards only the new one
            {
                let mut log = log.lock();
                let mut both = log.last().map(|(_, v)| v.clone()).unwrap_or_default();
                both.extend(&routed);
                log.push((Instant::now(), both));
            }
            s.set_policy("digits", policy).await;
            log.lock().push((Instant::now(), routed));
        }
    };
    let test_start = Instant::now();

    // 1. load a new version next to the serving ones
    common::copy_dir(
        &common::root().join("models/digits/2"),
        &repo.path().join("digits/3"),
    );
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/3/load", None)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["state"], "READY");

    // 2. switch the policy 100 times between versions
    for i in 0..100u64 {
        let (stable, cand) = match i % 4 {
            0 => (1, 2),
            1 => (2, 3),
            2 => (3, 1),
            _ => (2, 1),
        };
        set(
            json!({"stable": stable, "candidate": {"version": cand, "weight_bp": (i * 97) % 10001}, "salt": format!("s{i}")}),
            vec![stable, cand],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    set(json!({"stable": 2}), vec![2]).await;

    // 3. unload a version and load it again while traffic flows
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/3/unload", None)
        .await;
    assert_eq!(st, 409, "v3 is protected by the rollback window / labels: {body}");
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/1/unload", None)
        .await;
    // v1 may still be the previous stable inside the rollback window
    if st == 409 {
        assert!(body["error"].as_str().unwrap().contains("routed"), "{body}");
    } else {
        assert_eq!(st, 200, "{body}");
        let (st, body) = s
            .admin(Method::POST, "/admin/v1/models/digits/versions/1/load", None)
            .await;
        assert_eq!(st, 200, "{body}");
    }
    // a version nobody routes to comes and goes
    common::copy_dir(
        &common::root().join("models/digits/1"),
        &repo.path().join("digits/4"),
    );
    for _ in 0..3 {
        let (st, body) = s
            .admin(Method::POST, "/admin/v1/models/digits/versions/4/load", None)
            .await;
        assert_eq!(st, 200, "{body}");
        set(
            json!({"stable": 2, "candidate": {"version": 4, "weight": "50%"}}),
            vec![2, 4],
        )
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        set(json!({"stable": 2}), vec![2]).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (st, body) = s
            .admin(Method::POST, "/admin/v1/models/digits/versions/4/unload", None)
            .await;
        assert_eq!(st, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // keep the load on for 20 s in all
    let left = Duration::from_secs(20).saturating_sub(test_start.elapsed());
    tokio::time::sleep(left).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.expect("no client saw a failure");
    }
    assert!(total > 500, "clients kept sending ({total} requests)");
    eprintln!("hot swap: {total} requests, 0 failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_repository_api_indexes_loads_and_unloads() {
    let repo = TestRepo::bundled(&["digits", "breast_cancer"]);
    let s = TestServer::start_with(repo.path(), |c| c.repository_api = true).await;
    let (st, index) = s.post("/v2/repository/index", &json!({})).await;
    assert_eq!(st, 200);
    let names: Vec<&str> = index
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"digits") && names.contains(&"breast_cancer"),
        "{index}"
    );
    assert!(index.as_array().unwrap().iter().all(|e| e["state"] == "READY"));

    let (st, _) = s
        .post("/v2/repository/models/breast_cancer/unload", &json!({}))
        .await;
    assert_eq!(st, 200);
    assert_eq!(s.get("/v2/models/breast_cancer").await.0, 404);
    let (_, index) = s.post("/v2/repository/index", &json!({})).await;
    let bc = index
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "breast_cancer")
        .unwrap()
        .clone();
    assert_eq!(bc["state"], "UNAVAILABLE");

    let (st, body) = s
        .post("/v2/repository/models/breast_cancer/load", &json!({}))
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(s.get("/v2/models/breast_cancer/ready").await.0, 200);
    let (st, body) = s.post("/v2/repository/models/nope/load", &json!({})).await;
    assert_eq!(st, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("nope"));
    let (_, meta) = s.get("/v2").await;
    assert!(meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("model_repository")));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_mode_picks_up_published_versions_only_when_complete() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    let s = TestServer::start_with(repo.path(), |c| c.repository_poll_secs = 1).await;
    let versions = |s: &TestServer| {
        s.snapshot().models["digits"]
            .versions
            .iter()
            .map(|(v, e)| (*v, e.state.name()))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&s), vec![(1, "READY"), (2, "READY")]);

    // a half-written directory (no model.onnx yet) is ignored
    std::fs::create_dir_all(repo.path().join("digits/3")).unwrap();
    std::fs::write(repo.path().join("digits/3/notes.txt"), "writing...").unwrap();
    // a corrupt one becomes UNAVAILABLE and harms nothing
    std::fs::create_dir_all(repo.path().join("digits/5")).unwrap();
    std::fs::write(repo.path().join("digits/5/model.onnx"), b"corrupt").unwrap();
    // a complete one, renamed into place, is loaded
    let staging = repo.path().join(".staging-4");
    common::copy_dir(&common::root().join("models/digits/2"), &staging);
    std::fs::rename(&staging, repo.path().join("digits/4")).unwrap();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = versions(&s);
        if v.iter().any(|(n, st)| *n == 4 && *st == "READY")
            && v.iter().any(|(n, st)| *n == 5 && *st == "UNAVAILABLE")
        {
            break;
        }
        assert!(Instant::now() < deadline, "poll did not load v4: {v:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !versions(&s).iter().any(|(n, _)| *n == 3),
        "half-written v3 ignored"
    );
    assert_eq!(s.get("/ready").await.0, 200);
    // the new version is routable
    s.set_policy("digits", json!({"stable": 4})).await;
    let row = digits_samples()[0].0.clone();
    let (st, body) = s.post("/v2/models/digits/infer", &digits_request(&[row])).await;
    assert_eq!(st, 200);
    assert_eq!(body["model_version"], "4");

    // completing v3 later gets it loaded
    std::fs::copy(
        common::root().join("models/digits/1/model.onnx"),
        repo.path().join("digits/3/model.onnx"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !versions(&s).iter().any(|(n, st)| *n == 3 && *st == "READY") {
        assert!(Instant::now() < deadline, "v3 not loaded once complete");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.stop().await;
}
