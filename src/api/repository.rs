//! Triton's model-repository extension on the data listener:
//! `POST /v2/repository/index`, `.../models/{m}/load`, `.../models/{m}/unload`
//! over the shared catalog (`serving::catalog`). Guarded by the admin token
//! when one is configured.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::admin::check_token;
use super::respond::json;
use crate::api::error::ApiError;
use crate::serving::{catalog, AppState};

/// The repository routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/repository/index", post(index))
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

async fn index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = check_token(&state, &headers) {
        return e.into_response();
    }
    json(&catalog::index(&state, false))
}

async fn load(State(state): State<Arc<AppState>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = check_token(&state, &headers) {
        return e.into_response();
    }
    match catalog::load(&state, &model).await {
        Ok(()) => json(&serde_json::json!({})),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn unload(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = check_token(&state, &headers) {
        return e.into_response();
    }
    match catalog::unload(&state, &model) {
        Ok(()) => json(&serde_json::json!({})),
        Err(e) => ApiError::from(e).into_response(),
    }
}
