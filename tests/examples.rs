//! The example rollout specs under examples/rollouts/ parse, and each runs
//! to its end on a real server (timings scaled down) while `switchyard load`
//! sends real rows and feedback.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{root, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::rollout::spec_file;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("examples/rollouts"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_spec_parses_and_together_they_cover_every_strategy() {
    let mut strategies = Vec::new();
    for file in examples() {
        let text = std::fs::read_to_string(&file).unwrap();
        let spec = spec_file::parse(&text, None).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let v = serde_json::to_value(&spec).unwrap();
        strategies.push(v["strategy"].as_str().unwrap().to_string());
    }
    strategies.sort();
    assert_eq!(strategies, ["ab-test", "blue-green", "canary", "shadow"]);
}

/// The example with its timings scaled from minutes to about a second.
fn fast(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("examples/rollouts").join(file)).unwrap();
    let mut v = serde_json::to_value(spec_file::parse(&text, None).unwrap()).unwrap();
    v["analysis"]["interval"] = json!("1s");
    v["analysis"]["min_requests"] = json!(10);
    v["analysis"]["progress_deadline"] = json!("60s");
    // This test is about the flows, not latency (the p95 check is unit-tested
    // in rollout::analysis): debug builds on a loaded 2-core machine see
    // stalls of hundreds of milliseconds.
    v["analysis"]["max_p95_ratio"] = json!(1000.0);
    for list in ["steps", "then_canary"] {
        for step in v
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if step.get("bake").is_some() {
                step["bake"] = json!("1s");
            }
        }
    }
    for (key, value) in [
        ("observe", json!("2s")),
        ("duration", json!("2s")),
        ("min_samples", json!(40)),
    ] {
        if v.get(key).is_some() {
            v[key] = value;
        }
    }
    v
}

/// `switchyard load` against the server, in the background.
fn load(s: &TestServer, repo: &TestRepo) -> Child {
    Command::new(BIN)
        .args([
            "load", "--url", &s.base, "--model", "digits", "--rate", "150", "--users", "500",
        ])
        .args(["--duration", "10m", "--model-repository"])
        .arg(repo.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn run(s: &TestServer, spec: Value) -> Value {
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, r) = s
            .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
            .await;
        if ["promoted", "aborted"].contains(&r["phase"].as_str().unwrap_or("")) {
            return r;
        }
        assert!(Instant::now() < deadline, "did not finish: {r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Back to version 1 as stable (it stays loaded for the rollback window).
async fn reset(s: &TestServer) {
    let (st, body) = s
        .admin(
            Method::PUT,
            "/admin/v1/models/digits/policy",
            Some(json!({"stable": 1})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_runs_to_its_end() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut traffic = load(&s, &repo);

    let r = run(&s, fast("shadow.toml")).await;
    assert_eq!(r["phase"], "promoted", "shadow then canary: {r}");
    reset(&s).await;

    let r = run(&s, fast("canary.toml")).await;
    assert_eq!(r["phase"], "promoted", "{r}");
    reset(&s).await;

    let r = run(&s, fast("ab-test.json")).await;
    // without auto_promote an A/B test ends with its verdict, stable kept
    assert!(r["ab_result"]["winner"].is_string(), "{r}");
    assert!(
        r["ab_result"]["result"]["n_candidate"].as_u64().unwrap() >= 40,
        "{r}"
    );
    reset(&s).await;

    let r = run(&s, fast("blue-green.yaml")).await;
    assert_eq!(r["phase"], "promoted", "{r}");

    let _ = traffic.kill();
    let _ = traffic.wait();
}
