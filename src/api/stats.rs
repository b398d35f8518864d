//! The Triton statistics extension over HTTP:
//! `GET /v2/models[/{m}[/versions/{v}]]/stats`, the model stats of
//! `serving::stats` in the JSON shape of Triton's
//! `docs/protocol/extension_statistics.md`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::respond::json;
use crate::api::error::ApiError;
use crate::serving::stats::{self, ModelStat};
use crate::serving::AppState;
use crate::traffic::VersionSelector;

/// The statistics routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/models/stats", get(all_models))
        .route("/v2/models/{model}/stats", get(one_model))
        .route("/v2/models/{model}/versions/{version}/stats", get(one_version))
}

#[derive(Serialize)]
struct StatsResponse {
    model_stats: Vec<ModelStat>,
}

async fn all_models(State(state): State<Arc<AppState>>) -> Response {
    json(&StatsResponse {
        model_stats: stats::all(&state.repo.snapshot()),
    })
}

async fn one_model(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match stats::of_model(&state.repo.snapshot(), &model) {
        Ok(model_stats) => json(&StatsResponse { model_stats }),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// Stats of one version (a number or a label): 404 when unknown, 503 when
/// it is known but not READY.
async fn one_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    let selector = VersionSelector::from_path(&version);
    match stats::of_version(&state.repo.snapshot(), &model, selector) {
        Ok(stat) => json(&StatsResponse {
            model_stats: vec![stat],
        }),
        Err(e) => ApiError::from(e).into_response(),
    }
}
