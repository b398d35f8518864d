//! `grpc.health.v1` reports readiness: NOT_SERVING while no model version
//! can serve, SERVING once one is READY, NOT_SERVING from the moment
//! shutdown begins while calls keep being served through the drain; Watch
//! streams follow and end with the drain. Server reflection lists the
//! services.

mod common;

use std::time::{Duration, Instant};

use common::{copy_dir, digits_grpc, digits_samples, root, TestRepo, TestServer};
use switchyard::grpc::proto::grpc_inference_service_server::SERVICE_NAME;
use switchyard::grpc::proto::ServerReadyRequest;
use tonic::transport::Channel;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn channel(s: &TestServer) -> Channel {
    tonic::transport::Endpoint::from_shared(s.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn ask(service: &str) -> HealthCheckRequest {
    HealthCheckRequest {
        service: service.into(),
    }
}

/// `Check` of the overall server and of the inference service (always equal).
async fn check(health: &mut HealthClient<Channel>) -> ServingStatus {
    let overall = health.check(ask("")).await.unwrap().into_inner().status();
    let service = health
        .check(ask(SERVICE_NAME))
        .await
        .unwrap()
        .into_inner()
        .status();
    assert_eq!(overall, service);
    overall
}

/// The next status a Watch stream sends, within `within`.
async fn next(
    watch: &mut tonic::Streaming<tonic_health::pb::HealthCheckResponse>,
    within: Duration,
) -> ServingStatus {
    tokio::time::timeout(within, watch.message())
        .await
        .expect("a health update in time")
        .unwrap()
        .expect("the stream is open")
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_serving_until_a_model_is_ready() {
    // nothing routable yet: readiness fails ("no model version is ready")
    let repo = TestRepo::empty();
    let s = TestServer::start_with(repo.path(), |c| c.repository_poll_secs = 1).await;
    let ch = channel(&s).await;
    let mut health = HealthClient::new(ch.clone());
    assert_eq!(check(&mut health).await, ServingStatus::NotServing);
    let unknown = health.check(ask("no.such.Service")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let mut oip = common::GrpcClient::new(ch);
    assert!(
        !oip.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let mut watch = health.watch(ask("")).await.unwrap().into_inner();
    assert_eq!(
        next(&mut watch, Duration::from_secs(5)).await,
        ServingStatus::NotServing
    );

    // publish a model: the poll loads it, readiness turns, Watch follows
    let staging = tempfile::tempdir().unwrap();
    copy_dir(&root().join("models/digits"), &staging.path().join("digits"));
    std::fs::rename(staging.path().join("digits"), repo.path().join("digits")).unwrap();
    assert_eq!(
        next(&mut watch, Duration::from_secs(60)).await,
        ServingStatus::Serving
    );
    assert_eq!(check(&mut health).await, ServingStatus::Serving);
    assert!(
        oip.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_turns_health_off_at_once_and_keeps_serving() {
    const DRAIN: Duration = Duration::from_secs(2);
    let repo = TestRepo::bundled(&["digits"]);
    let mut s = TestServer::start_with(repo.path(), |c| c.drain_secs = DRAIN.as_secs()).await;
    let ch = channel(&s).await;
    let mut health = HealthClient::new(ch.clone());
    let mut oip = common::GrpcClient::new(ch);
    assert_eq!(check(&mut health).await, ServingStatus::Serving);
    let mut watch = health.watch(ask(SERVICE_NAME)).await.unwrap().into_inner();
    assert_eq!(
        next(&mut watch, Duration::from_secs(5)).await,
        ServingStatus::Serving
    );

    let server = s.server.take().unwrap();
    let state = server.state.clone();
    let began = Instant::now();
    state.begin_shutdown();
    let stopped = tokio::spawn(server.wait());
    // at once: Check says NOT_SERVING and Watch streams are told
    assert_eq!(check(&mut health).await, ServingStatus::NotServing);
    assert_eq!(
        next(&mut watch, Duration::from_secs(1)).await,
        ServingStatus::NotServing
    );
    // calls are still served through the drain
    let row = vec![digits_samples()[0].0.clone()];
    let mut served = 0;
    while began.elapsed() + Duration::from_millis(500) < DRAIN {
        let resp = oip.model_infer(digits_grpc(&row, true)).await;
        assert!(resp.is_ok(), "a call during the drain failed: {resp:?}");
        served += 1;
    }
    assert!(served > 0);
    // the Watch stream ends with the drain, so it does not hold the server open
    let end = tokio::time::timeout(Duration::from_secs(10), watch.message())
        .await
        .expect("the Watch stream ends after the drain");
    assert!(matches!(end, Ok(None) | Err(_)), "{end:?}");
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .expect("the server stops after the drain")
        .unwrap()
        .unwrap();
    assert!(began.elapsed() >= DRAIN, "stopped before the drain ended");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_every_service() {
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut reflect = ServerReflectionClient::new(channel(&s).await);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflect
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![list]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("no service list")
    };
    let mut names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "inference.GRPCInferenceService"
        ]
    );
    s.stop().await;
}
