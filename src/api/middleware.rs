//! HTTP middleware: one pass per request (a single layer, so a request
//! pays for one boxed future and one clone of the route below it, not one
//! per concern). On the data listener, in order: the request id (refused
//! when longer than the cap, generated when absent, echoed on the answer),
//! the body read, load shedding beyond `--max-in-flight` (probes are never
//! shed), the handler, the request log of predict requests, and JSON
//! bodies for errors raised outside the handlers. The admin listener has
//! the body read and the JSON errors. On both, a handler that panics
//! answers 500 with a JSON error (and is logged and counted) instead of
//! dropping its connection; the server goes on.
//!
//! A body is read in full *before* its request takes an in-flight slot, so
//! slow clients cannot hold the slots that answer requests: it must arrive
//! within `--body-read-timeout`, keep up `--body-min-rate` after a short
//! grace, and fit the global body budget (its announced length is reserved
//! before a byte is read). Each of these refuses with a JSON error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;

use super::connection::ConnActivity;
use super::error::{error_body, ApiError};
use super::request::{Served, REQUEST_ID_HEADER};
use crate::serving::limits::{BodyPermit, TooLong, MAX_CLIENT_STRING};
use crate::serving::AppState;
use crate::telemetry::names;

/// How long a body may arrive slower than `--body-min-rate` at its start
/// (connection set-up, the client's first write).
pub const BODY_RATE_GRACE: Duration = Duration::from_secs(2);

/// A request id for a request that came without one: 128 random bits in hex.
fn new_request_id() -> HeaderValue {
    let mut id = [0u8; 32];
    let hex = b"0123456789abcdef";
    for half in id.chunks_mut(16) {
        let mut bits = fastrand::u64(..);
        for digit in half.iter_mut().rev() {
            *digit = hex[(bits & 0xf) as usize];
            bits >>= 4;
        }
    }
    HeaderValue::from_bytes(&id).expect("hex digits are a valid header value")
}

fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/ready") || path.starts_with("/v2/health/")
}

/// The data listener's middleware (see the module's doc).
pub async fn data_plane(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    json_errors(data_request(&state, req, next).await).await
}

/// The admin listener's middleware: the body read and JSON errors.
pub async fn admin_plane(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let resp = match read_body(&state, req).await {
        Ok((req, permit)) => {
            let uri = req.uri().clone();
            let resp = run_answered(next, req, "admin", &uri, None).await;
            drop(permit);
            resp
        }
        Err(e) => closing(e.into_response()),
    };
    json_errors(resp).await
}

async fn data_request(state: &AppState, mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = match req.headers().get(REQUEST_ID_HEADER) {
        Some(v) if v.len() > MAX_CLIENT_STRING => {
            let e = TooLong {
                what: REQUEST_ID_HEADER.into(),
                len: v.len(),
                max: MAX_CLIENT_STRING,
            };
            return ApiError::BadRequest(e.to_string()).into_response();
        }
        Some(v) => v.clone(),
        None => {
            let id = new_request_id();
            req.headers_mut().insert(REQUEST_ID_HEADER, id.clone());
            id
        }
    };
    let mut resp = match read_body(state, req).await {
        Ok((req, permit)) => {
            let resp = shed_and_log(state, req, next, started, &id).await;
            drop(permit);
            resp
        }
        Err(e) => closing(e.into_response()),
    };
    if !resp.headers().contains_key(REQUEST_ID_HEADER) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, id);
    }
    resp
}

/// Sheds load beyond `--max-in-flight` (503 + `Retry-After`; probes are
/// never shed) and logs each predict request with its id, model, version,
/// route, status and latency.
async fn shed_and_log(
    state: &AppState,
    req: Request,
    next: Next,
    started: Instant,
    id: &HeaderValue,
) -> Response {
    let permit = if is_probe(req.uri().path()) {
        None
    } else {
        match state.try_enter() {
            Some(p) => Some(p),
            None => {
                metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "in_flight").increment(1);
                return ApiError::Unavailable {
                    message: format!(
                        "server is overloaded: {} requests in flight",
                        state.settings.max_in_flight
                    ),
                    retry_after_secs: Some(1),
                }
                .into_response();
            }
        }
    };
    let method = req.method().clone();
    let uri = req.uri().clone();
    let resp = run_answered(next, req, "data", &uri, Some(id)).await;
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
    resp
}

/// Runs the handler under `catch_unwind`. A panic is logged (with the path
/// and the request id; the default panic hook has already printed where it
/// happened) and counted, and comes back as the message for the client:
/// the listener answers it as an internal error instead of dropping the
/// connection or stream.
pub async fn run_caught(
    next: Next,
    req: Request,
    listener: &'static str,
    uri: &axum::http::Uri,
    id: Option<&HeaderValue>,
) -> Result<Response, String> {
    use futures_util::FutureExt as _;
    std::panic::AssertUnwindSafe(next.run(req))
        .catch_unwind()
        .await
        .map_err(|panic| {
            let what = crate::telemetry::panic_message(panic.as_ref());
            let id = id.map(|v| v.to_str().unwrap_or("(not visible ASCII)"));
            tracing::error!(listener, path = %uri.path(), request_id = id, panic = %what, "a request handler panicked");
            metrics::counter!(names::HANDLER_PANICS_TOTAL, "listener" => listener).increment(1);
            format!(
                "the server failed while handling this request{}; it was not served, and the server goes on",
                id.map(|id| format!(" (request id {id})")).unwrap_or_default()
            )
        })
}

/// [`run_caught`] on an HTTP listener: a panic answers 500 with a JSON error.
async fn run_answered(
    next: Next,
    req: Request,
    listener: &'static str,
    uri: &axum::http::Uri,
    id: Option<&HeaderValue>,
) -> Response {
    run_caught(next, req, listener, uri, id)
        .await
        .unwrap_or_else(|message| ApiError::Internal(message).into_response())
}

/// Gives every error answer a JSON body `{"error": ...}`: those raised
/// before a handler runs (path decoding, method and extractor rejections)
/// come as plain text from axum.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let message = match std::str::from_utf8(&text).map(str::trim) {
        Ok(t) if !t.is_empty() => t.to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut json = error_body(status, &message);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

/// Reads a request's body within the limits; the request comes back with
/// its body in memory, together with the budget it holds.
async fn read_body(state: &AppState, req: Request) -> Result<(Request, BodyPermit), ApiError> {
    use axum::body::HttpBody as _;
    let (parts, mut body) = req.into_parts();
    let budget = &state.body_budget;
    let mut permit = budget.permit();
    if body.is_end_stream() {
        return Ok((Request::from_parts(parts, body), permit));
    }
    let limit = state.settings.body_limit;
    let too_large =
        || ApiError::PayloadTooLarge(format!("request body is larger than the limit of {limit} bytes"));
    let shed = || {
        metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "body_bytes").increment(1);
        ApiError::Unavailable {
            message: format!(
                "server is busy: the request bodies in flight would exceed {} bytes",
                budget.total()
            ),
            retry_after_secs: Some(1),
        }
    };
    let announced = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    // A refused body is read and dropped (nothing is held; for at most the
    // grace and a few times the limit) so that the client, still sending,
    // gets to read the error instead of a broken pipe.
    let grace = state.settings.bodies.read_timeout.min(BODY_RATE_GRACE);
    if announced.is_some_and(|n| n > limit) {
        discard(&mut body, grace, limit.saturating_mul(DISCARD_LIMITS)).await;
        return Err(too_large());
    }
    if let Some(n) = announced {
        if !budget.reserve(&mut permit, n) {
            discard(&mut body, grace, n).await;
            return Err(shed());
        }
    }
    let _reading = parts
        .extensions
        .get::<Arc<ConnActivity>>()
        .map(|a| a.reading_body());
    let bodies = state.settings.bodies;
    let started = Instant::now();
    let hard = started + bodies.read_timeout;
    let mut chunks = Chunks::new(announced);
    loop {
        // the body must keep up with the minimum rate once the grace is over
        let paced = match bodies.min_rate {
            0 => hard,
            rate => started + BODY_RATE_GRACE + Duration::from_secs_f64(chunks.len as f64 / rate as f64),
        };
        let frame = match tokio::time::timeout_at(hard.min(paced).into(), body.frame()).await {
            Err(_) => return Err(slow_body(&bodies, chunks.len, started.elapsed())),
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::BadRequest(format!(
                    "could not read the request body: {e}"
                )))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if chunks.len + data.len() > limit {
            drop(chunks);
            discard(&mut body, grace, limit.saturating_mul(DISCARD_LIMITS)).await;
            return Err(too_large());
        }
        if announced.is_none() && !budget.reserve(&mut permit, data.len()) {
            return Err(shed());
        }
        chunks.push(data);
    }
    Ok((
        Request::from_parts(parts, Body::from(chunks.into_bytes())),
        permit,
    ))
}

/// How much of a body over the size limit is read and dropped before the
/// 413, in multiples of the limit.
const DISCARD_LIMITS: usize = 4;

/// Reads and drops a body for at most `time` or `bytes`.
async fn discard(body: &mut Body, time: Duration, bytes: usize) {
    let deadline = tokio::time::Instant::now() + time;
    let mut read = 0usize;
    while read < bytes {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => read += frame.data_ref().map_or(0, |d| d.len()),
            _ => break,
        }
    }
}

/// The 408 of a body that did not arrive in time.
fn slow_body(bodies: &crate::serving::BodySettings, got: usize, after: Duration) -> ApiError {
    ApiError::RequestTimeout(format!(
        "the request body did not arrive in time: {got} bytes in {:.1} s (the body must arrive within {} s, \
         at {} bytes/s or faster after the first {} s)",
        after.as_secs_f64(),
        bodies.read_timeout.as_secs(),
        bodies.min_rate,
        BODY_RATE_GRACE.as_secs()
    ))
}

/// A body's chunks: a body that arrives in one chunk is kept as is; more
/// are copied into one buffer sized from the announced length, so the
/// body is held once (plus the chunk being copied).
struct Chunks {
    first: Option<Bytes>,
    rest: Vec<u8>,
    announced: Option<usize>,
    len: usize,
}

impl Chunks {
    fn new(announced: Option<usize>) -> Chunks {
        Chunks {
            first: None,
            rest: Vec::new(),
            announced,
            len: 0,
        }
    }

    fn push(&mut self, data: Bytes) {
        self.len += data.len();
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(data);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.reserve_exact(self.announced.unwrap_or(0).max(self.len));
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&data);
    }

    fn into_bytes(self) -> Bytes {
        match self.first {
            Some(first) => first,
            None => Bytes::from(self.rest),
        }
    }
}

/// A 408 answer closes the connection: the rest of the body may still be
/// on its way.
pub fn closing(mut resp: Response) -> Response {
    if resp.status() == StatusCode::REQUEST_TIMEOUT {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use tower::ServiceExt as _;

    use super::*;

    /// The value of `switchyard_handler_panics_total{listener="data"}`.
    fn data_panics() -> f64 {
        crate::telemetry::install_metrics()
            .render()
            .lines()
            .find(|l| l.starts_with(names::HANDLER_PANICS_TOTAL) && l.contains("listener=\"data\""))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }

    #[tokio::test]
    async fn a_handler_that_panics_answers_500_json_and_the_service_goes_on() {
        let before = data_panics();
        let app = axum::Router::new()
            .route(
                "/boom",
                axum::routing::get(|| async { panic!("a bug in a handler") as &str }),
            )
            .route("/fine", axum::routing::get(|| async { "fine" }))
            .layer(axum::middleware::from_fn(|req: Request, next: Next| async move {
                let uri = req.uri().clone();
                let id = HeaderValue::from_static("r-1");
                run_answered(next, req, "data", &uri, Some(&id)).await
            }));
        let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
        let resp = app.clone().oneshot(get("/boom")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let body = axum::body::to_bytes(resp.into_body(), 1 << 16).await.unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("request id r-1"), "{message}");
        assert!(
            !message.contains("a bug in a handler"),
            "the panic stays in the log: {message}"
        );
        assert!(data_panics() >= before + 1.0, "the panic is counted");
        let resp = app.oneshot(get("/fine")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
    }

    #[test]
    fn generated_request_ids_are_32_lowercase_hex_digits_and_differ() {
        let a = new_request_id();
        let b = new_request_id();
        for id in [&a, &b] {
            let s = id.to_str().unwrap();
            assert_eq!(s.len(), 32, "{s}");
            assert!(
                s.bytes()
                    .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)),
                "{s}"
            );
        }
        assert_ne!(a, b);
    }
}
