//! `ApiError` and the one status table of the HTTP front end: every typed
//! error of the layers below maps to a status here and nowhere else. Every
//! error body is `{"error": "<message>"}`; messages name the model, version,
//! input or field at fault and never carry paths or ONNX Runtime internals
//! (those are logged).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::repository::{LoadError, NameError, PolicyError};
use crate::rollout::controller::RolloutError;
use crate::runtime::RuntimeError;
use crate::serving::catalog::CatalogError;
use crate::serving::{Outcome, ServeError};
use crate::traffic::RouteError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, wrong shape/dtype/name, unknown label (V1).
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong admin token.
    #[error("{0}")]
    Unauthorized(String),
    /// The request body did not arrive in time (or too slowly).
    #[error("{0}")]
    RequestTimeout(String),
    /// Unknown model or version.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. unloading a routed version).
    #[error("{0}")]
    Conflict(String),
    /// Body larger than the limit.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Well-formed, but refused: a value outside the accepted range, or an
    /// answer the request asked to refuse (non-finite outputs).
    #[error("{0}")]
    Unprocessable(String),
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
    /// Inference failed inside ONNX Runtime, or a handler failed.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
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

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> ApiError {
        let message = e.to_string();
        match e {
            RouteError::UnknownModel(_) | RouteError::UnknownVersion(..) | RouteError::UnknownLabel(..) => {
                ApiError::NotFound(message)
            }
            RouteError::NotReady(..) | RouteError::NoVersion(_) => ApiError::Unavailable {
                message,
                retry_after_secs: Some(1),
            },
            RouteError::Broken(..) => ApiError::Unavailable {
                message,
                retry_after_secs: None,
            },
            RouteError::CircuitOpen(_, _, secs) => ApiError::Unavailable {
                message,
                retry_after_secs: Some(secs),
            },
        }
    }
}

impl From<ServeError> for ApiError {
    fn from(e: ServeError) -> ApiError {
        let message = e.to_string();
        match e {
            ServeError::RateLimited { retry_after_secs, .. } => ApiError::RateLimited {
                message,
                retry_after_secs,
            },
            ServeError::Route(e) => e.into(),
            ServeError::Runtime { error, .. } => match error {
                RuntimeError::QueueFull(_) | RuntimeError::Closed => ApiError::Unavailable {
                    message,
                    retry_after_secs: Some(1),
                },
                RuntimeError::Deadline(_) => ApiError::Timeout(message),
                RuntimeError::BadInput(_) => ApiError::BadRequest(message),
                RuntimeError::Inference(_) => ApiError::Internal(message),
            },
            ServeError::TooLong(_) => ApiError::BadRequest(message),
            ServeError::NonFinite { .. } => ApiError::Unprocessable(message),
        }
    }
}

/// A predict request that did not produce an answer: the error to send and
/// what it says about the version that was to answer (from the typed error
/// where there is one, never guessed from the status).
#[derive(Debug, Clone, PartialEq)]
pub struct PredictError {
    pub error: ApiError,
    pub outcome: Outcome,
}

impl From<ServeError> for PredictError {
    fn from(e: ServeError) -> PredictError {
        PredictError {
            outcome: e.outcome(),
            error: e.into(),
        }
    }
}

impl From<ApiError> for PredictError {
    /// Errors of the front end itself: decoding and encoding (the request's
    /// fault, or a 500 of this server), refusals before the version ran.
    fn from(error: ApiError) -> PredictError {
        let outcome = match &error {
            ApiError::Internal(_) => Outcome::Failed,
            e if e.status().is_client_error() => Outcome::Rejected,
            _ => Outcome::Refused,
        };
        PredictError { error, outcome }
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> ApiError {
        match e {
            NameError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            NameError::NoDirectory(..) | NameError::NoVersionDirectory(..) | NameError::Outside(_) => {
                ApiError::NotFound(e.to_string())
            }
        }
    }
}

impl From<LoadError> for ApiError {
    fn from(e: LoadError) -> ApiError {
        match e {
            LoadError::Name(n) => n.into(),
            other => ApiError::NotFound(other.to_string()),
        }
    }
}

impl From<CatalogError> for ApiError {
    fn from(e: CatalogError) -> ApiError {
        match e {
            CatalogError::BadName(e) => e.into(),
            CatalogError::NoSuchModel(_) | CatalogError::LoadFailed { .. } => {
                ApiError::BadRequest(e.to_string())
            }
            CatalogError::RolloutActive(_) => ApiError::Conflict(e.to_string()),
            CatalogError::Unload(e) => e.into(),
        }
    }
}

impl From<PolicyError> for ApiError {
    fn from(e: PolicyError) -> ApiError {
        match e {
            PolicyError::UnknownModel(_) | PolicyError::UnknownVersion(..) => {
                ApiError::NotFound(e.to_string())
            }
            PolicyError::Invalid(..) => ApiError::BadRequest(e.to_string()),
            PolicyError::Conflict(_) => ApiError::Conflict(e.to_string()),
        }
    }
}

impl From<RolloutError> for ApiError {
    fn from(e: RolloutError) -> ApiError {
        match e.clone() {
            RolloutError::NotFound(m) => ApiError::NotFound(m),
            RolloutError::Invalid(m) => ApiError::BadRequest(m),
            RolloutError::Conflict(m) => ApiError::Conflict(m),
            RolloutError::Unavailable(m) => ApiError::Unavailable {
                message: m,
                retry_after_secs: Some(1),
            },
            RolloutError::Store(_) => {
                tracing::error!(error = %e, "rollout command failed");
                ApiError::Internal(e.to_string())
            }
        }
    }
}
