//! `GrpcError` and the one status table of the gRPC front end: every typed
//! error of the layers below maps to a gRPC code here and nowhere else, the
//! way Triton maps its errors (the HTTP status of the same situation in
//! brackets):
//!
//! | situation | code |
//! | --- | --- |
//! | bad input: shape, datatype, name, contents, malformed metadata (400) | `INVALID_ARGUMENT` |
//! | unknown model, version or label (404) | `NOT_FOUND` |
//! | per-user rate limit (429) | `RESOURCE_EXHAUSTED` + retry info |
//! | version not READY, queue full, breaker open, shedding, unloading (503) | `UNAVAILABLE` + retry info |
//! | the model's files are broken (503) | `UNAVAILABLE`, retries refused |
//! | deadline exceeded (504) | `DEADLINE_EXCEEDED` |
//! | inference failed inside ONNX Runtime (500) | `INTERNAL` |
//! | missing or wrong admin token (401) | `UNAUTHENTICATED` |
//! | unloading what routes to (409) | `FAILED_PRECONDITION` |
//! | unsupported RPC or feature, repository RPCs turned off (501) | `UNIMPLEMENTED` |
//!
//! *Retry info* is carried three ways, for the clients that read each: a
//! `google.rpc.RetryInfo` in the status details (`grpc-status-details-bin`),
//! `grpc-retry-pushback-ms` (gRPC's own retry policy waits that long before
//! its next attempt, or stops retrying on a negative value) and
//! `retry-after` in seconds, as HTTP's header. Messages name the model,
//! version, input or field at fault and never carry paths or ONNX Runtime
//! internals.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::repository::PolicyError;
use crate::runtime::RuntimeError;
use crate::serving::catalog::CatalogError;
use crate::serving::ServeError;
use crate::traffic::RouteError;

/// When a client may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Nothing to say.
    Unknown,
    /// After this many seconds.
    After(u64),
    /// Not at all: retrying cannot help.
    Never,
}

/// An error answered to a gRPC client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GrpcError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{message}")]
    ResourceExhausted { message: String, retry_after_secs: u64 },
    #[error("{message}")]
    Unavailable { message: String, retry: Retry },
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unimplemented(String),
}

impl GrpcError {
    /// The code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            GrpcError::InvalidArgument(_) => Code::InvalidArgument,
            GrpcError::NotFound(_) => Code::NotFound,
            GrpcError::ResourceExhausted { .. } => Code::ResourceExhausted,
            GrpcError::Unavailable { .. } => Code::Unavailable,
            GrpcError::DeadlineExceeded(_) => Code::DeadlineExceeded,
            GrpcError::Internal(_) => Code::Internal,
            GrpcError::Unauthenticated(_) => Code::Unauthenticated,
            GrpcError::FailedPrecondition(_) => Code::FailedPrecondition,
            GrpcError::Unimplemented(_) => Code::Unimplemented,
        }
    }

    fn retry(&self) -> Retry {
        match self {
            GrpcError::ResourceExhausted { retry_after_secs, .. } => Retry::After(*retry_after_secs),
            GrpcError::Unavailable { retry, .. } => *retry,
            _ => Retry::Unknown,
        }
    }
}

impl From<GrpcError> for Status {
    fn from(e: GrpcError) -> Status {
        let code = e.code();
        let retry = e.retry();
        let message = e.to_string();
        let mut status = match retry {
            Retry::After(secs) => {
                let delay = Duration::from_secs(secs.max(1));
                Status::with_error_details(code, message, ErrorDetails::with_retry_info(Some(delay)))
            }
            Retry::Unknown | Retry::Never => Status::new(code, message),
        };
        let metadata = status.metadata_mut();
        match retry {
            Retry::After(secs) => {
                let secs = secs.max(1);
                metadata.insert("retry-after", MetadataValue::from(secs));
                metadata.insert("grpc-retry-pushback-ms", MetadataValue::from(secs * 1000));
            }
            Retry::Never => {
                metadata.insert("grpc-retry-pushback-ms", MetadataValue::from_static("-1"));
            }
            Retry::Unknown => {}
        }
        status
    }
}

impl From<RouteError> for GrpcError {
    fn from(e: RouteError) -> GrpcError {
        let message = e.to_string();
        match e {
            RouteError::UnknownModel(_) | RouteError::UnknownVersion(..) | RouteError::UnknownLabel(..) => {
                GrpcError::NotFound(message)
            }
            RouteError::NotReady(..) | RouteError::NoVersion(_) => GrpcError::Unavailable {
                message,
                retry: Retry::After(1),
            },
            RouteError::Broken(..) => GrpcError::Unavailable {
                message,
                retry: Retry::Never,
            },
            RouteError::CircuitOpen(_, _, secs) => GrpcError::Unavailable {
                message,
                retry: Retry::After(secs),
            },
        }
    }
}

impl From<ServeError> for GrpcError {
    fn from(e: ServeError) -> GrpcError {
        let message = e.to_string();
        match e {
            ServeError::RateLimited { retry_after_secs, .. } => GrpcError::ResourceExhausted {
                message,
                retry_after_secs,
            },
            ServeError::Route(e) => e.into(),
            ServeError::TooLong(_) => GrpcError::InvalidArgument(message),
            ServeError::NonFinite { .. } => GrpcError::FailedPrecondition(message),
            ServeError::Runtime { error, .. } => match error {
                RuntimeError::QueueFull(_) | RuntimeError::Closed => GrpcError::Unavailable {
                    message,
                    retry: Retry::After(1),
                },
                RuntimeError::Deadline(_) => GrpcError::DeadlineExceeded(message),
                RuntimeError::BadInput(_) => GrpcError::InvalidArgument(message),
                RuntimeError::Inference(_) => GrpcError::Internal(message),
            },
        }
    }
}

impl From<PolicyError> for GrpcError {
    fn from(e: PolicyError) -> GrpcError {
        match e {
            PolicyError::UnknownModel(_) | PolicyError::UnknownVersion(..) => {
                GrpcError::NotFound(e.to_string())
            }
            PolicyError::Invalid(..) => GrpcError::InvalidArgument(e.to_string()),
            PolicyError::Conflict(_) => GrpcError::FailedPrecondition(e.to_string()),
        }
    }
}

impl From<CatalogError> for GrpcError {
    fn from(e: CatalogError) -> GrpcError {
        match e {
            CatalogError::BadName(_) | CatalogError::NoSuchModel(_) | CatalogError::LoadFailed { .. } => {
                GrpcError::InvalidArgument(e.to_string())
            }
            CatalogError::RolloutActive(_) => GrpcError::FailedPrecondition(e.to_string()),
            CatalogError::Unload(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Budget;
    use tonic_types::StatusExt;

    #[test]
    fn retry_info_travels_in_details_and_metadata() {
        let status = Status::from(GrpcError::from(ServeError::RateLimited {
            message: "user 'u' is over the rate limit of model 'digits'".into(),
            retry_after_secs: 3,
        }));
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.metadata().get("retry-after").unwrap(), "3");
        assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "3000");
        let details = status.get_error_details();
        let retry = details.retry_info().expect("RetryInfo in the details");
        assert_eq!(retry.retry_delay, Some(Duration::from_secs(3)));
    }

    #[test]
    fn broken_models_ask_clients_not_to_retry() {
        let status = Status::from(GrpcError::from(RouteError::Broken(
            "m".into(),
            "bad config".into(),
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "-1");
        assert!(status.get_error_details().retry_info().is_none());
    }

    #[test]
    fn the_table() {
        let runtime = |error| ServeError::Runtime {
            model: "m".into(),
            version: 1,
            error,
        };
        let cases = [
            (
                ServeError::Route(RouteError::UnknownModel("m".into())),
                Code::NotFound,
            ),
            (
                ServeError::Route(RouteError::UnknownLabel("m".into(), "x".into())),
                Code::NotFound,
            ),
            (
                ServeError::Route(RouteError::NotReady("m".into(), 1, "LOADING".into())),
                Code::Unavailable,
            ),
            (
                ServeError::Route(RouteError::CircuitOpen("m".into(), 2, 10)),
                Code::Unavailable,
            ),
            (runtime(RuntimeError::QueueFull(3)), Code::Unavailable),
            (runtime(RuntimeError::Closed), Code::Unavailable),
            (
                runtime(RuntimeError::Deadline(Budget::model(Duration::from_millis(5)))),
                Code::DeadlineExceeded,
            ),
            (runtime(RuntimeError::BadInput("x".into())), Code::InvalidArgument),
            (runtime(RuntimeError::Inference("ort".into())), Code::Internal),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            let status = Status::from(GrpcError::from(error));
            assert_eq!(status.code(), code, "{message}");
            assert_eq!(status.message(), message);
        }
        let conflict = GrpcError::from(CatalogError::Unload(PolicyError::Conflict("routed".into())));
        assert_eq!(conflict.code(), Code::FailedPrecondition);
        let unknown = GrpcError::from(CatalogError::Unload(PolicyError::UnknownModel("m".into())));
        assert_eq!(unknown.code(), Code::NotFound);
    }
}
