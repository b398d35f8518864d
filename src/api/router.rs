//! The two routers: data (V1, V2, probes, feedback, the repository API when
//! turned on) and admin (admin API, feedback, metrics, the live page).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::error_body;
use super::middleware::{admin_plane, data_plane};
use super::{admin, feedback, health, repository, ui, v1, v2};
use crate::serving::AppState;

/// The data-plane router: V2, V1 and probes.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.settings.body_limit;
    Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .merge(v1::routes())
        .merge(v2::routes())
        .merge(repository::routes())
        .merge(feedback::routes(feedback::Listener::Data))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), data_plane))
        .with_state(state)
}

/// The admin router (admin API, metrics, the live page).
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .merge(feedback::routes(feedback::Listener::Admin))
        .merge(ui::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.settings.body_limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), admin_plane))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text (no token: it carries no secrets and
/// the admin listener is on loopback unless a token is set).
async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let body = crate::serving::scrape::scrape(&state);
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    resp
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        &format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} is not allowed on {}", uri.path()),
    )
}
