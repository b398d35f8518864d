//! Protection: per-user rate limits, per-version circuit breakers, load
//! shedding and request deadlines (SPEC §6).
//!
//! Everything here refuses early: a request over a limit is answered at
//! once (429 or 503 with `Retry-After`) instead of waiting in a queue, so
//! memory stays bounded whatever the offered load.

pub mod breaker;
pub mod rate;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

pub use breaker::{BreakerConfig, Breakers, CircuitState};
pub use rate::{LimitsConfig, RateLimits, RateSpec};

use crate::api::AppState;
use crate::config::Config;
use crate::error::ApiError;
use crate::telemetry::names;

/// The request header that may lower a model's deadline.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";
/// The request id header (taken from the client or generated, always echoed).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The protection state of one server.
pub struct Guard {
    pub limits: RateLimits,
    /// Shared with the rollout controller, which aborts on an open breaker.
    pub breakers: Arc<Breakers>,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
}

impl Guard {
    /// Limits as the flags say.
    pub fn new(config: &Config) -> Guard {
        let max_in_flight = config.max_in_flight.max(1);
        Guard {
            limits: RateLimits::new(config.rate_limit, config.rate_limit_burst, config.rate_limit_keys),
            breakers: Arc::new(Breakers::new(BreakerConfig {
                consecutive_failures: config.breaker_failures,
                failure_rate: config.breaker_failure_rate,
                open_for: Duration::from_secs(config.breaker_open_secs.max(1)),
            })),
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
        }
    }

    /// Data-plane requests being served now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.in_flight.available_permits()
    }
}

/// The address of the client (from the listener's connect info; the
/// unspecified address when there is none, e.g. in `oneshot` tests).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Infallible> {
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// Applies the rate limit of `model` to a caller; 429 with `Retry-After`
/// when over it.
pub fn check_rate(state: &AppState, model: &str, user: Option<&str>, peer: Peer) -> Result<(), ApiError> {
    let snapshot = state.repo.snapshot();
    // An unknown model is answered 404 by routing; it must not become a
    // metric label or a limiter.
    let Some(m) = snapshot.models.get(model) else {
        return Ok(());
    };
    let limits = &m.config.limits;
    state
        .guard
        .limits
        .check(model, limits, user, peer.0)
        .map_err(|retry_after_secs| {
            metrics::counter!(names::RATE_LIMITED_TOTAL, "model" => model.to_string()).increment(1);
            ApiError::RateLimited {
                message: match user {
                    Some(u) => format!("user '{u}' is over the rate limit of model '{model}'"),
                    None => format!("client {} is over the rate limit of model '{model}'", peer.0),
                },
                retry_after_secs,
            }
        })
}

/// The deadline of one request: the model's `timeout_ms`, lowered (never
/// raised) by an `x-request-timeout-ms` header.
pub fn request_timeout(headers: &HeaderMap, model_timeout_ms: u64) -> Result<Duration, ApiError> {
    let model = Duration::from_millis(model_timeout_ms);
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(model);
    };
    let ms: u64 = value
        .to_str()
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .filter(|&ms| ms > 0)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{TIMEOUT_HEADER} must be a positive number of milliseconds, got {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?;
    Ok(model.min(Duration::from_millis(ms)))
}

/// What a predict response carries for the request log (set by
/// `api::route_headers`).
#[derive(Debug, Clone)]
pub struct Served {
    pub model: String,
    pub version: u64,
    pub route: &'static str,
}

fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready") || path.starts_with("/v2/health/")
}

/// The data-plane layer: gives every request an id, sheds load beyond
/// `--max-in-flight` (503 + `Retry-After`; probes are never shed) and logs
/// each predict request.
pub async fn layer(State(state): State<Arc<AppState>>, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(REQUEST_ID_HEADER).cloned() {
        Some(id) => id,
        None => {
            let id = HeaderValue::from_str(&format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..)))
                .expect("hex is a header value");
            req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
            id
        }
    };
    let permit = if is_probe(req.uri().path()) {
        None
    } else {
        match state.guard.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "in_flight").increment(1);
                let mut resp = ApiError::Unavailable {
                    message: format!(
                        "server is overloaded: {} requests in flight",
                        state.guard.max_in_flight
                    ),
                    retry_after_secs: Some(1),
                }
                .into_response();
                resp.headers_mut().insert(REQUEST_ID_HEADER, id);
                return resp;
            }
        }
    };
    let method = req.method().clone();
    let uri = req.uri().clone();
    let mut resp = next.run(req).await;
    drop(permit);
    if let Some(served) = resp.extensions().get::<Served>() {
        tracing::info!(
            request_id = %id.to_str().unwrap_or("(not visible ASCII)"),
            model = %served.model,
            version = served.version,
            route = served.route,
            status = resp.status().as_u16(),
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            %method,
            path = %uri.path(),
            "predict"
        );
    }
    resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    resp
}

/// Keeps the guard's memory in check: every `every`, rate-limit keys with
/// full buckets are dropped and breakers of versions that left the
/// repository are pruned. Ends when the state is dropped.
pub fn spawn_sweeper(state: std::sync::Weak<AppState>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else { return };
            let snapshot = state.repo.snapshot();
            state.guard.limits.sweep(|m| snapshot.models.contains_key(m));
            state.guard.breakers.retain(|m, v| {
                snapshot
                    .models
                    .get(m)
                    .is_some_and(|e| e.versions.contains_key(&v))
            });
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_header_only_lowers_the_deadline() {
        let mut h = HeaderMap::new();
        assert_eq!(request_timeout(&h, 5000).unwrap(), Duration::from_secs(5));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("50"));
        assert_eq!(request_timeout(&h, 5000).unwrap(), Duration::from_millis(50));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("60000"));
        assert_eq!(request_timeout(&h, 5000).unwrap(), Duration::from_secs(5));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(request_timeout(&h, 5000).unwrap_err().status(), 400);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("0"));
        assert!(request_timeout(&h, 5000).is_err());
    }
}
