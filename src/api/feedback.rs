//! Feedback: clients report how good an answer was
//! (`POST /v2/models/{m}/feedback` and `/v1/models/{m}/feedback` with
//! `{"request_id" | "user_id", "value": number}`). A value is attributed to
//! the version that served that request (a bounded memory of recent request
//! ids) or to the version the user is assigned to now.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde::Deserialize;

use super::{body_bytes, json, AppState};
use crate::error::ApiError;
use crate::traffic::{self, Caller, VersionSelector};

/// Request ids remembered at most.
const REMEMBERED: usize = 100_000;

/// Request id → (model, version), plus insertion order for eviction. Ids
/// are allocated once (shared by the map and the queue) and model names
/// once per model: this runs on every predict request.
#[derive(Default)]
struct Remembered {
    by_id: HashMap<Arc<str>, (Arc<str>, u64)>,
    order: VecDeque<Arc<str>>,
    models: Vec<Arc<str>>,
}

/// A bounded map of recent request ids to the version that answered.
#[derive(Default)]
pub struct RecentRequests {
    inner: Mutex<Remembered>,
}

impl RecentRequests {
    /// Remembers that `version` of `model` answered request `id`.
    pub fn remember(&self, id: &str, model: &str, version: u64) {
        let mut guard = self.inner.lock();
        let r = &mut *guard;
        if let Some(entry) = r.by_id.get_mut(id) {
            if &*entry.0 != model {
                entry.0 = intern(&mut r.models, model);
            }
            entry.1 = version;
            return;
        }
        let model = intern(&mut r.models, model);
        let id: Arc<str> = Arc::from(id);
        r.by_id.insert(id.clone(), (model, version));
        r.order.push_back(id);
        if r.order.len() > REMEMBERED {
            if let Some(old) = r.order.pop_front() {
                r.by_id.remove(&old);
            }
        }
    }

    /// The (model, version) that answered `id`.
    pub fn get(&self, id: &str) -> Option<(String, u64)> {
        self.inner.lock().by_id.get(id).map(|(m, v)| (m.to_string(), *v))
    }
}

/// The shared copy of a model name (models are few; unloaded names stay,
/// which is bounded by the names the repository ever had).
fn intern(models: &mut Vec<Arc<str>>, model: &str) -> Arc<str> {
    match models.iter().find(|m| &***m == model) {
        Some(m) => m.clone(),
        None => {
            let m: Arc<str> = Arc::from(model);
            models.push(m.clone());
            m
        }
    }
}

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
    let body = body_bytes(body, state.config.body_limit)?;
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
    Ok(json(
        &serde_json::json!({"model": model, "version": version, "value": value}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_latest_answer_and_forgets_the_oldest_ids_first() {
        let recent = RecentRequests::default();
        recent.remember("a", "digits", 1);
        recent.remember("b", "mlp_wide", 1);
        recent.remember("a", "digits", 2); // the same id answered again
        assert_eq!(recent.get("a"), Some(("digits".to_string(), 2)));
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 1)));
        assert_eq!(recent.get("c"), None);
        for i in 0..REMEMBERED - 1 {
            recent.remember(&format!("id-{i}"), "digits", 1);
        }
        // "a" is the oldest of REMEMBERED + 1 ids: evicted; "b" is still held
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), Some(("mlp_wide".to_string(), 1)));
        assert_eq!(
            recent.get(&format!("id-{}", REMEMBERED - 2)),
            Some(("digits".to_string(), 1))
        );
        let inner = recent.inner.lock();
        assert_eq!(inner.by_id.len(), REMEMBERED);
        assert_eq!(inner.order.len(), REMEMBERED);
        assert_eq!(inner.models.len(), 2);
    }
}
