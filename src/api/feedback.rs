//! Feedback: clients report how good an answer was
//! (`POST /v2/models/{m}/feedback` and `/v1/models/{m}/feedback` with
//! `{"request_id" | "user_id", "value": number}`). A value is attributed to
//! the version that served that request (a bounded memory of recent request
//! ids) or to the version the user is assigned to now.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::respond::{body_bytes, json};
use crate::api::error::ApiError;
use crate::serving::AppState;
use crate::traffic::{self, Caller, VersionSelector};

pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/models/{model}/feedback", post(feedback))
        .route("/v1/models/{model}/feedback", post(feedback))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Feedback {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    value: serde_json::Value,
}

async fn feedback(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    record(&state, &model, body).unwrap_or_else(IntoResponse::into_response)
}

fn record(state: &AppState, model: &str, body: Result<Bytes, BytesRejection>) -> Result<Response, ApiError> {
    let body = body_bytes(body, state.settings.body_limit)?;
    let fb: Feedback = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid feedback for model '{model}': {e}")))?;
    let value = match &fb.value {
        serde_json::Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
    .ok_or_else(|| ApiError::BadRequest(format!("feedback value {} is not a finite number", fb.value)))?;
    let snapshot = state.repo.snapshot();
    let version = match (&fb.request_id, &fb.user_id) {
        (Some(id), _) => match state.recent.get(id) {
            Some((m, v)) if m == model => v,
            Some((m, _)) => {
                return Err(ApiError::BadRequest(format!(
                    "request '{id}' was answered by model '{m}', not '{model}'"
                )))
            }
            None => {
                return Err(ApiError::NotFound(format!(
                    "unknown request id '{id}' for model '{model}'"
                )))
            }
        },
        (None, Some(user)) => {
            let caller = Caller {
                user: Some(user),
                pin: None,
            };
            traffic::route(&snapshot, model, VersionSelector::Default, caller)
                .map_err(ApiError::from)?
                .version
        }
        (None, None) => {
            return Err(ApiError::BadRequest(
                "feedback needs \"request_id\" or \"user_id\"".into(),
            ))
        }
    };
    let runtime = traffic::model(&snapshot, model)
        .map_err(ApiError::from)?
        .versions
        .get(&version)
        .and_then(|v| v.runtime.clone())
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "version {version} of model '{model}' is no longer loaded"
            ))
        })?;
    runtime.window().record_feedback(value);
    crate::telemetry::feedback_recorded(model, version, value);
    Ok(json(
        &serde_json::json!({"model": model, "version": version, "value": value}),
    ))
}
