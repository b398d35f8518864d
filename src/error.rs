//! `ApiError` and the one status table (SPEC §3). Every error body is
//! `{"error": "<message>"}`; messages name the model, version, input or field
//! at fault and never carry paths or ONNX Runtime internals (those are logged).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::runtime::RuntimeError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong shape/dtype/name, unknown label (V1).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// Unknown model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. unloading a routed version).
    #[error("{0}")]
    Conflict(String),
    /// Body larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Per-user rate limit.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// Unsupported feature.
    #[error("{0}")]
    NotImplemented(String),
    /// Version not READY, queue full, shutting down.
    #[error("{message}")]
    Unavailable {
        message: String,
        retry_after_secs: Option<u64>,
    },
    /// Deadline exceeded.
    #[error("{0}")]
    Timeout(String),
    /// Inference failed inside ONNX Runtime.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status this error is answered with: the SPEC §3 table.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Maps a runtime failure of `model` version `version` to its answer.
    pub fn from_runtime(model: &str, version: u64, err: RuntimeError) -> ApiError {
        match err {
            RuntimeError::QueueFull(n) => ApiError::Unavailable {
                message: format!("model '{model}' version {version} is overloaded: queue full ({n} waiting)"),
                retry_after_secs: Some(1),
            },
            RuntimeError::Deadline(d) => ApiError::Timeout(format!(
                "model '{model}' version {version} did not answer within {} ms",
                d.as_millis()
            )),
            RuntimeError::Closed => ApiError::Unavailable {
                message: format!("model '{model}' version {version} is unloading"),
                retry_after_secs: Some(1),
            },
            RuntimeError::BadInput(m) => ApiError::BadRequest(format!("model '{model}': {m}")),
            RuntimeError::Inference(detail) => {
                tracing::warn!(model, version, error = %detail, "inference failed");
                ApiError::Internal(format!("inference failed in model '{model}' version {version}"))
            }
        }
    }

    /// True for statuses that count as a server-side failure of the version.
    pub fn is_version_failure(&self) -> bool {
        matches!(self, ApiError::Internal(_) | ApiError::Timeout(_))
    }
}

/// Builds a JSON error response.
pub fn error_body(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut resp = (status, body).into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut resp = error_body(status, &self.to_string());
        let retry = match &self {
            ApiError::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            ApiError::Unavailable { retry_after_secs, .. } => *retry_after_secs,
            _ => None,
        };
        if let Some(secs) = retry {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}
