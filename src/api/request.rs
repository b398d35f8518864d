//! What the HTTP front end reads from a predict request (client address,
//! user key, version pin, request id, deadline) and writes on its answer
//! (`x-model-version`, `x-route`).

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::Response;

use super::error::ApiError;
use crate::serving::limits::client_string;
use crate::serving::AppState;
use crate::traffic::{Caller, Target};

/// What a predict response carries for the request log (set by
/// [`route_headers`]).
#[derive(Debug, Clone)]
pub struct Served {
    pub model: String,
    pub version: u64,
    pub route: &'static str,
}

/// The request header that may lower a model's deadline.
pub const TIMEOUT_HEADER: &str = "x-request-timeout-ms";
/// The request id header (taken from the client or generated, always echoed).
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The address of the client (from the listener's connect info; the
/// unspecified address when there is none, e.g. in `oneshot` tests).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Peer, Infallible> {
        // an IPv4 client of a dual-stack listener arrives as ::ffff:a.b.c.d
        Ok(Peer(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip().to_canonical())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// What routing may use from the request headers: the user key (at most
/// `MAX_CLIENT_STRING` bytes, else 400) and a version pin
/// (`x-model-version`).
pub fn caller<'h>(state: &AppState, headers: &'h HeaderMap) -> Result<Caller<'h>, ApiError> {
    let header = &state.settings.user_header;
    let user = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    if let Some(u) = user {
        client_string(header.as_str(), u).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    Ok(Caller {
        user,
        pin: headers
            .get("x-model-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok()),
    })
}

/// The client's request id header, if any (its length was checked when the
/// request came in).
pub fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The bearer token of a request, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// The header that makes non-finite answers (for finite inputs) a 422.
pub const REJECT_NONFINITE_HEADER: &str = "x-reject-nonfinite";

/// True when the request asks for non-finite answers to be refused
/// (`x-reject-nonfinite: true`).
pub fn reject_nonfinite(headers: &HeaderMap) -> bool {
    headers
        .get(REJECT_NONFINITE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| matches!(v.trim(), "true" | "1"))
}

/// The client's deadline from an `x-request-timeout-ms` header, if any; it
/// lowers (never raises) the model's own `timeout_ms`.
pub fn client_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(value) = headers.get(TIMEOUT_HEADER) else {
        return Ok(None);
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
    Ok(Some(Duration::from_millis(ms)))
}

/// The header that says why a request's `x-model-version` pin was not
/// followed.
pub const PIN_IGNORED_HEADER: &str = "x-pin-ignored";

/// Adds `x-model-version` and `x-route` to a predict response that reached
/// its version (a 4xx did not: it names no version), `x-pin-ignored` when
/// the caller's pin was not followed, and what the request log needs.
pub fn route_headers(resp: &mut Response, target: &Target, pin: Option<u64>) {
    let answered = !resp.status().is_client_error();
    let headers = resp.headers_mut();
    if answered {
        headers.insert("x-model-version", HeaderValue::from(target.version));
        headers.insert("x-route", HeaderValue::from_static(target.route.name()));
    }
    if let Some(why) = pin.and_then(|pin| pin_ignored(target, pin)) {
        if let Ok(value) = HeaderValue::from_str(&why) {
            headers.insert(PIN_IGNORED_HEADER, value);
        }
    }
    resp.extensions_mut().insert(Served {
        model: target.model.name.clone(),
        version: target.version,
        route: target.route.name(),
    });
}

/// Why a versionless request's `x-model-version: pin` was not followed,
/// if it was not.
fn pin_ignored(target: &Target, pin: u64) -> Option<String> {
    use crate::policy::{PinMode, Route};
    if matches!(target.route, Route::Pin | Route::Explicit | Route::Label) {
        return None;
    }
    let model = &target.model.name;
    Some(match target.model.policy.as_ref().map(|p| p.spec().pins) {
        None => format!("version {pin} not pinned: model '{model}' has no traffic policy, so pins are off"),
        Some(PinMode::Off) => {
            format!("version {pin} not pinned: pins are off in the traffic policy of model '{model}'")
        }
        Some(PinMode::AllowListed) => {
            format!("version {pin} not pinned: only allow-listed users may pin versions of model '{model}'")
        }
        Some(PinMode::All) => {
            format!("version {pin} not pinned: the policy of model '{model}' does not route to it")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timeout_header_is_a_positive_number_of_milliseconds() {
        let mut h = HeaderMap::new();
        assert_eq!(client_timeout(&h).unwrap(), None);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("50"));
        assert_eq!(client_timeout(&h).unwrap(), Some(Duration::from_millis(50)));
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("soon"));
        assert_eq!(client_timeout(&h).unwrap_err().status(), 400);
        h.insert(TIMEOUT_HEADER, HeaderValue::from_static("0"));
        assert!(client_timeout(&h).is_err());
    }
}
