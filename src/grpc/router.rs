//! The gRPC listener's services as one router: the inference service,
//! `grpc.health.v1.Health` and server reflection (v1 and v1alpha, so
//! `grpcurl` and `grpc_cli` work without the .proto files). Unknown
//! services and methods answer UNIMPLEMENTED.
//!
//! It is an axum router served by the same HTTP/2 server as the HTTP
//! listeners (same graceful shutdown). tonic's own transport is not used:
//! it answers a client's expired `grpc-timeout` with CANCELLED and drops
//! the call unobserved, where the pipeline answers DEADLINE_EXCEEDED and
//! counts it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use super::health;
use super::proto::grpc_inference_service_server::GrpcInferenceServiceServer;
use super::proto::FILE_DESCRIPTOR_SET;
use super::service::InferenceService;
use crate::api::middleware::run_caught;
use crate::serving::AppState;

/// Why the gRPC services could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build gRPC server reflection: {0}")]
pub struct RouterError(#[from] tonic_reflection::server::Error);

/// Every gRPC service of the listener. The health task ends with `stop`;
/// health `Watch` streams end once `drained` is cancelled. Request messages
/// are limited to the body limit, as HTTP bodies are (RESOURCE_EXHAUSTED
/// beyond it).
pub async fn app(
    state: Arc<AppState>,
    drained: CancellationToken,
    stop: CancellationToken,
) -> Result<axum::Router, RouterError> {
    let limit = state.settings.body_limit;
    let inference = GrpcInferenceServiceServer::new(InferenceService::new(state.clone()))
        .max_decoding_message_size(limit);
    let health = health::service(&state, drained, stop).await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(inference)
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .prepare();
    Ok(routes
        .into_axum_router()
        .layer(axum::middleware::map_response(oversized_is_resource_exhausted))
        .layer(axum::middleware::from_fn(panics_are_internal)))
}

/// A handler that panics answers INTERNAL instead of resetting its stream;
/// the panic is logged and counted as on the HTTP listeners.
async fn panics_are_internal(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let uri = req.uri().clone();
    run_caught(next, req, "grpc", &uri, None)
        .await
        .unwrap_or_else(|message| tonic::Status::internal(message).into_http::<axum::body::Body>())
}

/// The start of tonic's message for an oversized request, as sent
/// (percent-encoded; tests/grpc.rs checks it still matches).
const TOO_LARGE: &[u8] = b"Error,%20decoded%20message%20length%20too%20large";

/// tonic refuses a message over the decoding limit (before buffering it)
/// with OUT_OF_RANGE; gRPC's own servers, Triton's included, say
/// RESOURCE_EXHAUSTED, which is what clients expect. Such a refusal is a
/// trailers-only answer, so the code is in the response headers.
async fn oversized_is_resource_exhausted(mut resp: axum::response::Response) -> axum::response::Response {
    let headers = resp.headers_mut();
    let oversized = headers.get("grpc-status").is_some_and(|s| s == "11")
        && headers
            .get("grpc-message")
            .is_some_and(|m| m.as_bytes().starts_with(TOO_LARGE));
    if oversized {
        headers.insert(
            "grpc-status",
            axum::http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;

    #[tokio::test]
    async fn a_grpc_handler_that_panics_answers_internal() {
        let app = axum::Router::new()
            .route(
                "/inference.GRPCInferenceService/ModelInfer",
                axum::routing::post(|| async { panic!("a bug in a gRPC handler") as &str }),
            )
            .layer(axum::middleware::from_fn(panics_are_internal));
        let req = axum::http::Request::post("/inference.GRPCInferenceService/ModelInfer")
            .header("content-type", "application/grpc")
            .body(axum::body::Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        // a trailers-only answer: the code is in the headers
        assert_eq!(resp.status(), axum::http::StatusCode::OK);
        assert_eq!(resp.headers()["grpc-status"], "13", "INTERNAL");
        let message = resp.headers()["grpc-message"].to_str().unwrap();
        assert!(message.contains("not%20served"), "{message}");
    }
}
