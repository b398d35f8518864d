//! "Trust no caller", control surfaces: the cases of issue 12 about who may
//! change what serves, against a real server with real models.
//!
//! 1. the repository API on the data port (unload, index) and a policy
//!    silently reset by an unload + load;
//! 6. forged and repeated feedback;
//! 7. loading a model from outside the repository;
//! 8. renaming yourself to escape the rate limit.

mod common;

use std::path::Path;

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

fn row() -> Vec<Vec<f64>> {
    vec![digits_samples()[0].0.clone()]
}

async fn post_with(s: &TestServer, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
    let mut req = s.client.post(s.url(path)).json(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = resp.text().await.unwrap();
    if status >= 400 {
        assert!(
            ct.starts_with("application/json"),
            "{path}: {status} {ct}: {text}"
        );
    }
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// Case 1: by default nobody reaches the repository API on the data port,
/// and digits keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case1_the_repository_api_is_off_on_the_data_port_by_default() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    for path in ["/v2/repository/models/digits/unload", "/v2/repository/index"] {
        let (st, body) = post_with(&s, path, &json!({}), None).await;
        assert_eq!(st, 404, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("--repository-api"),
            "{body}"
        );
    }
    let (st, body) = s.post("/v2/models/digits/infer", &digits_request(&row())).await;
    assert_eq!(st, 200, "digits still serves: {body}");
    assert_eq!(s.get("/ready").await.0, 200);
    let (_, meta) = s.get("/v2").await;
    assert!(!meta["extensions"]
        .as_array()
        .unwrap()
        .contains(&json!("model_repository")));
    s.stop().await;
}

/// Case 1: turned on, the repository API needs the admin token, and the
/// server refuses to expose it on a public data listener without one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case1_when_on_the_repository_api_needs_the_admin_token() {
    let repo = TestRepo::bundled(&["digits"]);
    let mut public = switchyard::Config::for_repository(repo.path());
    public.repository_api = true;
    public.listen = "0.0.0.0:0".parse().unwrap();
    let err = switchyard::start(public).await.err().expect("refused to start");
    assert!(err.to_string().contains("--repository-api"), "{err}");

    let s = TestServer::start_with(repo.path(), |c| {
        c.repository_api = true;
        c.admin_token = Some("s3cret".into());
    })
    .await;
    for token in [None, Some("wrong")] {
        let (st, body) = post_with(&s, "/v2/repository/models/digits/unload", &json!({}), token).await;
        assert_eq!(st, 401, "{token:?}: {body}");
    }
    assert_eq!(
        s.post("/v2/models/digits/infer", &digits_request(&row())).await.0,
        200
    );
    let (st, body) = post_with(&s, "/v2/repository/index", &json!({}), Some("s3cret")).await;
    assert_eq!(st, 200, "{body}");
    s.stop().await;
}

/// Case 1: an unload + load during a canary used to reset the policy to the
/// default while the rollout still said "progressing": now the unload is
/// refused (409) while a policy or a rollout routes to the model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case1_a_model_with_a_policy_or_a_rollout_is_not_unloaded() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.repository_api = true).await;
    let canary = json!({"stable": 1, "candidate": {"version": 2, "weight": "10%"}});
    s.set_policy("digits", canary.clone()).await;
    // a policy is one JSON object, not its fields in an array
    let (st, body) = s
        .admin(Method::PUT, "/admin/v1/models/digits/policy", Some(json!([1])))
        .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(
        body["error"],
        "invalid policy for model 'digits': request body must be a JSON object"
    );
    let (st, body) = post_with(&s, "/v2/repository/models/digits/unload", &json!({}), None).await;
    assert_eq!(st, 409, "{body}");
    assert!(body["error"].as_str().unwrap().contains("policy"), "{body}");
    let (_, policy) = s.admin(Method::GET, "/admin/v1/models/digits/policy", None).await;
    assert_eq!(policy["policy"]["candidate"]["version"], 2, "{policy}");
    assert_eq!(policy["source"], "admin");
    // an active rollout is refused the same way
    s.set_policy("digits", json!({"stable": 1})).await;
    let spec = json!({"strategy": "canary", "candidate": 2, "skip_validation": true,
                      "steps": [{"weight": "10%", "bake": "10m"}]});
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollouts", Some(spec))
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, body) = post_with(&s, "/v2/repository/models/digits/unload", &json!({}), None).await;
    assert_eq!(st, 409, "{body}");
    let (_, r) = s
        .admin(Method::GET, "/admin/v1/models/digits/rollout", None)
        .await;
    assert_eq!(r["phase"], "progressing", "{r}");
    let (_, policy) = s.admin(Method::GET, "/admin/v1/models/digits/policy", None).await;
    assert_eq!(
        policy["policy"]["candidate"]["weight"], "10%",
        "the rollout's weights hold: {policy}"
    );
    s.stop().await;
}

/// A copy of digits version 1 outside the repository.
fn outside_model(dir: &Path) -> String {
    let model = dir.join("evil");
    common::copy_dir(&common::root().join("models/digits/1"), &model.join("1"));
    model.display().to_string()
}

/// Case 7: admin loads name a model directory of the repository, nothing
/// else; errors do not tell which outside directories exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case7_models_load_only_from_inside_the_repository() {
    let repo = TestRepo::bundled(&["digits"]);
    let outside = tempfile::tempdir().unwrap();
    let evil = outside_model(outside.path());
    // a symbolic link inside the repository pointing out of it
    std::os::unix::fs::symlink(outside.path().join("evil"), repo.path().join("linked")).unwrap();
    let s = TestServer::start_with(repo.path(), |c| c.repository_api = true).await;
    let encoded = |p: &str| p.replace('/', "%2F");
    let missing = outside.path().join("missing").display().to_string();
    let mut answers = Vec::new();
    for name in [
        encoded(&evil),
        encoded(&missing),
        "..%2F..%2Ftmp".to_string(),
        "..hidden".to_string(),
        "digits%2F..%2F..%2Fetc".to_string(),
    ] {
        let path = format!("/admin/v1/models/{name}/versions/1/load");
        let (st, body) = s.admin(Method::POST, &path, None).await;
        assert_eq!(st, 400, "{path}: {body}");
        let msg = body["error"].as_str().unwrap().to_string();
        assert!(msg.contains("not a valid model name"), "{msg}");
        // what follows the echoed name is the same for every name
        answers.push(msg.rsplit_once("' is not").unwrap().1.to_string());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "existing and missing outside paths answer alike: {answers:?}"
    );
    // the link resolves outside: refused, and nothing serves from it
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/linked/versions/1/load", None)
        .await;
    assert_eq!(st, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("outside"), "{body}");
    let (st, body) = post_with(&s, "/v2/repository/models/linked/load", &json!({}), None).await;
    assert!(st == 400 || st == 404, "{st} {body}");
    for model in ["linked", "evil"] {
        assert_eq!(
            s.get(&format!("/v2/models/{model}")).await.0,
            404,
            "{model} is not served"
        );
    }
    assert!(s.snapshot().models.keys().all(|m| m == "digits"));
    s.stop().await;
}

/// Case 6: feedback needs a credential, takes one value per answered
/// request, and only values in range; refusals are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case6_feedback_is_attributable_once_and_in_range() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| {
        c.admin_token = Some("admin-s3cret".into());
        c.feedback_token = Some("fb-s3cret".into());
    })
    .await;
    let mut body = digits_request(&row());
    body["id"] = json!("req-1");
    assert_eq!(s.post("/v2/models/digits/infer", &body).await.0, 200);
    let feedback = "/v2/models/digits/feedback";
    let one = json!({"request_id": "req-1", "value": 1});
    // no credential, a wrong one: 401, for ids and users alike
    for (token, fb) in [
        (None, &one),
        (Some("guess"), &one),
        (None, &json!({"user_id": "u1", "value": 1})),
    ] {
        let (st, b) = post_with(&s, feedback, fb, token).await;
        assert_eq!(st, 401, "{b}");
        assert!(b.get("version").is_none(), "nothing about routing leaks: {b}");
    }
    // out of range or not finite: refused, and the id is still unused
    for value in [json!(-1e300), json!(2.0), json!(-0.5)] {
        let (st, b) = post_with(
            &s,
            feedback,
            &json!({"request_id": "req-1", "value": value}),
            Some("fb-s3cret"),
        )
        .await;
        assert_eq!(st, 422, "{value}: {b}");
    }
    let (st, b) = post_with(
        &s,
        feedback,
        &json!({"request_id": "req-1", "value": "1e999"}),
        Some("fb-s3cret"),
    )
    .await;
    assert_eq!(st, 400, "{b}");
    // an array is not feedback (serde alone would read it field by field)
    let (st, b) = post_with(&s, feedback, &json!(["req-1", 1]), Some("fb-s3cret")).await;
    assert_eq!(st, 400, "{b}");
    assert_eq!(
        b["error"],
        "invalid feedback for model 'digits': request body must be a JSON object",
    );
    // the feedback token and the admin token both work, once per answer
    let (st, b) = post_with(&s, feedback, &one, Some("fb-s3cret")).await;
    assert_eq!(st, 200, "{b}");
    assert_eq!(b["version"], 1);
    for token in ["fb-s3cret", "admin-s3cret"] {
        let (st, b) = post_with(&s, feedback, &one, Some(token)).await;
        assert_eq!(st, 409, "{b}");
    }
    // an id this server never answered
    let (st, b) = post_with(
        &s,
        feedback,
        &json!({"request_id": "made-up", "value": 1}),
        Some("admin-s3cret"),
    )
    .await;
    assert_eq!(st, 404, "{b}");
    // the window holds exactly the one accepted value
    let summary = s.snapshot().models["digits"].versions[&1]
        .runtime
        .as_ref()
        .unwrap()
        .window()
        .summary(std::time::UNIX_EPOCH);
    assert_eq!(summary.feedback_count, 1, "{summary:?}");
    assert_eq!(summary.feedback_mean, 1.0);
    for (reason, at_least) in [
        ("unauthorized", 3.0),
        ("out_of_range", 3.0),
        ("duplicate", 2.0),
        ("unknown_id", 1.0),
    ] {
        let n = s
            .metric(&format!(
                "switchyard_feedback_rejected_total{{reason=\"{reason}\"}}"
            ))
            .await;
        assert!(n >= at_least, "{reason}: {n}");
    }
    s.stop().await;
}

/// Case 8: twenty user ids from one client share that client's budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case8_renaming_yourself_does_not_buy_a_new_rate_budget() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.rate_limit = Some("5/60s".parse().unwrap())).await;
    let mut statuses = Vec::new();
    for i in 0..20 {
        let resp = s
            .client
            .post(s.url("/v2/models/digits/infer"))
            .header("x-user-id", format!("user-{i}"))
            .json(&digits_request(&row()))
            .send()
            .await
            .unwrap();
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|&&st| st == 200).count(),
        5,
        "{statuses:?}"
    );
    assert!(statuses[5..].iter().all(|&st| st == 429), "{statuses:?}");
    // V2 parameters.user_id is no way around it either
    let mut body = digits_request(&row());
    body["parameters"] = json!({"user_id": "fresh"});
    assert_eq!(s.post("/v2/models/digits/infer", &body).await.0, 429);
    s.stop().await;
}
