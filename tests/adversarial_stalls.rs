//! "Trust no caller", nothing stalls: a restored rollout whose policy
//! cannot be applied loads what it needs or aborts with the reason;
//! repository polling keeps what an admin load or a rollout holds; a worker
//! whose backend panics is replaced, and its version is not ready until then.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::runtime::onnx::OnnxBackend;
use switchyard::runtime::{Backend, BackendError, Reopen, VersionRuntime};
use switchyard::tensor::{Tensor, TensorData};

/// Starts a canary 1 → 2 that bakes for an hour, then stops the server.
async fn rollout_then_stop(repo: &TestRepo) {
    let s = TestServer::start(repo.path()).await;
    let spec = json!({"strategy": "canary", "candidate": 2, "skip_validation": true,
                      "steps": [{"weight": "25%", "bake": "1h"}]});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    s.stop().await;
}

/// After a restart with only version 1 selected by the version policy, the
/// rollout loads version 2 itself and its weights are in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_rollout_loads_the_versions_it_needs() {
    let repo = TestRepo::bundled(&["digits"]);
    rollout_then_stop(&repo).await;
    repo.config(
        "digits",
        "[versions]\npolicy = \"specific\"\nspecific = [1]\n\n[labels]\nstable = 1\n",
    );
    let s = TestServer::start(repo.path()).await;
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "progressing", "{r}");
    let (_, policy) = s.admin(Method::GET, "/admin/v1/models/digits/policy", None).await;
    assert_eq!(policy["source"], "admin", "{policy}");
    assert_eq!(
        policy["policy"]["candidate"],
        json!({"version": 2, "weight": "25%"}),
        "{policy}"
    );
    assert_eq!(s.get("/ready").await.0, 200);
    s.stop().await;
}

/// When the candidate is gone from the disk, the restored rollout ends
/// aborted with an event saying why, instead of "progressing" forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_rollout_that_cannot_apply_aborts_with_the_reason() {
    let repo = TestRepo::bundled(&["digits"]);
    rollout_then_stop(&repo).await;
    std::fs::remove_dir_all(repo.path().join("digits/2")).unwrap();
    let s = TestServer::start(repo.path()).await;
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "aborted", "{r}");
    let (_, events) = s.admin(Method::GET, "/admin/v1/models/digits/events", None).await;
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["decision"]
            .as_str()
            .unwrap()
            .contains("could not be restored"),
        "{last}"
    );
    let (st, body) = s
        .post(
            "/v2/models/digits/infer",
            &digits_request(&[digits_samples()[0].0.clone()]),
        )
        .await;
    assert_eq!(st, 200, "version 1 serves: {body}");
    assert_eq!(s.get("/ready").await.0, 200);
    s.stop().await;
}

/// Polling never unloads a version an admin load holds, nor one an active
/// rollout needs, though the version policy does not select them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_keeps_what_an_admin_load_or_a_rollout_holds() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"latest\"\nlatest = 1\n");
    repo.add_version("models/digits/1", "digits", 3);
    let s = TestServer::start_with(repo.path(), |c| c.repository_poll_secs = 1).await;
    let loaded =
        |s: &TestServer| -> Vec<u64> { s.snapshot().models["digits"].versions.keys().copied().collect() };
    assert_eq!(loaded(&s), vec![3]);
    for v in [1, 2] {
        let (st, body) = s
            .admin(
                Method::POST,
                &format!("/admin/v1/models/digits/versions/{v}/load"),
                None,
            )
            .await;
        assert_eq!(st, 200, "{body}");
    }
    // a rollout from 3 to 1 holds 1; 2 is held by its admin load
    let spec = json!({"strategy": "canary", "candidate": 1, "skip_validation": true,
                      "steps": [{"weight": "1%", "bake": "1h"}]});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let mut polls = 0;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        assert_eq!(loaded(&s), vec![1, 2, 3], "after {polls} s of polling");
        tokio::time::sleep(Duration::from_millis(250)).await;
        polls += 1;
    }
    // an explicit unload releases the hold (the policy set by hand, with
    // force: the rollout owns the policy while it runs)
    let (st, body) = s
        .admin(
            Method::PUT,
            "/admin/v1/models/digits/policy?force=true",
            Some(json!({"stable": 3, "candidate": {"version": 1, "weight": "1%"}})),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/2/unload", None)
        .await;
    assert_eq!(st, 200, "{body}");
    s.stop().await;
}

/// A real ONNX Runtime session that panics while `armed` and the input's
/// first pixel is 12345 (what no real model does on demand).
struct Tripwire {
    inner: OnnxBackend,
    armed: Arc<AtomicBool>,
}

impl Backend for Tripwire {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
        if let TensorData::Fp32(v) = &inputs[0].data {
            if self.armed.load(Ordering::SeqCst) && v[0] == 12345.0 {
                panic!("tripwire");
            }
        }
        self.inner.run(inputs)
    }
}

/// A worker whose backend panics is replaced; its version is not ready
/// (readiness, V2 ready, metrics) until the new backend is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicked_worker_is_replaced_and_its_version_not_ready_meanwhile() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let path = repo.path().join("digits/1/model.onnx");
    let armed = Arc::new(AtomicBool::new(true));
    // reopening waits for the test's go, so "not ready" can be observed
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let opens = Arc::new(AtomicUsize::new(0));
    let reopen: Reopen = {
        let (path, armed, gate, opens) = (path.clone(), armed.clone(), gate.clone(), opens.clone());
        Arc::new(move || {
            let (lock, go) = &*gate;
            let mut open = lock.lock().unwrap();
            while !*open {
                open = go.wait(open).unwrap();
            }
            opens.fetch_add(1, Ordering::SeqCst);
            let (inner, _) = OnnxBackend::open(&path, 1).map_err(|e| e.to_string())?;
            Ok(Box::new(Tripwire {
                inner,
                armed: armed.clone(),
            }) as Box<dyn Backend>)
        })
    };
    let (inner, signature) = OnnxBackend::open(&path, 1).unwrap();
    let backend = Tripwire {
        inner,
        armed: armed.clone(),
    };
    let config = s.snapshot().models["digits"].config.execution.clone();
    let runtime = VersionRuntime::start_with_reopen(
        "digits-1",
        signature,
        config,
        vec![Box::new(backend)],
        Some(reopen),
    )
    .unwrap();
    let runtime = Arc::new(runtime);
    s.state().repo.publish(|snap| {
        let m = Arc::make_mut(snap.models.get_mut("digits").unwrap());
        m.versions.get_mut(&1).unwrap().runtime = Some(runtime.clone());
    });
    let good = digits_request(&[digits_samples()[0].0.clone()]);
    assert_eq!(s.post("/v2/models/digits/versions/1/infer", &good).await.0, 200);

    let mut trip = digits_samples()[0].0.clone();
    trip[0] = 12345.0;
    let (st, body) = s
        .post("/v2/models/digits/versions/1/infer", &digits_request(&[trip]))
        .await;
    assert_eq!(st, 500, "{body}");
    assert!(!runtime.is_healthy());
    let (st, ready) = s.get("/ready").await;
    assert_eq!(st, 503, "{ready}");
    assert!(ready["error"].as_str().unwrap().contains("worker"), "{ready}");
    assert_eq!(s.get("/v2/models/digits/versions/1/ready").await.0, 503);
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_version_ready{model=\"digits\",version=\"1\"} 0"),
        "{text}"
    );

    armed.store(false, Ordering::SeqCst);
    {
        let (lock, go) = &*gate;
        *lock.lock().unwrap() = true;
        go.notify_all();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.get("/ready").await.0 != 200 {
        assert!(Instant::now() < deadline, "the worker was not replaced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(opens.load(Ordering::SeqCst), 1);
    let (st, body): (u16, Value) = s.post("/v2/models/digits/versions/1/infer", &good).await;
    assert_eq!(st, 200, "{body}");
    assert!(s
        .metrics()
        .await
        .contains("switchyard_worker_restarts_total{model=\"digits\",version=\"1\"} 1"));
    s.stop().await;
}
