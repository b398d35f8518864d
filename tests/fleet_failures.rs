//! Fleet mode when parts fail, with real processes on loopback (see
//! `tests/fleet.rs`): the leader killed mid-step, the Kubernetes API down
//! under load, Prometheus gone, a replica killed and restarted; and the
//! Kubernetes API requests a fleet makes against the Role in
//! `deploy/k8s/base/rbac.yaml`. Lease timings are 3 s / 2 s / 500 ms.

mod common;
#[allow(dead_code)]
#[path = "fleet/harness.rs"]
mod harness;
#[allow(dead_code)]
#[path = "fleet/load.rs"]
mod load;
#[allow(dead_code)]
#[path = "kube_standin/harness.rs"]
mod standin;

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{json, Value};

use harness::{LocalFleet, LEASE};
use load::Load;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A canary of version 2 with `steps`; latency is not what these tests are
/// about (two cores, three servers), so its limit is loose.
fn canary(steps: Value, analysis: Value) -> Value {
    let mut a =
        json!({"interval": "1s", "min_requests": 5, "max_p95_ratio": 50.0, "progress_deadline": "120s"});
    for (k, v) in analysis.as_object().unwrap() {
        a[k] = v.clone();
    }
    json!({"strategy": "canary", "candidate": 2, "steps": steps, "analysis": a})
}

fn is_final(r: &Value) -> bool {
    ["promoted", "aborted"].contains(&r["phase"].as_str().unwrap_or(""))
}

/// Waits until replica `i` sees step 0 progressing with its policy converged.
async fn converged(fleet: &LocalFleet, i: usize) -> Value {
    fleet
        .wait_rollout(i, Duration::from_secs(90), "a converged step 0", |r| {
            r["phase"] == "progressing" && r["step"] == 0 && !r["revision_converged_at"].is_null()
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_killed_mid_step_hands_over_within_the_lease_and_the_step_resumes() {
    let _serial = SERIAL.lock().await;
    let mut fleet = LocalFleet::start(3, harness::repo(&[])).await;
    let leader = fleet.leader(&[0, 1, 2], Duration::from_secs(30)).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let load = Load::start(&fleet, &survivors, 3, false);
    let bake = 8.0;
    fleet
        .start_rollout(
            survivors[0],
            canary(
                json!([{"weight": "20%", "bake": "8s"}, {"weight": "100%"}]),
                json!({}),
            ),
        )
        .await;
    let before = converged(&fleet, survivors[0]).await;
    let converged_at = before["revision_converged_at"].as_f64().unwrap();

    fleet.kill(leader);
    let killed = Instant::now();
    let killed_at = now_secs();
    let next = fleet.leader(&survivors, LEASE * 3).await;
    let failover = killed.elapsed();
    eprintln!("leader failover after kill -9: {failover:?} (lease duration {LEASE:?})");
    // the Lease's holder renewed at most one retry period before the kill
    assert!(
        failover <= LEASE + Duration::from_millis(1500),
        "{} took {failover:?} to lead",
        fleet.pods[next].name
    );
    // the same step, with the timers it had
    let after = fleet.rollout(next).await;
    assert_eq!(
        (&after["step"], &after["phase"]),
        (&json!(0), &json!("progressing")),
        "{after}"
    );
    assert_eq!(after["step_started_at"], before["step_started_at"]);
    assert_eq!(after["revision_converged_at"], before["revision_converged_at"]);

    let r = fleet
        .wait_rollout(next, Duration::from_secs(60), "the promotion", is_final)
        .await;
    assert_eq!(r["phase"], "promoted", "{r}");
    let (_, events) = fleet
        .admin(next, Method::GET, "/admin/v1/models/digits/events", None)
        .await;
    let promoted_at = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["decision"].as_str().unwrap().contains("promoted"))
        .unwrap_or_else(|| panic!("{events}"))["at"]
        .as_f64()
        .unwrap();
    // the bake ran from the convergence, not from the takeover
    let takeover = killed_at + failover.as_secs_f64();
    assert!(
        promoted_at >= converged_at + bake - 0.01,
        "promoted before the bake ended"
    );
    assert!(
        promoted_at < takeover + bake - 0.5,
        "the bake restarted at the takeover: promoted {:.1} s after it",
        promoted_at - takeover
    );
    let (sent, failed) = load.stop().await;
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests to the surviving replicas failed"
    );
    let (_, o) = standin::http(
        &fleet.kube,
        Method::GET,
        "/apis/switchyard.dev/v1alpha1/namespaces/default/modelrollouts/digits",
        None,
    )
    .await;
    assert_eq!(o["status"]["leader"], json!(fleet.pods[next].name), "{o}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_outage_under_load_fails_no_request_freezes_the_rollout_then_it_resumes() {
    let _serial = SERIAL.lock().await;
    let fleet = LocalFleet::start(3, harness::repo(&[])).await;
    let load = Load::start(&fleet, &[0, 1, 2], 3, false);
    fleet
        .start_rollout(
            0,
            canary(
                json!([{"weight": "20%", "bake": "4s"}, {"weight": "50%", "bake": "4s"}, {"weight": "100%"}]),
                json!({}),
            ),
        )
        .await;
    let before = converged(&fleet, 0).await;
    fleet.kube.down(10.0).await;
    let down = Instant::now();
    let mut leaderless = false;
    while down.elapsed() < Duration::from_millis(9500) {
        for i in 0..3 {
            let r = fleet.rollout(i).await;
            for field in ["phase", "step", "revision"] {
                assert_eq!(
                    r[field], before[field],
                    "{} during the outage: {r}",
                    fleet.pods[i].name
                );
            }
        }
        // past the renew deadline nobody acts: the leader stopped, no one can take over
        if down.elapsed() > Duration::from_millis(2500) {
            let mut leading = 0;
            for i in 0..3 {
                leading += usize::from(fleet.fleet(i).await["leading"] == true);
            }
            assert_eq!(leading, 0, "a replica acts as leader without renewing its Lease");
            leaderless = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(leaderless);
    let r = fleet
        .wait_rollout(
            0,
            Duration::from_secs(90),
            "the promotion after the outage",
            is_final,
        )
        .await;
    assert_eq!(r["phase"], "promoted", "{r}");
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_prometheus_gone_the_step_holds_then_aborts_at_the_error_limit() {
    let _serial = SERIAL.lock().await;
    let mut fleet = LocalFleet::start(3, harness::repo(&[])).await;
    let load = Load::start(&fleet, &[0, 1, 2], 3, false);
    fleet
        .start_rollout(
            1,
            canary(
                json!([{"weight": "20%", "bake": "20s"}, {"weight": "100%"}]),
                json!({"error_limit": 4}),
            ),
        )
        .await;
    converged(&fleet, 0).await;
    fleet.prometheus.kill();
    let held = fleet
        .wait_rollout(0, Duration::from_secs(30), "a step held on metric errors", |r| {
            r["phase"] == "progressing" && r["metric_errors"].as_u64().unwrap_or(0) >= 1
        })
        .await;
    assert_eq!(held["step"], 0);
    let r = fleet
        .wait_rollout(0, Duration::from_secs(60), "the abort", is_final)
        .await;
    assert_eq!((&r["phase"], &r["step"]), (&json!("aborted"), &json!(0)), "{r}");
    assert!(
        r["reason"]
            .as_str()
            .unwrap()
            .contains("metrics unavailable 4 times"),
        "{r}"
    );
    let (sent, failed) = load.stop().await;
    assert_eq!(failed, 0, "{failed} of {sent} requests failed");
}

#[derive(Deserialize)]
struct Rule {
    #[serde(rename = "apiGroups")]
    api_groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

/// (verb, group, resource, subresource) the Role in deploy/k8s allows.
fn role_allows() -> BTreeSet<(String, String, String, String)> {
    let text = std::fs::read_to_string(common::root().join("deploy/k8s/base/rbac.yaml")).unwrap();
    let role = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "Role")
        .expect("a Role in rbac.yaml");
    let rules: Vec<Rule> = serde_json::from_value(role["rules"].clone()).unwrap();
    let mut allowed = BTreeSet::new();
    for r in rules {
        for g in &r.api_groups {
            for res in &r.resources {
                let (resource, sub) = res.split_once('/').unwrap_or((res, ""));
                for v in &r.verbs {
                    allowed.insert((v.clone(), g.clone(), resource.to_string(), sub.to_string()));
                }
            }
        }
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_turns_ready_only_with_the_current_revision_and_rbac_allows_every_call() {
    let _serial = SERIAL.lock().await;
    let mut fleet = LocalFleet::start(3, harness::repo(&[])).await;
    let hold = json!({"min_requests": 1_000_000, "progress_deadline": "1h"});
    fleet
        .start_rollout(
            0,
            canary(
                json!([{"weight": "10%", "bake": "1h"}, {"weight": "50%", "bake": "1h"}, {"weight": "100%"}]),
                hold,
            ),
        )
        .await;
    converged(&fleet, 0).await;
    let leader = fleet.leader(&[0, 1, 2], Duration::from_secs(30)).await;
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let other = (0..3).find(|&i| i != leader && i != victim).unwrap();
    fleet.kill(victim);
    let (st, r) = fleet
        .admin(
            other,
            Method::POST,
            "/admin/v1/models/digits/rollout/promote",
            None,
        )
        .await;
    assert_eq!(st, 200, "{r}");
    let current = r["revision"].as_u64().unwrap();

    fleet.spawn(victim);
    let url = format!("{}/ready", fleet.pods[victim].data);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut unready = 0;
    loop {
        match fleet.client.get(&url).send().await.map(|r| r.status().as_u16()) {
            Ok(200) => break,
            Ok(503) => unready += 1,
            _ => {}
        }
        assert!(Instant::now() < deadline, "never ready:\n{}", fleet.log(victim));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let held = fleet.fleet(victim).await["revisions"]["digits"].clone();
    assert_eq!(
        held,
        json!(current),
        "ready while holding revision {held}, the fleet's is {current}"
    );
    assert!(unready > 0, "the restarted replica was never seen unready");

    // every Kubernetes API call the fleet made is allowed by the Role, and
    // the Role allows nothing the fleet did not call
    let used: BTreeSet<(String, String, String, String)> = fleet
        .kube
        .requests()
        .await
        .iter()
        .filter(|e| e["resource"] != "")
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("verb"), s("group"), s("resource"), s("subresource"))
        })
        .collect();
    let allowed = role_allows();
    let denied: Vec<_> = used.difference(&allowed).collect();
    assert!(denied.is_empty(), "the Role does not allow {denied:?}");
    let unused: Vec<_> = allowed.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "the Role allows {unused:?}, which the fleet never calls"
    );
}
