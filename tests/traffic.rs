//! Traffic policy over HTTP: admin API, routing headers, labels, pins,
//! allow-lists, shadow mirroring and rollback, with real models.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::{digits_request, digits_samples, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};

/// digits with versions 1 and 2 served and no stable label.
fn digits_repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config(
        "digits",
        "[execution]\nmax_batch_size = 16\n[versions]\npolicy = \"all\"\n",
    );
    repo
}

async fn predict(
    s: &TestServer,
    path: &str,
    row: &[f64],
    headers: &[(&str, &str)],
) -> (u16, String, String, Value) {
    let mut req = s.client.post(s.url(path)).json(&digits_request(&[row.to_vec()]));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let h = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (version, route) = (h("x-model-version"), h("x-route"));
    (status, version, route, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_needs_the_token_and_round_trips_policies() {
    let repo = digits_repo();
    let s = TestServer::start_with(repo.path(), |c| {
        c.admin_token = Some("s3cret".into());
        c.repository_api = true;
    })
    .await;
    // 401 without token or with a wrong one, JSON error
    let resp = s
        .client
        .get(format!("{}/admin/v1/models", s.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("token"));
    let resp = s
        .client
        .get(format!("{}/admin/v1/models", s.admin))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // the repository API on the data listener is guarded too
    let resp = s.client.post(s.url("/v2/repository/index")).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // 200 with the token: models, versions, states, labels, policy
    let (st, body) = s.admin(Method::GET, "/admin/v1/models", None).await;
    assert_eq!(st, 200, "{body}");
    let digits = &body["models"][0];
    assert_eq!(digits["name"], "digits");
    assert_eq!(
        digits["versions"],
        json!([{"version": 1, "state": "READY", "reason": ""}, {"version": 2, "state": "READY", "reason": ""}])
    );
    assert_eq!(digits["policy_source"], "default");
    assert_eq!(digits["policy"]["stable"], 2);

    // put → get round trip
    let policy = json!({
        "stable": 1,
        "candidate": {"version": 2, "weight": "10%"},
        "sticky": true, "salt": "rollout-7",
        "allow_list": ["alice"], "pins": "allow-listed",
        "shadow": {"version": 2, "rate": 0.5},
        "labels": {"gold": 1}
    });
    s.set_policy("digits", policy.clone()).await;
    let (st, got) = s.admin(Method::GET, "/admin/v1/models/digits/policy", None).await;
    assert_eq!(st, 200);
    assert_eq!(got["policy"], policy);
    assert_eq!(got["source"], "admin");
    let (_, model) = s.admin(Method::GET, "/admin/v1/models/digits", None).await;
    assert_eq!(model["labels"]["gold"], 1);
    assert_eq!(model["labels"]["candidate"], 2);
    assert_eq!(model["labels"]["stable"], 1);

    // invalid policies → 400, the old one stays in force
    for (bad, needle) in [
        (
            json!({"stable": 1, "candidate": {"version": 2, "weight": "100.01%"}}),
            "100.01%",
        ),
        (
            json!({"stable": 1, "candidate": {"version": 7, "weight": "0.1%"}}),
            "7",
        ),
        (
            json!({"stable": 1, "shadow": {"version": 1, "rate": 1.0}}),
            "shadow",
        ),
        (json!({"stable": 1, "labels": {"gold": 9}}), "gold"),
        (json!({"stable": 1, "weight": "0.03%"}), "weight"),
        (json!({"candidate": {"version": 2, "weight": "0.01%"}}), "stable"),
    ] {
        let (st, body) = s
            .admin(Method::PUT, "/admin/v1/models/digits/policy", Some(bad.clone()))
            .await;
        assert_eq!(st, 400, "{bad} → {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{body}");
        let (_, got) = s.admin(Method::GET, "/admin/v1/models/digits/policy", None).await;
        assert_eq!(got["policy"], policy, "old policy kept after {bad}");
    }
    let (st, _) = s.admin(Method::GET, "/admin/v1/models/nope", None).await;
    assert_eq!(st, 404);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_follow_the_policy_and_explain_their_route() {
    let repo = digits_repo();
    let s = TestServer::start(repo.path()).await;
    let row = digits_samples()[0].0.clone();
    let infer = "/v2/models/digits/infer";

    // all on stable 1
    s.set_policy("digits", json!({"stable": 1})).await;
    let (st, v, route, body) = predict(&s, infer, &row, &[]).await;
    assert_eq!((st, v.as_str(), route.as_str()), (200, "1", "stable"));
    assert_eq!(body["model_version"], "1");

    // candidate at 100%: users sticky, anonymous weighted
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "100%"}}),
    )
    .await;
    let (_, v, route, body) = predict(&s, infer, &row, &[("x-user-id", "u1")]).await;
    assert_eq!((v.as_str(), route.as_str()), ("2", "sticky"));
    assert_eq!(
        body["model_version"], "2",
        "model_version is the version that answered"
    );
    let (_, v, route, _) = predict(&s, infer, &row, &[]).await;
    assert_eq!((v.as_str(), route.as_str()), ("2", "weighted"));

    // 50%: each user always lands on the same version; both versions used
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "50%"}, "salt": "s1"}),
    )
    .await;
    let mut seen = BTreeSet::new();
    for u in 0..40 {
        let user = format!("user-{u}");
        let (_, first, _, _) = predict(&s, infer, &row, &[("x-user-id", &user)]).await;
        for _ in 0..3 {
            let (_, again, _, _) = predict(&s, infer, &row, &[("x-user-id", &user)]).await;
            assert_eq!(first, again, "{user} is sticky");
        }
        seen.insert(first);
    }
    assert_eq!(seen.len(), 2, "both versions serve some users");
    // V2 `parameters.user_id` is the same key as the header
    for u in 0..20 {
        let user = format!("user-{u}");
        let (_, by_header, route, _) = predict(&s, infer, &row, &[("x-user-id", &user)]).await;
        let mut body = digits_request(std::slice::from_ref(&row));
        body["parameters"] = json!({"user_id": user});
        let resp = s.client.post(s.url(infer)).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-route"].to_str().unwrap(), route);
        assert_eq!(
            resp.headers()["x-model-version"].to_str().unwrap(),
            by_header,
            "{user}"
        );
    }

    // allow-list and pins
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "0%"},
               "allow_list": ["alice"], "pins": "allow-listed"}),
    )
    .await;
    let (_, v, route, _) = predict(&s, infer, &row, &[("x-user-id", "alice")]).await;
    assert_eq!((v.as_str(), route.as_str()), ("2", "allow-list"));
    let (_, v, route, _) = predict(&s, infer, &row, &[("x-user-id", "bob")]).await;
    assert_eq!((v.as_str(), route.as_str()), ("1", "stable"));
    let (_, v, route, _) = predict(
        &s,
        infer,
        &row,
        &[("x-user-id", "alice"), ("x-model-version", "1")],
    )
    .await;
    assert_eq!((v.as_str(), route.as_str()), ("1", "pin"));
    let (_, v, route, _) = predict(&s, infer, &row, &[("x-user-id", "bob"), ("x-model-version", "2")]).await;
    assert_eq!((v.as_str(), route.as_str()), ("1", "stable"), "bob may not pin");

    // labels from the policy, in V2 paths
    s.set_policy("digits", json!({"stable": 2, "labels": {"gold": 1}}))
        .await;
    let (_, v, route, _) = predict(&s, "/v2/models/digits/versions/gold/infer", &row, &[]).await;
    assert_eq!((v.as_str(), route.as_str()), ("1", "label"));
    let (_, v, _, _) = predict(&s, "/v2/models/digits/versions/stable/infer", &row, &[]).await;
    assert_eq!(v, "2");
    let (st, _, _, _) = predict(&s, "/v2/models/digits/versions/candidate/infer", &row, &[]).await;
    assert_eq!(st, 404, "no candidate label without a candidate");
    // explicit versions win over the policy
    let (_, v, route, _) = predict(&s, "/v2/models/digits/versions/1/infer", &row, &[]).await;
    assert_eq!((v.as_str(), route.as_str()), ("1", "explicit"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_agreement_matches_an_offline_comparison() {
    let repo = digits_repo();
    // a queue that holds every copy: this test is about the comparison
    let s = Arc::new(TestServer::start_with(repo.path(), |c| c.shadow_queue = 10_000).await);
    let samples = digits_samples();
    // offline: each version's label for every sample, through explicit versions
    let mut offline_agree = 0;
    let mut labels1 = Vec::new();
    for (row, _) in &samples {
        let (_, _, _, a) = predict(&s, "/v2/models/digits/versions/1/infer", row, &[]).await;
        let (_, _, _, b) = predict(&s, "/v2/models/digits/versions/2/infer", row, &[]).await;
        let (la, lb) = (&a["outputs"][0]["data"][0], &b["outputs"][0]["data"][0]);
        if la == lb {
            offline_agree += 1;
        }
        labels1.push(la.clone());
    }
    s.set_policy(
        "digits",
        json!({"stable": 1, "shadow": {"version": 2, "rate": 1.0}}),
    )
    .await;
    for (i, (row, _)) in samples.iter().enumerate() {
        let (st, v, _, body) = predict(
            &s,
            "/v2/models/digits/infer",
            row,
            &[("x-request-id", &format!("r{i}"))],
        )
        .await;
        assert_eq!((st, v.as_str()), (200, "1"));
        assert_eq!(body["outputs"][0]["data"][0], labels1[i], "the primary answers");
    }
    // wait for the shadow queue to drain
    let mut stats = Value::Null;
    for _ in 0..200 {
        let (_, body) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
        stats = body["pairs"][0].clone();
        if stats["compared"].as_u64().unwrap_or(0) + stats["dropped"].as_u64().unwrap_or(0)
            >= samples.len() as u64
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(stats["dropped"], 0, "{stats}");
    assert_eq!(stats["compared"], samples.len(), "{stats}");
    assert_eq!(stats["agreed"], offline_agree, "{stats}");
    assert_eq!(stats["disagreed"], samples.len() - offline_agree);
    assert!(stats["max_abs_diff"].as_f64().unwrap() > 0.0);
    let recent = stats["recent_disagreements"].as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() <= 50);
    let d = &recent[0];
    assert!(d["request_id"].as_str().unwrap().starts_with('r'));
    assert!(d["primary"]["label"]["data"].is_array() && d["shadow"]["probabilities"]["shape"].is_array());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_or_slow_shadow_never_touches_the_primary() {
    let repo = digits_repo();
    // version 3 fails inside ORT on pixel values > 100; version 4 is the
    // heavy mlp_wide with the same signature
    repo.add_version("tests/fixtures/models/digits_faulty/1", "digits", 3);
    repo.add_version("models/mlp_wide/1", "digits", 4);
    let s = Arc::new(TestServer::start(repo.path()).await);
    let bad_row = vec![200.0; 64];

    s.set_policy(
        "digits",
        json!({"stable": 1, "shadow": {"version": 3, "rate": 1.0}}),
    )
    .await;
    for _ in 0..20 {
        let (st, v, _, _) = predict(&s, "/v2/models/digits/infer", &bad_row, &[]).await;
        assert_eq!((st, v.as_str()), (200, "1"));
    }
    let mut stats = Value::Null;
    for _ in 0..100 {
        let (_, body) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
        stats = body["pairs"][0].clone();
        if stats["shadow_errors"] == 20 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(stats["shadow_errors"], 20, "{stats}");
    assert_eq!(stats["compared"], 0);

    drop(s);

    // a slow shadow (mlp_wide) behind a queue of one: bursts overflow it,
    // drops are counted and every primary answers 200 from version 1
    let s = Arc::new(TestServer::start_with(repo.path(), |c| c.shadow_queue = 1).await);
    let row = digits_samples()[0].0.clone();
    s.set_policy(
        "digits",
        json!({"stable": 1, "shadow": {"version": 4, "rate": 1.0}}),
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        let row = row.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let (st, v, _, _) = predict(&s, "/v2/models/digits/infer", &row, &[]).await;
                assert_eq!((st, v.as_str()), (200, "1"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, body) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
    let pair = body["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["shadow_version"] == 4)
        .cloned()
        .unwrap();
    let dropped = pair["dropped"].as_u64().unwrap();
    assert!(
        dropped > 0,
        "queue overflow is counted (compared {})",
        pair["compared"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_is_a_policy_swap_and_protects_the_old_stable() {
    let repo = digits_repo();
    let s = TestServer::start(repo.path()).await;
    let row = digits_samples()[0].0.clone();
    s.set_policy("digits", json!({"stable": 1})).await;
    s.set_policy("digits", json!({"stable": 2})).await;
    let (_, v, _, _) = predict(&s, "/v2/models/digits/infer", &row, &[]).await;
    assert_eq!(v, "2");
    // the replaced stable stays loaded for the rollback window
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/1/unload", None)
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollback", None)
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["policy"]["stable"], 1);
    let (_, v, _, _) = predict(&s, "/v2/models/digits/infer", &row, &[]).await;
    assert_eq!(v, "1");
    s.stop().await;

    // with a zero window the old stable can go, and rollback is refused
    let s = TestServer::start_with(repo.path(), |c| c.rollback_window = std::time::Duration::ZERO).await;
    s.set_policy("digits", json!({"stable": 1})).await;
    s.set_policy("digits", json!({"stable": 2})).await;
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/rollback", None)
        .await;
    assert_eq!(st, 409, "{body}");
    let (st, body) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/1/unload", None)
        .await;
    assert_eq!(st, 200, "{body}");
    let (st, _) = s
        .admin(Method::POST, "/admin/v1/models/digits/versions/2/unload", None)
        .await;
    assert_eq!(st, 409, "the stable version cannot be unloaded");
    s.stop().await;
}
