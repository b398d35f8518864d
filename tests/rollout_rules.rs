//! The rules of rollbacks and policies next to rollouts, on a real server:
//! a rollback returns to the stable version before the last promotion,
//! once, never to an aborted candidate; a policy PUT during a rollout is
//! refused unless forced; a rollout keeps the model's allow-list, labels
//! and other shadows; each of these is an event of the audit log.

mod common;

use common::{TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// A canary of `candidate` that bakes for an hour, without validation.
fn canary(candidate: u64) -> Value {
    json!({"strategy": "canary", "candidate": candidate, "skip_validation": true,
           "steps": [{"weight": "10%", "bake": "1h"}, {"weight": "100%"}]})
}

/// digits with versions 1, 2 and 3 (a copy of 2), all loaded, stable 1.
fn repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_version("models/digits/2", "digits", 3)
        .config("digits", "[versions]\npolicy = \"all\"\n\n[labels]\nstable = 1\n");
    repo
}

async fn start(s: &TestServer, candidate: u64) -> Value {
    let (st, r) = s
        .admin(
            Method::POST,
            "/admin/v1/models/digits/rollouts",
            Some(canary(candidate)),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    r
}

async fn action(s: &TestServer, action: &str) -> (u16, Value) {
    s.admin(
        Method::POST,
        &format!("/admin/v1/models/digits/rollout/{action}"),
        None,
    )
    .await
}

async fn rollback(s: &TestServer) -> (u16, Value) {
    s.admin(Method::POST, "/admin/v1/models/digits/rollback", None)
        .await
}

async fn decisions(s: &TestServer) -> Vec<String> {
    let (st, body) = s.admin(Method::GET, "/admin/v1/models/digits/events", None).await;
    assert_eq!(st, 200, "{body}");
    body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["decision"].as_str().unwrap().to_string())
        .collect()
}

async fn policy(s: &TestServer) -> Value {
    s.admin(Method::GET, "/admin/v1/models/digits/policy", None)
        .await
        .1["policy"]
        .clone()
}

/// Promote 1 → 2, roll back, roll back again, roll out 3 and abort it,
/// roll back: the sequence, where rollback used to toggle and then
/// sent all traffic to the aborted candidate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_returns_once_to_the_stable_before_the_last_promotion() {
    let repo = repo();
    let s = TestServer::start(repo.path()).await;
    s.set_policy("digits", json!({"stable": 1})).await;
    let (st, body) = rollback(&s).await;
    assert_eq!(st, 409, "nothing promoted yet: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("nothing to roll back to"),
        "{body}"
    );

    start(&s, 2).await;
    let (st, body) = rollback(&s).await;
    assert_eq!(st, 409, "a rollout runs: {body}");
    assert!(body["error"].as_str().unwrap().contains("abort it"), "{body}");
    let (st, r) = action(&s, "promote-full").await;
    assert_eq!((st, r["phase"].as_str()), (200, Some("promoted")), "{r}");
    assert_eq!(policy(&s).await["stable"], 2);

    let (st, body) = rollback(&s).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["policy"]["stable"], 1, "{body}");
    let (st, body) = rollback(&s).await;
    assert_eq!(st, 409, "a rollback does not toggle: {body}");
    assert_eq!(policy(&s).await["stable"], 1);

    start(&s, 3).await;
    let (st, r) = action(&s, "abort").await;
    assert_eq!((st, r["phase"].as_str()), (200, Some("aborted")), "{r}");
    let (st, body) = rollback(&s).await;
    assert_eq!(st, 409, "{body}");
    let p = policy(&s).await;
    assert_eq!(
        (p["stable"].as_u64(), &p["candidate"]),
        (Some(1), &Value::Null),
        "{p}"
    );

    let log = decisions(&s).await;
    let rolled: Vec<&String> = log.iter().filter(|d| d.starts_with("rolled back")).collect();
    assert_eq!(rolled.len(), 1, "{log:?}");
    assert!(rolled[0].contains("version 1 is stable again (was 2)"), "{log:?}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_put_during_a_rollout_is_refused_unless_forced() {
    let repo = repo();
    let s = TestServer::start(repo.path()).await;
    s.set_policy("digits", json!({"stable": 1})).await;
    start(&s, 2).await;
    let by_hand = json!({"stable": 1, "candidate": {"version": 2, "weight": "90%"}});
    let (st, body) = s
        .admin(
            Method::PUT,
            "/admin/v1/models/digits/policy",
            Some(by_hand.clone()),
        )
        .await;
    assert_eq!(st, 409, "{body}");
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains("active rollout") && message.contains("force"),
        "{body}"
    );
    assert_eq!(
        policy(&s).await["candidate"]["weight"],
        "10%",
        "the rollout's weight holds"
    );

    let (st, body) = s
        .admin(
            Method::PUT,
            "/admin/v1/models/digits/policy?force=true",
            Some(by_hand),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(policy(&s).await["candidate"]["weight"], "90%");
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "aborted", "{r}");

    let log = decisions(&s).await;
    assert!(log.iter().any(|d| d.starts_with("started")), "{log:?}");
    assert!(
        log.iter().any(|d| d.contains("set by hand with force")),
        "{log:?}"
    );
    // without a rollout, a PUT is an event too
    s.set_policy("digits", json!({"stable": 1})).await;
    let log = decisions(&s).await;
    assert!(
        log.iter().any(|d| d == "traffic policy set by hand: stable 1"),
        "{log:?}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_keeps_the_allow_list_labels_and_other_shadows() {
    let repo = repo();
    let s = TestServer::start(repo.path()).await;
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "0%"},
               "allow_list": ["alice"], "pins": "allow-listed",
               "labels": {"beta": 3}, "shadow": {"version": 3, "rate": 0.5}}),
    )
    .await;
    let r = start(&s, 2).await;
    assert_eq!(r["keeps"]["allow_list"], json!(["alice"]), "{r}");
    assert_eq!(r["keeps"]["labels"], json!({"beta": 3}), "{r}");
    let p = policy(&s).await;
    assert_eq!(p["candidate"]["version"], 2, "{p}");
    assert_eq!(p["allow_list"], json!(["alice"]), "{p}");
    assert_eq!(p["pins"], "allow-listed", "{p}");
    assert_eq!(p["labels"]["beta"], 3, "{p}");
    assert_eq!(p["shadow"]["version"], 3, "{p}");
    let (st, r) = action(&s, "promote-full").await;
    assert_eq!(st, 200, "{r}");
    let p = policy(&s).await;
    assert_eq!(p["stable"], 2, "{p}");
    assert_eq!(p["labels"]["beta"], 3, "{p}");
    assert_eq!(p["pins"], "allow-listed", "{p}");
    assert_eq!(p["shadow"]["version"], 3, "{p}");
    s.stop().await;
}
