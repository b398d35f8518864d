//! Triton's model-repository extension on the data listener:
//! `POST /v2/repository/index`, `.../models/{m}/load`, `.../models/{m}/unload`.
//!
//! It can unload what serves, so it is off unless `--repository-api` turns
//! it on (404 otherwise), and then needs the admin token; without a token
//! it is open only on a loopback data listener (the server refuses to start
//! with it on a public one). Model names are checked and confined to the
//! repository; a model with a traffic policy or an active rollout is not
//! unloaded (409). The work is the shared catalog's (`serving::catalog`),
//! which gRPC's repository RPCs call too.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

use super::request::bearer;
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

async fn index(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Err(e) = guard(&state, &headers) {
        return e.into_response();
    }
    json(&catalog::index(&state, false))
}

async fn load(State(state): State<Arc<AppState>>, Path(model): Path<String>, headers: HeaderMap) -> Response {
    if let Err(e) = guard(&state, &headers) {
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
    if let Err(e) = guard(&state, &headers) {
        return e.into_response();
    }
    match catalog::unload(&state, &model) {
        Ok(()) => json(&serde_json::json!({})),
        Err(e) => ApiError::from(e).into_response(),
    }
}
