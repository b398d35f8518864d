//! A *job* is one request's inputs on their way to a worker thread, with
//! its deadline and the channel its answer goes back on; a *backend* is the
//! synchronous model instance a worker owns.

use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::tensor::Tensor;

/// Whose deadline bounds a request: the version's own (`timeout_ms`, so a
/// miss is the version's fault) or a shorter one the client asked for (a
/// miss says nothing about the version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadlineOwner {
    Model,
    Client,
}

/// A request's time budget and whose it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub after: Duration,
    pub owner: DeadlineOwner,
}

impl Budget {
    /// The version's own deadline.
    pub fn model(after: Duration) -> Budget {
        Budget {
            after,
            owner: DeadlineOwner::Model,
        }
    }

    /// The version's own deadline, lowered (never raised) by the client's;
    /// the budget belongs to the client only when it is strictly shorter.
    pub fn lowered(model: Duration, client: Option<Duration>) -> Budget {
        match client {
            Some(c) if c < model => Budget {
                after: c,
                owner: DeadlineOwner::Client,
            },
            _ => Budget::model(model),
        }
    }
}

/// Why an inference did not produce outputs.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum RuntimeError {
    #[error("queue is full ({0} requests waiting)")]
    QueueFull(usize),
    #[error("deadline of {:?} exceeded", .0.after)]
    Deadline(Budget),
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
    pub(super) restarts: metrics::Counter,
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
            restarts: metrics::counter!(names::WORKER_RESTARTS_TOTAL, &labels),
        }
    }
}

/// Work handed to a worker thread.
pub(super) struct Job {
    pub(super) inputs: Vec<Tensor>,
    pub(super) enqueued: Instant,
    pub(super) deadline: Instant,
    /// What `deadline` stands for (a missed deadline replies with it).
    pub(super) budget: Budget,
    pub(super) reply: oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>,
}
