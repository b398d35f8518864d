//! A *job* is one request's inputs on their way to a worker thread, with
//! its deadline and the channel its answer goes back on; a *backend* is the
//! synchronous model instance a worker owns.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::tensor::Tensor;

/// Why an inference did not produce outputs.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RuntimeError {
    #[error("queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("deadline of {0:?} exceeded")]
    Deadline(Duration),
    #[error("the version is shutting down")]
    Closed,
    #[error("inference failed: {0}")]
    Inference(String),
    #[error("{0}")]
    BadInput(String),
}

/// One synchronous model instance, owned by one worker thread.
pub trait Backend: Send {
    /// Runs the model on inputs ordered as the signature's inputs; returns
    /// the outputs in signature order.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError>;
}

/// Why a backend run failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// The inputs cannot be given to the model (the client's fault).
    #[error("{0}")]
    Input(String),
    /// The model failed while running (the model's or the runtime's fault).
    #[error("{0}")]
    Run(String),
}

impl From<BackendError> for RuntimeError {
    fn from(e: BackendError) -> RuntimeError {
        match e {
            BackendError::Input(m) => RuntimeError::BadInput(m),
            BackendError::Run(m) => RuntimeError::Inference(m),
        }
    }
}

/// Metric handles of one version, registered once when it starts.
pub(super) struct RunMetrics {
    pub(super) inference: metrics::Histogram,
    pub(super) queue_wait: metrics::Histogram,
    pub(super) batch_rows: metrics::Histogram,
    pub(super) shed: metrics::Counter,
}

impl RunMetrics {
    /// Handles labelled from a runtime label `<model>-<version>` (the
    /// version is what follows the last `-`; model names may contain `-`).
    pub(super) fn new(label: &str) -> RunMetrics {
        use crate::telemetry::names;
        let (model, version) = label.rsplit_once('-').unwrap_or((label, ""));
        let labels = [("model", model.to_string()), ("version", version.to_string())];
        RunMetrics {
            inference: metrics::histogram!(names::INFERENCE_DURATION_SECONDS, &labels),
            queue_wait: metrics::histogram!(names::QUEUE_WAIT_SECONDS, &labels),
            batch_rows: metrics::histogram!(names::BATCH_SIZE_ROWS, &labels),
            shed: metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "queue_full"),
        }
    }
}

/// Work handed to a worker thread.
pub(super) struct Job {
    pub(super) inputs: Vec<Tensor>,
    pub(super) enqueued: Instant,
    pub(super) deadline: Instant,
    pub(super) reply: oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>,
}
