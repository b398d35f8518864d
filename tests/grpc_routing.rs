//! Routing over gRPC follows the same traffic policy as HTTP: a user key
//! from `x-user-id` metadata or `parameters.user_id` lands on the same
//! version over both protocols, a canary split holds its weight, pins and
//! labels work, a shadow sees gRPC traffic, request ids take feedback, and
//! the versions' analysis windows count gRPC calls.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

use common::{digits_grpc, digits_request, digits_samples, with_metadata, TestRepo, TestServer};
use reqwest::Method;
use serde_json::{json, Value};
use switchyard::grpc::proto::infer_parameter::ParameterChoice;
use switchyard::grpc::proto::{InferParameter, ModelInferRequest};

fn digits_repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config(
        "digits",
        "[execution]\nmax_batch_size = 16\n[versions]\npolicy = \"all\"\n",
    );
    repo
}

/// (x-model-version, x-route) of a gRPC call.
async fn grpc_route(c: &mut common::GrpcClient, req: tonic::Request<ModelInferRequest>) -> (String, String) {
    let resp = c.model_infer(req).await.unwrap();
    let md = resp.metadata();
    let get = |k: &str| md.get(k).unwrap().to_str().unwrap().to_string();
    let (version, route) = (get("x-model-version"), get("x-route"));
    assert_eq!(
        resp.into_inner().model_version,
        version,
        "model_version is the version that answered"
    );
    (version, route)
}

/// (x-model-version, x-route) of an HTTP V2 call.
async fn http_route(s: &TestServer, row: &[f64], headers: &[(&str, &str)]) -> (String, String) {
    let mut req = s
        .client
        .post(s.url("/v2/models/digits/infer"))
        .json(&digits_request(&[row.to_vec()]));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = |k: &str| resp.headers()[k].to_str().unwrap().to_string();
    (h("x-model-version"), h("x-route"))
}

fn user_param(user: &str) -> InferParameter {
    InferParameter {
        parameter_choice: Some(ParameterChoice::StringParam(user.into())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_the_same_version_over_grpc_and_http_and_the_split_holds() {
    let repo = digits_repo();
    let s = TestServer::start(repo.path()).await;
    let mut c = s.grpc_client().await;
    let row = digits_samples()[0].0.clone();
    let one = || digits_grpc(std::slice::from_ref(&row), true);
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": "20%"}, "salt": "grpc-canary"}),
    )
    .await;
    const USERS: usize = 500;
    let mut by_version = BTreeMap::<String, usize>::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        let over_grpc = grpc_route(&mut c, with_metadata(one(), &[("x-user-id", &user)])).await;
        let over_http = http_route(&s, &row, &[("x-user-id", &user)]).await;
        assert_eq!(over_grpc, over_http, "{user}");
        let want = if over_grpc.0 == "2" { "sticky" } else { "stable" };
        assert_eq!(over_grpc.1, want, "{user}");
        if u % 10 == 0 {
            // parameters.user_id is the same key
            let mut req = one();
            req.parameters.insert("user_id".into(), user_param(&user));
            let by_param = grpc_route(&mut c, tonic::Request::new(req)).await;
            assert_eq!(by_param, over_grpc, "{user} by parameters.user_id");
        }
        *by_version.entry(over_grpc.0).or_default() += 1;
    }
    let share = by_version.get("2").copied().unwrap_or(0) as f64 / USERS as f64;
    assert!(
        (share - 0.20).abs() < 0.05,
        "candidate share {share} for weight 20%: {by_version:?}"
    );

    // anonymous calls: weighted, deterministic at the extremes
    for (weight, version) in [(100, "2"), (0, "1")] {
        s.set_policy(
            "digits",
            json!({"stable": 1, "candidate": {"version": 2, "weight": weight}}),
        )
        .await;
        for _ in 0..20 {
            let (v, route) = grpc_route(&mut c, tonic::Request::new(one())).await;
            let want = if weight == 0 { "stable" } else { "weighted" };
            assert_eq!((v.as_str(), route.as_str()), (version, want), "weight {weight}");
        }
    }

    // allow-list and pins through metadata
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 2, "weight": 0},
               "allow_list": ["alice"], "pins": "allow-listed", "labels": {"gold": 2}}),
    )
    .await;
    let route = |md: &[(&str, &str)]| with_metadata(one(), md);
    assert_eq!(
        grpc_route(&mut c, route(&[("x-user-id", "alice")])).await,
        ("2".into(), "allow-list".into())
    );
    assert_eq!(
        grpc_route(&mut c, route(&[("x-user-id", "alice"), ("x-model-version", "1")])).await,
        ("1".into(), "pin".into())
    );
    assert_eq!(
        grpc_route(&mut c, route(&[("x-user-id", "bob"), ("x-model-version", "2")])).await,
        ("1".into(), "stable".into()),
        "bob may not pin"
    );
    let mut gold = one();
    gold.model_version = "gold".into();
    assert_eq!(
        grpc_route(&mut c, tonic::Request::new(gold)).await,
        ("2".into(), "label".into())
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_windows_and_feedback_see_grpc_calls() {
    let repo = digits_repo();
    let s = TestServer::start_with(repo.path(), |c| c.shadow_queue = 10_000).await;
    let mut c = s.grpc_client().await;
    s.set_policy(
        "digits",
        json!({"stable": 1, "shadow": {"version": 2, "rate": 1.0}}),
    )
    .await;
    let snapshot = s.snapshot();
    let window = |v: u64| {
        snapshot.models["digits"].versions[&v]
            .runtime
            .as_ref()
            .unwrap()
            .window()
            .summary(UNIX_EPOCH)
            .requests
    };
    let before = window(1);
    let samples = digits_samples();
    const CALLS: usize = 40;
    for (i, (row, _)) in samples.iter().take(CALLS).enumerate() {
        let mut req = digits_grpc(std::slice::from_ref(row), i % 2 == 0);
        req.id = format!("g{i}");
        let (v, route) = grpc_route(&mut c, tonic::Request::new(req)).await;
        assert_eq!((v.as_str(), route.as_str()), ("1", "stable"));
    }
    // the primary's analysis window counts the calls
    assert_eq!(window(1) - before, CALLS as u64);
    // every call was mirrored to the shadow and compared
    let deadline = Instant::now() + Duration::from_secs(60);
    let stats = loop {
        let (_, body) = s.admin(Method::GET, "/admin/v1/models/digits/shadow", None).await;
        let stats = body["pairs"][0].clone();
        let done = stats["compared"].as_u64().unwrap_or(0) + stats["dropped"].as_u64().unwrap_or(0);
        if done >= CALLS as u64 {
            break stats;
        }
        assert!(Instant::now() < deadline, "shadow comparisons stalled: {body}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(
        (stats["compared"].as_u64(), stats["dropped"].as_u64()),
        (Some(CALLS as u64), Some(0)),
        "{stats}"
    );
    assert_eq!(stats["shadow_version"], 2);
    if let Some(d) = stats["recent_disagreements"].as_array().and_then(|a| a.first()) {
        assert!(d["request_id"].as_str().unwrap().starts_with('g'), "{d}");
    }
    // feedback names a gRPC call by its id
    let feedback = |id: &str| {
        s.client
            .post(s.url("/v2/models/digits/feedback"))
            .json(&json!({"request_id": id, "value": 1}))
            .send()
    };
    assert_eq!(feedback("g7").await.unwrap().status(), 200);
    let unknown = feedback("never-sent").await.unwrap();
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("never-sent"), "{body}");
    s.stop().await;
}
