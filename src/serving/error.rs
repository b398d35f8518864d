//! Why a predict request did not produce outputs, in terms every front end
//! can map to its own status (HTTP status, gRPC code). Messages are safe to
//! show to clients: they name the model, version or limit at fault and never
//! carry paths or ONNX Runtime internals (those are logged).

use super::limits::TooLong;
use super::outcome::Outcome;
use crate::runtime::{DeadlineOwner, RuntimeError};
use crate::traffic::RouteError;

/// A predict request refused or failed by the shared pipeline.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ServeError {
    /// The caller is over the model's rate limit.
    #[error("{message}")]
    RateLimited { message: String, retry_after_secs: u64 },
    /// No version could be chosen.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// The chosen version did not answer.
    #[error("{}", runtime_message(model, *version, error))]
    Runtime {
        model: String,
        version: u64,
        error: RuntimeError,
    },
    /// A client-chosen string over its cap.
    #[error(transparent)]
    TooLong(#[from] TooLong),
    /// The version answered NaN or infinity for finite inputs, and the
    /// request asked for such answers to be refused.
    #[error(
        "model '{model}' version {version} produced non-finite values (NaN or infinity) in output \
         '{output}' for finite inputs"
    )]
    NonFinite {
        model: String,
        version: u64,
        output: String,
    },
}

impl ServeError {
    /// What this error says about the version that was to answer: only an
    /// inference failure and a miss of the version's own deadline are its
    /// fault; the client's shorter deadline, load shedding and bad input
    /// are not.
    pub fn outcome(&self) -> Outcome {
        match self {
            ServeError::RateLimited { .. } | ServeError::Route(_) => Outcome::Refused,
            ServeError::TooLong(_) | ServeError::NonFinite { .. } => Outcome::Rejected,
            ServeError::Runtime { error, .. } => match error {
                RuntimeError::QueueFull(_) | RuntimeError::Closed => Outcome::Refused,
                RuntimeError::Deadline(b) if b.owner == DeadlineOwner::Client => Outcome::Abandoned,
                RuntimeError::Deadline(_) | RuntimeError::Inference(_) => Outcome::Failed,
                RuntimeError::BadInput(_) => Outcome::Rejected,
            },
        }
    }
}

fn runtime_message(model: &str, version: u64, error: &RuntimeError) -> String {
    match error {
        RuntimeError::QueueFull(n) => {
            format!("model '{model}' version {version} is overloaded: queue full ({n} waiting)")
        }
        RuntimeError::Deadline(b) => match b.owner {
            DeadlineOwner::Model => format!(
                "model '{model}' version {version} did not answer within its deadline of {} ms",
                b.after.as_millis()
            ),
            DeadlineOwner::Client => format!(
                "model '{model}' version {version} did not answer within the {} ms the request allowed",
                b.after.as_millis()
            ),
        },
        RuntimeError::Closed => format!("model '{model}' version {version} is unloading"),
        RuntimeError::BadInput(m) => format!("model '{model}': {m}"),
        RuntimeError::Inference(_) => format!("inference failed in model '{model}' version {version}"),
    }
}
