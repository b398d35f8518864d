//! Feedback: clients report how good an answer was
//! (`POST /v2/models/{m}/feedback` and `/v1/models/{m}/feedback` with
//! `{"request_id" | "user_id", "value": number}`), on the data listener and
//! on the admin listener. A value is attributed to the version that served
//! that request, or to the version the user is assigned to now.
//!
//! Feedback decides A/B tests and canary analysis, so it is attributable and
//! bounded:
//! - it needs a credential, `Authorization: Bearer` with the admin token or
//!   the feedback token; with neither configured it is open only on a
//!   listener bound to loopback (401 otherwise);
//! - a `request_id` must be one this server answered recently (see
//!   `serving::recent`) and takes one value per answer (a second: 409);
//! - a value is a finite number (or a boolean, 1/0) inside the configured
//!   range (outside: 422).
//!
//! Every refusal is counted by reason.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Deserialize;

use super::request::bearer;
use super::respond::{body_bytes, json, json_object};
use crate::api::error::ApiError;
use crate::serving::limits::client_string;
use crate::serving::recent::Claim;
use crate::serving::AppState;
use crate::telemetry::names;
use crate::traffic::{self, Caller, VersionSelector};

/// Which listener a feedback route is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    Data,
    Admin,
}

pub(super) fn routes(listener: Listener) -> Router<Arc<AppState>> {
    let handler = move |State(state): State<Arc<AppState>>,
                        Path(model): Path<String>,
                        headers: HeaderMap,
                        body: Result<Bytes, BytesRejection>| async move {
        record(&state, &model, listener, &headers, body).unwrap_or_else(IntoResponse::into_response)
    };
    Router::new()
        .route("/v2/models/{model}/feedback", post(handler))
        .route("/v1/models/{model}/feedback", post(handler))
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

/// Counts a refusal and returns its error.
fn refuse(reason: &'static str, error: ApiError) -> ApiError {
    metrics::counter!(names::FEEDBACK_REJECTED_TOTAL, "reason" => reason).increment(1);
    error
}

/// True when the request carries a credential that may post feedback.
fn authorized(state: &AppState, listener: Listener, headers: &HeaderMap) -> bool {
    let extra = state.settings.feedback.token.as_deref();
    let no_token = state.settings.admin_token.is_none() && extra.is_none();
    match listener {
        // an admin listener without a token is on loopback (checked at start)
        Listener::Admin if no_token => true,
        _ => state.data_control_allowed(bearer(headers), extra),
    }
}

fn record(
    state: &AppState,
    model: &str,
    listener: Listener,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !authorized(state, listener, headers) {
        return Err(refuse(
            "unauthorized",
            ApiError::Unauthorized(
                "feedback needs a credential: send Authorization: Bearer <token> with the feedback token \
                 (--feedback-token) or the admin token"
                    .into(),
            ),
        ));
    }
    let invalid = |m: String| refuse("invalid", ApiError::BadRequest(m));
    let body = body_bytes(body, state.settings.body_limit)?;
    let fb: Feedback = json_object(&body, "a JSON object")
        .map_err(|e| invalid(format!("invalid feedback for model '{model}': {e}")))?;
    for (what, v) in [("request_id", &fb.request_id), ("user_id", &fb.user_id)] {
        if let Some(v) = v {
            client_string(what, v).map_err(|e| invalid(e.to_string()))?;
        }
    }
    let value = match &fb.value {
        serde_json::Value::Number(n) => n.as_f64().filter(|v| v.is_finite()),
        serde_json::Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
    .ok_or_else(|| invalid(format!("feedback value {} is not a finite number", fb.value)))?;
    let range = &state.settings.feedback;
    if !(range.min..=range.max).contains(&value) {
        return Err(refuse(
            "out_of_range",
            ApiError::Unprocessable(format!(
                "feedback value {value} is outside the accepted range {}..{}",
                range.min, range.max
            )),
        ));
    }
    let snapshot = state.repo.snapshot();
    let version = match (&fb.request_id, &fb.user_id) {
        (Some(id), _) => match state.recent.claim_feedback(id, model) {
            Claim::Granted(v) => v,
            Claim::OtherModel(m) => {
                return Err(invalid(format!(
                    "request '{id}' was answered by model '{m}', not '{model}'"
                )))
            }
            Claim::Unknown => {
                return Err(refuse(
                    "unknown_id",
                    ApiError::NotFound(format!(
                    "unknown request id '{id}' for model '{model}': this server did not answer it recently"
                )),
                ))
            }
            Claim::AlreadyTaken => {
                return Err(refuse(
                    "duplicate",
                    ApiError::Conflict(format!(
                        "request '{id}' of model '{model}' already has its feedback"
                    )),
                ))
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
        (None, None) => return Err(invalid("feedback needs \"request_id\" or \"user_id\"".into())),
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
