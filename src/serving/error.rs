//! Why a predict request did not produce outputs, in terms every front end
//! can map to its own status (HTTP status, gRPC code). Messages are safe to
//! show to clients: they name the model, version or limit at fault and never
//! carry paths or ONNX Runtime internals (those are logged).

use crate::runtime::RuntimeError;
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
}

fn runtime_message(model: &str, version: u64, error: &RuntimeError) -> String {
    match error {
        RuntimeError::QueueFull(n) => {
            format!("model '{model}' version {version} is overloaded: queue full ({n} waiting)")
        }
        RuntimeError::Deadline(d) => format!(
            "model '{model}' version {version} did not answer within {} ms",
            d.as_millis()
        ),
        RuntimeError::Closed => format!("model '{model}' version {version} is unloading"),
        RuntimeError::BadInput(m) => format!("model '{model}': {m}"),
        RuntimeError::Inference(_) => format!("inference failed in model '{model}' version {version}"),
    }
}
