//! HTTP middleware of the data listener: request ids (tower-http), load
//! shedding beyond `--max-in-flight` (probes are never shed) and the request
//! log of predict requests.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_http::request_id::{MakeRequestId, RequestId};

use super::error::ApiError;
use crate::serving::AppState;
use crate::telemetry::names;

/// What a predict response carries for the request log (set by
/// `request::route_headers`).
#[derive(Debug, Clone)]
pub struct Served {
    pub model: String,
    pub version: u64,
    pub route: &'static str,
}

/// Generates a request id when the client sent none: 128 random bits in hex.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomRequestId;

impl MakeRequestId for RandomRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready") || path.starts_with("/v2/health/")
}

/// Sheds load beyond `--max-in-flight` (503 + `Retry-After`; probes are
/// never shed) and logs each predict request with its id, model, version,
/// route, status and latency.
pub async fn shed_and_log(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let permit = if is_probe(req.uri().path()) {
        None
    } else {
        match state.try_enter() {
            Some(p) => Some(p),
            None => {
                metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "in_flight").increment(1);
                return ApiError::Unavailable {
                    message: format!(
                        "server is overloaded: {} requests in flight",
                        state.settings.max_in_flight
                    ),
                    retry_after_secs: Some(1),
                }
                .into_response();
            }
        }
    };
    let id = req.extensions().get::<RequestId>().cloned();
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = next.run(req).await;
    drop(permit);
    if let Some(served) = resp.extensions().get::<Served>() {
        let id = id.as_ref().and_then(|id| id.header_value().to_str().ok());
        tracing::info!(
            request_id = %id.unwrap_or("(not visible ASCII)"),
            model = %served.model,
            version = served.version,
            route = served.route,
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            %method,
            path = %uri.path(),
            "predict"
        );
    }
    resp
}
