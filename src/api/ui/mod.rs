//! The live page on the admin listener: `GET /` (also `/ui/`) serves a
//! self-contained page (HTML, CSS and JavaScript built into the binary; no
//! CDN, no fonts, charts drawn as SVG by the page) that shows every model's
//! versions, traffic split, rollout with its analysis numbers next to their
//! thresholds, the audit log and 15-minute charts, and offers the rollout
//! actions.
//!
//! The page's files load without the admin token; its data does not:
//! `GET /admin/v1/overview` (one JSON document) and
//! `GET /admin/v1/overview/stream` (server-sent events, see [`stream`]) sit
//! behind the same bearer token as the rest of the admin API. The page reads
//! the stream with `fetch`, so the token travels in the `Authorization`
//! header, never in a URL.

mod assets;
mod overview;
mod stream;

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use serde_json::json;

use super::admin::require_token;
use super::respond::json;
use crate::serving::AppState;

/// The page's files and its two data routes.
pub(super) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    let data = Router::new()
        .route("/admin/v1/overview", get(overview))
        .route("/admin/v1/overview/stream", get(stream))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token));
    assets::routes().merge(data)
}

/// `GET /admin/v1/overview`: the server, every model and the whole history.
async fn overview(State(state): State<Arc<AppState>>) -> Response {
    let models = overview::Overviewer::default().models(&state).await;
    json(&json!({
        "server": overview::server(&state),
        "models": models,
        "history": {"series": state.history.since(0)},
    }))
}

async fn stream(State(state): State<Arc<AppState>>) -> Response {
    stream::stream(state).await
}
