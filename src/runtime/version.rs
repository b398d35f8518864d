//! A *version runtime* owns a bounded queue and `instances` worker threads;
//! each worker owns one backend (an ONNX Runtime session in production) and
//! runs it synchronously, never on a tokio thread. Async callers submit a
//! job with `try_send` (full queue → [`RuntimeError::QueueFull`]) and await
//! a oneshot reply until the request's deadline.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use super::batcher;
use super::job::{Backend, Job, RunMetrics, RuntimeError};
use super::signature::Signature;
use super::stats::VersionStats;
use super::window::Window;
use crate::tensor::Tensor;

/// How a version executes; `[execution]` in `config.toml`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutionConfig {
    /// ORT sessions (worker threads) per version.
    pub instances: usize,
    /// Threads ONNX Runtime may use inside one operator.
    pub intra_op_threads: usize,
    /// Rows per batch when the first dimension is dynamic; 0 turns batching off.
    pub max_batch_size: usize,
    /// How long a worker may wait to fill a batch once concurrency is seen.
    pub max_queue_delay_us: u64,
    /// Requests that may wait per version; beyond it requests get 503.
    pub max_queue: usize,
    /// Per-request deadline; beyond it requests get 504.
    pub timeout_ms: u64,
}

impl Default for ExecutionConfig {
    fn default() -> Self {
        ExecutionConfig {
            instances: 1,
            intra_op_threads: 1,
            max_batch_size: 0,
            max_queue_delay_us: 500,
            max_queue: 1024,
            timeout_ms: 5000,
        }
    }
}

/// A loaded, running model version: the queue into its workers.
pub struct VersionRuntime {
    signature: Arc<Signature>,
    metrics: Arc<RunMetrics>,
    queue: Sender<Job>,
    config: ExecutionConfig,
    stats: Arc<VersionStats>,
    window: Window,
}

impl VersionRuntime {
    /// Starts `config.instances` workers, one per backend in `backends`.
    pub fn start(
        label: &str,
        signature: Signature,
        config: ExecutionConfig,
        backends: Vec<Box<dyn Backend>>,
    ) -> std::io::Result<VersionRuntime> {
        let signature = Arc::new(signature);
        let stats = Arc::new(VersionStats::default());
        let metrics = Arc::new(RunMetrics::new(label));
        let (tx, rx) = crossbeam_channel::bounded::<Job>(config.max_queue.max(1));
        let batching = if config.max_batch_size > 1 && signature.batchable() {
            config.max_batch_size
        } else {
            0
        };
        for (i, backend) in backends.into_iter().enumerate() {
            let worker = batcher::Worker {
                rx: rx.clone(),
                backend,
                max_batch: batching,
                max_delay: Duration::from_micros(config.max_queue_delay_us),
                stats: stats.clone(),
                metrics: metrics.clone(),
                output_count: signature.outputs.len(),
            };
            std::thread::Builder::new()
                .name(format!("ort-{label}-{i}"))
                .spawn(move || worker.run())?;
        }
        Ok(VersionRuntime {
            signature,
            metrics,
            queue: tx,
            config,
            stats,
            window: Window::default(),
        })
    }

    /// The model's inputs and outputs.
    pub fn signature(&self) -> &Arc<Signature> {
        &self.signature
    }

    /// The execution settings this version runs with.
    pub fn config(&self) -> &ExecutionConfig {
        &self.config
    }

    /// Counters for the statistics extension and analysis.
    pub fn stats(&self) -> &Arc<VersionStats> {
        &self.stats
    }

    /// Recent outcomes as clients saw them, for rollout analysis.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Requests waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// Runs one inference on inputs already checked against the signature
    /// (ordered as its inputs), within `timeout` (the version's own deadline
    /// when `None`).
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        timeout: Option<Duration>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let budget = timeout.unwrap_or(Duration::from_millis(self.config.timeout_ms));
        let now = Instant::now();
        let deadline = now + budget;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            enqueued: now,
            deadline,
            reply,
        };
        match self.queue.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.stats.record_failure(Duration::ZERO);
                self.metrics.shed.increment(1);
                return Err(RuntimeError::QueueFull(self.queue.len()));
            }
            Err(TrySendError::Disconnected(_)) => return Err(RuntimeError::Closed),
        }
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(RuntimeError::Closed),
            Err(_) => {
                self.stats.record_failure(now.elapsed());
                Err(RuntimeError::Deadline(budget))
            }
        }
    }

    /// Runs one inference from a blocking context (warm-up, validation).
    pub fn infer_blocking(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, RuntimeError> {
        let now = Instant::now();
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            enqueued: now,
            deadline: now + Duration::from_millis(self.config.timeout_ms.max(30_000)),
            reply,
        };
        self.queue.send(job).map_err(|_| RuntimeError::Closed)?;
        rx.blocking_recv().unwrap_or(Err(RuntimeError::Closed))
    }
}
