//! HTTP: the data router (V1, V2, probes) and the admin router.
//!
//! Handlers parse the protocol, ask `traffic` for a target version and hand
//! tensors to its `runtime`; they never touch ONNX Runtime directly.

pub mod admin;
pub mod feedback;
pub mod health;
pub mod repository;
pub mod stats;
pub mod v1;
pub mod v2;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::Config;
use crate::error::{error_body, ApiError};
use crate::guard::Guard;
use crate::repository::Repository;
use crate::rollout::controller::{Controller, LocalMetrics, LocalPolicies};
use crate::telemetry::names;
use crate::tensor::Tensor;
use crate::traffic::shadow::{ShadowHub, ShadowJob};
use crate::traffic::{Caller, Target};

/// Shared state of both routers.
pub struct AppState {
    pub repo: Arc<Repository>,
    pub config: Arc<Config>,
    pub shadow: Arc<ShadowHub>,
    pub rollouts: Arc<Controller>,
    /// Recent request ids → (model, version), for feedback attribution.
    pub recent: feedback::RecentRequests,
    restored: AtomicBool,
    /// Rate limits, circuit breakers, load shedding.
    pub guard: Guard,
    /// The user-key header, parsed once.
    pub user_header: axum::http::HeaderName,
    shutting_down: AtomicBool,
}

impl AppState {
    /// State over a repository (which may still be loading). Needs a tokio
    /// runtime (the shadow worker is a task); opens the rollout store.
    pub fn new(repo: Arc<Repository>, config: Arc<Config>) -> Result<AppState, String> {
        let user_header = config
            .user_header
            .parse()
            .unwrap_or(axum::http::HeaderName::from_static("x-user-id"));
        let shadow = ShadowHub::start(config.shadow_queue);
        let guard = Guard::new(&config);
        let breakers = guard.breakers.clone();
        let metrics = Arc::new(LocalMetrics {
            repo: repo.clone(),
            shadow: shadow.clone(),
            breakers: Some(Arc::new(move |model: &str, version: u64| {
                breakers.is_open(model, version)
            })),
        });
        let sink = Arc::new(LocalPolicies(repo.clone()));
        let rollouts = Arc::new(Controller::open(&config.state_dir, repo.clone(), metrics, sink)?);
        Ok(AppState {
            repo,
            shadow,
            rollouts,
            recent: feedback::RecentRequests::default(),
            restored: AtomicBool::new(false),
            guard,
            config,
            user_header,
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Active rollouts have their policies back.
    pub fn mark_restored(&self) {
        self.restored.store(true, Ordering::SeqCst);
    }

    /// True once active rollouts were restored after start-up.
    pub fn is_restored(&self) -> bool {
        self.restored.load(Ordering::SeqCst)
    }

    /// Marks the server as draining: readiness answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::SeqCst)
    }

    /// True while the circuit breaker of `model` version `version` is open
    /// (its versionless traffic falls back to stable).
    pub fn breaker_open(&self, model: &str, version: u64) -> bool {
        self.guard.breakers.is_open(model, version)
    }
}

/// The data-plane router: V2, V1 and probes.
pub fn app(state: Arc<AppState>) -> Router {
    let limit = state.config.body_limit;
    Router::new()
        .route("/health", get(health::live))
        .route("/ready", get(health::ready))
        .merge(v1::routes())
        .merge(v2::routes())
        .merge(repository::routes())
        .merge(feedback::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::guard::layer,
        ))
        .with_state(state)
}

/// The admin router (admin API, metrics).
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health::live))
        .route("/metrics", get(metrics))
        .merge(admin::routes(state.clone()))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.body_limit))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text (no token: it carries no secrets and
/// the admin listener is on loopback unless a token is set).
async fn metrics(axum::extract::State(state): axum::extract::State<Arc<AppState>>) -> Response {
    let body = crate::telemetry::scrape(&state);
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

/// What routing may use from the request headers: the user key and a
/// version pin (`x-model-version`).
pub fn caller<'h>(state: &AppState, headers: &'h HeaderMap) -> Caller<'h> {
    Caller {
        user: headers
            .get(&state.user_header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty()),
        pin: headers
            .get("x-model-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    }
}

/// Routes a predict request on the current snapshot, respecting the
/// circuit breakers (open → fallback to stable, or 503 for an explicit version).
pub fn route(
    state: &AppState,
    model: &str,
    selector: crate::traffic::VersionSelector<'_>,
    caller: Caller<'_>,
) -> Result<Target, crate::traffic::RouteError> {
    let breakers = &state.guard.breakers;
    let permits = |m: &str, v: u64| breakers.permits(m, v);
    let guard = crate::traffic::Breakers {
        permits: &permits,
        retry_after_secs: breakers.open_for().as_secs().max(1),
    };
    crate::traffic::route_with(&state.repo.snapshot(), model, selector, caller, &guard)
}

/// The client's request id header, if any.
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Adds `x-model-version` and `x-route` to a predict response.
pub fn route_headers(resp: &mut Response, target: &Target) {
    let headers = resp.headers_mut();
    headers.insert("x-model-version", HeaderValue::from(target.version));
    headers.insert("x-route", HeaderValue::from_static(target.route.name()));
    resp.extensions_mut().insert(crate::guard::Served {
        model: target.model.name.clone(),
        version: target.version,
        route: target.route.name(),
    });
}

/// Sends a copy of a served request to the shadow version, if the target
/// was sampled for it. Never blocks.
pub fn mirror(
    state: &AppState,
    target: &Target,
    inputs: Vec<Tensor>,
    outputs: &[Tensor],
    request_id: Option<String>,
) {
    if let Some((version, runtime)) = &target.shadow {
        state.shadow.mirror(ShadowJob {
            model: target.model.name.clone(),
            primary_version: target.version,
            shadow_version: *version,
            runtime: runtime.clone(),
            inputs,
            primary: outputs.to_vec(),
            request_id: request_id.unwrap_or_default(),
        });
    }
}

/// The protocol a request came in on (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
}

impl Protocol {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
        }
    }
}

/// Records the outcome of one predict request that reached a version: the
/// version's analysis window (what rollouts compare), its circuit breaker
/// and the metrics.
pub fn observe(state: &AppState, target: &Target, protocol: Protocol, status: StatusCode, elapsed: Duration) {
    // Client errors (4xx) say nothing about the version; 5xx count against it.
    if !status.is_client_error() {
        target.runtime.window().record(!status.is_server_error(), elapsed);
    }
    // The breaker counts only what the version itself did wrong (500 from
    // ORT, 504 deadline); 503 (queue full, unloading) is load, not a fault.
    let outcome = match status {
        s if s.is_success() => Some(true),
        StatusCode::INTERNAL_SERVER_ERROR | StatusCode::GATEWAY_TIMEOUT => Some(false),
        _ => None,
    };
    let model = &target.model.name;
    state.guard.breakers.record(model, target.version, outcome);
    let version = target.version.to_string();
    metrics::counter!(
        names::REQUESTS_TOTAL,
        "model" => model.clone(),
        "version" => version.clone(),
        "route" => target.route.name(),
        "protocol" => protocol.name(),
        "status" => names::status_class(status.as_u16()),
    )
    .increment(1);
    metrics::histogram!(
        names::REQUEST_DURATION_SECONDS,
        "model" => model.clone(),
        "version" => version,
        "protocol" => protocol.name(),
    )
    .record(elapsed.as_secs_f64());
}

/// Remembers which version answered a request with an id (for feedback).
pub fn remember(state: &AppState, id: Option<&str>, target: &Target) {
    if let Some(id) = id.filter(|id| !id.is_empty()) {
        state.recent.remember(id, &target.model.name, target.version);
    }
}

/// Turns the body extractor's result into bytes or the right error
/// (413 over the limit, 400 otherwise).
pub fn body_bytes(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(format!("request body is larger than the limit of {limit} bytes"))
        } else {
            ApiError::BadRequest(format!("could not read the request body: {rejection}"))
        }
    })
}

/// A 200 JSON response from pre-serialised bytes.
pub fn json_response(body: Vec<u8>) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A 200 JSON response from a serialisable value.
pub fn json<T: serde::Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => json_response(body),
        Err(e) => ApiError::Internal(format!("could not encode the response: {e}")).into_response(),
    }
}
