//! Protection over gRPC with real models, as over HTTP: deadlines (the
//! model's, lowered by `grpc-timeout`) → DEADLINE_EXCEEDED, rate limits
//! (shared with HTTP) → RESOURCE_EXHAUSTED, an open circuit breaker →
//! fallback or UNAVAILABLE, `--max-in-flight` → UNAVAILABLE; retry info in
//! the status details, `grpc-retry-pushback-ms` and `retry-after`.

mod common;

use std::time::Duration;

use common::{digits_grpc, digits_request, digits_samples, with_metadata, TestRepo, TestServer};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use switchyard::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use tonic::Code;
use tonic_types::StatusExt;

/// A client of the generated stub over a plain HTTP/2 connection: unlike
/// tonic's channel it does not enforce `grpc-timeout` itself.
fn bare_client(
    url: &str,
) -> GrpcInferenceServiceClient<hyper_util::client::legacy::Client<HttpConnector, tonic::body::Body>> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    GrpcInferenceServiceClient::with_origin(client, url.parse().unwrap())
}

fn rows(n: usize) -> Vec<Vec<f64>> {
    digits_samples().into_iter().take(n).map(|(r, _)| r).collect()
}

fn meta<'a>(status: &'a tonic::Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_are_the_models_lowered_by_grpc_timeout() {
    let repo = TestRepo::bundled(&["mlp_wide"]);
    repo.add_version("models/mlp_wide/1", "slow", 1);
    repo.config("slow", "[execution]\ntimeout_ms = 1\n");
    let s = TestServer::start(repo.path()).await;
    let mut c = s.grpc_client().await;
    // 256 rows of the wide MLP take well over a millisecond
    let rows: Vec<Vec<f64>> = (0..256).map(|i| digits_samples()[i % 20].0.clone()).collect();
    let wide = |model: &str, n: usize| {
        let mut req = digits_grpc(&rows[..n], true);
        req.model_name = model.into();
        req
    };
    let status = c.model_infer(wide("slow", 256)).await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::DeadlineExceeded,
        "the model's timeout_ms: {status:?}"
    );
    assert!(
        status.message().contains("within its deadline of 1 ms"),
        "{status:?}"
    );
    assert_eq!(meta(&status, "x-model-version"), Some("1"));
    // grpc-timeout lowers the deadline. tonic's client gives up on its own
    // when the deadline passes, so this goes through a client that only
    // sends the header: the answer is the server's.
    let mut bare = bare_client(&s.grpc);
    let status = bare
        .model_infer(with_metadata(wide("mlp_wide", 256), &[("grpc-timeout", "1m")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        status
            .message()
            .contains("model 'mlp_wide' version 1 did not answer within the 1 ms the request allowed"),
        "{status:?}"
    );
    // ... but never raises it
    let status = bare
        .model_infer(with_metadata(wide("slow", 256), &[("grpc-timeout", "60S")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    let ok = bare
        .model_infer(with_metadata(wide("mlp_wide", 1), &[("grpc-timeout", "30S")]))
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    // tonic's own client deadline ends the call either way
    let mut req = tonic::Request::new(wide("mlp_wide", 256));
    req.set_timeout(Duration::from_millis(1));
    let status = c.model_infer(req).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    // the model's own missed deadlines count as its failures
    let text = s.metrics().await;
    assert!(
        text.lines().any(|l| l.starts_with("switchyard_requests_total{")
            && l.contains("model=\"slow\"")
            && l.contains("protocol=\"grpc\"")
            && l.contains("status=\"5xx\"")),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_resource_exhausted_and_shared_with_http() {
    let repo = TestRepo::bundled(&["digits"]);
    // user keys count as the caller only from a trusted proxy (here: the test)
    let s = TestServer::start_with(repo.path(), |c| {
        c.rate_limit = Some("3/60s".parse().unwrap());
        c.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let mut c = s.grpc_client().await;
    let row = rows(1);
    // alice spends two of her three over HTTP, one over gRPC
    for _ in 0..2 {
        let resp = s
            .client
            .post(s.url("/v2/models/digits/infer"))
            .header("x-user-id", "alice")
            .json(&digits_request(&row))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let alice = || with_metadata(digits_grpc(&row, true), &[("x-user-id", "alice")]);
    assert!(c.model_infer(alice()).await.is_ok());
    let status = c.model_infer(alice()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("user 'alice' is over the rate limit"),
        "{status:?}"
    );
    // retry info, three ways
    let secs: u64 = meta(&status, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&secs), "retry-after {secs}");
    assert_eq!(
        meta(&status, "grpc-retry-pushback-ms"),
        Some(&*(secs * 1000).to_string())
    );
    let retry = status
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(secs)));
    // parameters.user_id is the same key
    let mut by_param = digits_grpc(&row, true);
    by_param.parameters.insert(
        "user_id".into(),
        switchyard::grpc::proto::InferParameter {
            parameter_choice: Some(
                switchyard::grpc::proto::infer_parameter::ParameterChoice::StringParam("alice".into()),
            ),
        },
    );
    assert_eq!(
        c.model_infer(by_param).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // bob is unaffected
    let bob = with_metadata(digits_grpc(&row, true), &[("x-user-id", "bob")]);
    assert!(c.model_infer(bob).await.is_ok());
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_rate_limited_total{model=\"digits\"} 2"),
        "{text}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_breaker_is_unavailable_with_retry_info_and_falls_back() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    // version 3 fails inside ORT when any pixel is > 100
    repo.add_version("tests/fixtures/models/digits_faulty/1", "digits", 3);
    let s = TestServer::start_with(repo.path(), |c| {
        c.breaker_failures = 3;
        c.breaker_open_secs = 30;
    })
    .await;
    s.set_policy(
        "digits",
        json!({"stable": 1, "candidate": {"version": 3, "weight": "100%"}}),
    )
    .await;
    let mut c = s.grpc_client().await;
    let bad = vec![vec![200.0; 64]];
    for _ in 0..3 {
        let status = c.model_infer(digits_grpc(&bad, true)).await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert_eq!(meta(&status, "x-model-version"), Some("3"));
        assert!(!status.message().contains("onnx"), "no ORT internals: {status:?}");
    }
    assert!(s.server.as_ref().unwrap().state.breaker_open("digits", 3));
    // versionless calls fall back to stable
    let resp = c.model_infer(digits_grpc(&bad, true)).await.unwrap();
    assert_eq!(resp.metadata().get("x-route").unwrap(), "fallback");
    assert_eq!(resp.metadata().get("x-model-version").unwrap(), "1");
    // the failing version named explicitly: UNAVAILABLE, retry after the open period
    let mut req = digits_grpc(&rows(1), true);
    req.model_version = "3".into();
    let status = c.model_infer(req).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("circuit breaker"), "{status:?}");
    assert_eq!(meta(&status, "retry-after"), Some("30"));
    assert_eq!(meta(&status, "grpc-retry-pushback-ms"), Some("30000"));
    let retry = status
        .get_error_details()
        .retry_info()
        .cloned()
        .expect("RetryInfo");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(30)));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_max_in_flight_are_shed() {
    let repo = TestRepo::bundled(&["mlp_wide"]);
    let s = TestServer::start_with(repo.path(), |c| c.max_in_flight = 1).await;
    let c = s.grpc_client().await;
    let rows: Vec<Vec<f64>> = (0..256).map(|i| digits_samples()[i % 20].0.clone()).collect();
    let mut req = digits_grpc(&rows, true);
    req.model_name = "mlp_wide".into();
    // 16 calls at once on one connection: the first holds the only permit
    // for the tens of milliseconds 256 rows take; the others arrive meanwhile
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (mut c, req) = (c.clone(), req.clone());
            tokio::spawn(async move { c.model_infer(req).await })
        })
        .collect();
    let (mut ok, mut shed) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                assert!(status.message().contains("overloaded"), "{status:?}");
                assert_eq!(meta(&status, "retry-after"), Some("1"));
                shed += 1;
            }
        }
    }
    assert!(ok >= 1 && shed >= 1, "{ok} served, {shed} shed");
    let text = s.metrics().await;
    assert!(
        text.contains("switchyard_load_shed_total{reason=\"in_flight\"}"),
        "{text}"
    );
    s.stop().await;
}
