//! Triton's model-repository extension on the data listener:
//! `POST /v2/repository/index`, `.../models/{m}/load`, `.../models/{m}/unload`.
//!
//! It can unload what serves, so it is off unless `--repository-api` turns
//! it on (404 otherwise), and then needs the admin token; without a token
//! it is open only on a loopback data listener (the server refuses to start
//! with it on a public one). Model names are checked and confined to the
//! repository; a model with a traffic policy or an active rollout is not
//! unloaded (409).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde::Serialize;

use super::request::bearer;
use super::respond::json;
use crate::api::error::ApiError;
use crate::serving::AppState;

/// The repository routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

/// 404 while the API is off, 401 without the admin token.
fn guard(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if !state.settings.repository_api {
        return Err(ApiError::NotFound(
            "the model repository API is off on this listener (start the server with --repository-api, \
             or use the admin API)"
                .into(),
        ));
    }
    if !state.data_control_allowed(bearer(headers), None) {
        return Err(ApiError::Unauthorized(
            "missing or wrong admin token (send Authorization: Bearer <SWITCHYARD_ADMIN_TOKEN>)".into(),
        ));
    }
    Ok(())
}

#[derive(Serialize)]
struct IndexEntry {
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    version: String,
    state: String,
    reason: String,
}

async fn index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = guard(&state, &headers) {
        return e.into_response();
    }
    let snapshot = state.repo.snapshot();
    let mut entries = Vec::new();
    let on_disk = state.repo.model_names().unwrap_or_default();
    for name in &on_disk {
        match snapshot.models.get(name) {
            Some(m) if m.error.is_some() => entries.push(IndexEntry {
                name: name.clone(),
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason: m.error.clone().unwrap_or_default(),
            }),
            Some(m) => entries.extend(m.versions.values().map(|v| IndexEntry {
                name: name.clone(),
                version: v.number.to_string(),
                state: v.state.name().into(),
                reason: v.state.reason().into(),
            })),
            None => entries.push(IndexEntry {
                name: name.clone(),
                version: String::new(),
                state: "UNAVAILABLE".into(),
                reason: "unloaded".into(),
            }),
        }
    }
    json(&entries)
}

async fn load(State(state): State<Arc<AppState>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = guard(&state, &headers) {
        return e.into_response();
    }
    if let Err(e) = crate::repository::check_model_name(&model) {
        return ApiError::from(e).into_response();
    }
    if !state.repo.model_names().unwrap_or_default().contains(&model) {
        return ApiError::BadRequest(format!(
            "failed to load '{model}': no such model directory in the repository"
        ))
        .into_response();
    }
    let repo = state.repo.clone();
    let name = model.clone();
    let ready = tokio::task::spawn_blocking(move || repo.load_model(&name))
        .await
        .unwrap_or_default();
    let snapshot = state.repo.snapshot();
    match snapshot.models.get(&model) {
        Some(m) if m.error.is_some() => ApiError::BadRequest(format!(
            "failed to load '{model}': {}",
            m.error.clone().unwrap_or_default()
        ))
        .into_response(),
        Some(_) if !ready.is_empty() => json(&serde_json::json!({})),
        _ => {
            ApiError::BadRequest(format!("failed to load '{model}': no version became READY")).into_response()
        }
    }
}

async fn unload(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = guard(&state, &headers) {
        return e.into_response();
    }
    let active = state.rollouts.holds_any(&model);
    if active {
        return ApiError::Conflict(format!(
            "model '{model}' has an active rollout; abort it before unloading the model"
        ))
        .into_response();
    }
    match state.repo.unload_model(&model) {
        Ok(()) => {
            tracing::info!(model = %model, "model unloaded");
            json(&serde_json::json!({}))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}
