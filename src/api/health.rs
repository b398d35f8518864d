//! Probes. Liveness is "the process serves HTTP"; readiness is
//! "every version that traffic can reach is READY and warmed up", never with
//! zero routable versions, and 503 as soon as shutdown begins.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::respond::json;
use crate::api::error::error_body;
use crate::serving::readiness::readiness;
use crate::serving::AppState;

/// `GET /health`.
pub async fn live() -> Response {
    json(&serde_json::json!({"status": "live"}))
}

/// `GET /ready`.
pub async fn ready(State(state): State<Arc<AppState>>) -> Response {
    match readiness(&state) {
        Ok(()) => json(&serde_json::json!({"status": "ready"})),
        Err(reason) => not_ready(reason),
    }
}

/// `GET /v2/health/live`.
pub async fn v2_live() -> Response {
    json(&serde_json::json!({"live": true}))
}

/// `GET /v2/health/ready`.
pub async fn v2_ready(State(state): State<Arc<AppState>>) -> Response {
    match readiness(&state) {
        Ok(()) => json(&serde_json::json!({"ready": true})),
        Err(reason) => not_ready(reason),
    }
}

fn not_ready(reason: String) -> Response {
    error_body(StatusCode::SERVICE_UNAVAILABLE, &format!("not ready: {reason}")).into_response()
}
