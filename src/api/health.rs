//! Probes (SPEC §3.3). Liveness is "the process serves HTTP"; readiness is
//! "every version that traffic can reach is READY and warmed up", never with
//! zero routable versions, and 503 as soon as shutdown begins.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use super::{json, AppState};
use crate::error::error_body;
use crate::repository::{Snapshot, VersionState};

/// Why the server is not ready, or `Ok` when it is.
pub fn readiness(state: &AppState) -> Result<(), String> {
    if state.is_shutting_down() {
        return Err("shutting down".into());
    }
    routable_ready(&state.repo.snapshot())?;
    if !state.is_restored() {
        return Err("restoring rollouts".into());
    }
    Ok(())
}

/// Readiness of a snapshot: each model's routed version must be READY.
pub fn routable_ready(snapshot: &Snapshot) -> Result<(), String> {
    if !snapshot.initial_load_done {
        return Err("loading the model repository".into());
    }
    let mut routable = 0;
    for m in snapshot.models.values() {
        if m.error.is_some() {
            continue;
        }
        // A model nothing routes to yet (all versions loading or failed)
        // neither blocks readiness nor counts as servable.
        let routed = m.routed();
        if routed.is_empty() {
            continue;
        }
        for v in routed {
            match m.versions.get(&v).map(|e| &e.state) {
                Some(VersionState::Ready) => {}
                Some(state) => {
                    return Err(format!(
                        "model '{}' version {v} is routed but {}",
                        m.name,
                        state.name()
                    ))
                }
                None => return Err(format!("model '{}' version {v} is routed but not loaded", m.name)),
            }
        }
        routable += 1;
    }
    if routable == 0 {
        return Err("no model version is ready to serve".into());
    }
    Ok(())
}

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
