//! A *version runtime* owns a bounded queue and `instances` worker threads;
//! each worker owns one backend (an ONNX Runtime session in production) and
//! runs it synchronously, never on a tokio thread. Async callers submit a
//! job with `try_send` (full queue → [`RuntimeError::QueueFull`]) and await
//! a oneshot reply until the request's deadline.
//!
//! A worker thread is *supervised*: when its backend panics, the jobs of
//! that run fail (500), the thread stays, gets a fresh backend from the
//! version's [`Reopen`] function, and the version reports unhealthy (not
//! ready) until every worker has one again.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use tokio::sync::oneshot;

use super::arrival::{Arrival, Arrivals};
use super::batcher;
use super::job::{Backend, Budget, Job, RunMetrics, RuntimeError};
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
    /// The longest a worker waits to fill a batch (only while requests for
    /// the version are on their way, and no longer than its last run).
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

/// Opens a fresh backend for a worker whose backend panicked.
pub type Reopen = Arc<dyn Fn() -> Result<Box<dyn Backend>, String> + Send + Sync>;

/// A loaded, running model version: the queue into its workers.
pub struct VersionRuntime {
    signature: Arc<Signature>,
    metrics: Arc<RunMetrics>,
    queue: Sender<Job>,
    config: ExecutionConfig,
    stats: Arc<VersionStats>,
    window: Window,
    /// Workers waiting for a fresh backend after a panic.
    workers_down: Arc<AtomicUsize>,
    /// Requests routed here and on their way to the queue.
    arrivals: Arrivals,
    /// Workers hold it weakly: once the runtime is gone, a worker still
    /// trying to reopen its backend gives up. Never read, only held.
    _alive: Arc<()>,
}

impl VersionRuntime {
    /// Starts `config.instances` workers, one per backend in `backends`.
    /// A worker whose backend panics keeps that backend.
    pub fn start(
        label: &str,
        signature: Signature,
        config: ExecutionConfig,
        backends: Vec<Box<dyn Backend>>,
    ) -> std::io::Result<VersionRuntime> {
        VersionRuntime::start_with_reopen(label, signature, config, backends, None)
    }

    /// [`start`](Self::start), where a worker whose backend panicked gets a
    /// new one from `reopen` (retried with a growing pause while it fails).
    pub fn start_with_reopen(
        label: &str,
        signature: Signature,
        config: ExecutionConfig,
        backends: Vec<Box<dyn Backend>>,
        reopen: Option<Reopen>,
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
        let workers_down = Arc::new(AtomicUsize::new(0));
        let arrivals = Arrivals::default();
        let alive = Arc::new(());
        for (i, backend) in backends.into_iter().enumerate() {
            let worker = batcher::Worker {
                rx: rx.clone(),
                backend,
                max_batch: batching,
                max_delay: Duration::from_micros(config.max_queue_delay_us),
                arrivals: arrivals.clone(),
                stats: stats.clone(),
                metrics: metrics.clone(),
                output_count: signature.outputs.len(),
                down: workers_down.clone(),
                broken: None,
            };
            let supervisor = Supervisor {
                name: format!("ort-{label}-{i}"),
                reopen: reopen.clone(),
                down: workers_down.clone(),
                alive: Arc::downgrade(&alive),
            };
            std::thread::Builder::new()
                .name(supervisor.name.clone())
                .spawn(move || supervisor.run(worker))?;
        }
        Ok(VersionRuntime {
            signature,
            metrics,
            queue: tx,
            config,
            stats,
            window: Window::default(),
            workers_down,
            arrivals,
            _alive: alive,
        })
    }

    /// False while a worker waits for a fresh backend after a panic: the
    /// version is then reported not ready (readiness, V2 ready, metrics).
    pub fn is_healthy(&self) -> bool {
        self.workers_down.load(Ordering::SeqCst) == 0
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

    /// A request routed to this version, on its way to the queue until it
    /// is submitted or dropped; workers wait to fill a batch only while
    /// some are.
    pub fn arrival(&self) -> Arrival {
        self.arrivals.start()
    }

    /// Requests waiting in the queue now.
    pub fn queue_depth(&self) -> usize {
        self.queue.len()
    }

    /// The version's own deadline (`timeout_ms`).
    pub fn own_budget(&self) -> Budget {
        Budget::model(Duration::from_millis(self.config.timeout_ms))
    }

    /// Runs one inference on inputs already checked against the signature
    /// (ordered as its inputs), within `budget` (the version's own deadline
    /// when `None`).
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        budget: Option<Budget>,
    ) -> Result<Vec<Tensor>, RuntimeError> {
        let budget = budget.unwrap_or_else(|| self.own_budget());
        let now = Instant::now();
        let deadline = now + budget.after;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            inputs,
            enqueued: now,
            deadline,
            budget,
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
            // Workers answer every job they take, also when the version
            // retires; a reply dropped unanswered means the run panicked.
            Ok(Err(_)) => Err(worker_lost()),
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
        let budget = Budget::model(Duration::from_millis(self.config.timeout_ms.max(30_000)));
        let job = Job {
            inputs,
            enqueued: now,
            deadline: now + budget.after,
            budget,
            reply,
        };
        self.queue.send(job).map_err(|_| RuntimeError::Closed)?;
        rx.blocking_recv().unwrap_or_else(|_| Err(worker_lost()))
    }
}

/// The error of a job whose run panicked.
fn worker_lost() -> RuntimeError {
    RuntimeError::Inference("the worker running this request failed and is being replaced".into())
}

/// Keeps one worker thread serving: a panic in its backend fails that run,
/// then the worker gets a fresh backend and goes on.
struct Supervisor {
    name: String,
    reopen: Option<Reopen>,
    down: Arc<AtomicUsize>,
    alive: Weak<()>,
}

impl Supervisor {
    fn run(self, mut worker: batcher::Worker) {
        loop {
            let panic = match catch_unwind(AssertUnwindSafe(|| worker.run())) {
                Ok(batcher::Exit::Retired) => return,
                // the worker counted itself down before answering its jobs
                Ok(batcher::Exit::BackendPanicked(message)) => message,
                Err(panic) => {
                    self.down.fetch_add(1, Ordering::SeqCst);
                    batcher::panic_message(panic.as_ref())
                }
            };
            tracing::error!(worker = %self.name, panic = %panic, "worker panicked; replacing its backend");
            worker.metrics.restarts.increment(1);
            let replaced = match &self.reopen {
                Some(reopen) => self.reopen_into(reopen, &mut worker),
                None => true, // keeps its backend
            };
            self.down.fetch_sub(1, Ordering::SeqCst);
            if !replaced {
                return;
            }
            tracing::info!(worker = %self.name, "worker serves again");
        }
    }

    /// Opens a backend for `worker`, retrying with a growing pause; false
    /// when the version retired meanwhile.
    fn reopen_into(&self, reopen: &Reopen, worker: &mut batcher::Worker) -> bool {
        let mut pause = Duration::from_millis(100);
        loop {
            if self.alive.upgrade().is_none() {
                return false;
            }
            match reopen() {
                Ok(backend) => {
                    worker.backend = backend;
                    return true;
                }
                Err(e) => {
                    tracing::error!(worker = %self.name, error = %e, "could not reopen the backend; retrying");
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::runtime::{BackendError, TensorSpec};
    use crate::tensor::{DataType, TensorData};

    /// Echoes its input; panics on a negative first element.
    struct Fragile;

    impl Backend for Fragile {
        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
            if let TensorData::Fp32(v) = &inputs[0].data {
                assert!(v[0] >= 0.0, "a negative input");
            }
            Ok(inputs)
        }
    }

    fn signature() -> Signature {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![1],
        };
        Signature {
            inputs: vec![spec.clone()],
            outputs: vec![spec],
        }
    }

    fn input(v: f32) -> Vec<Tensor> {
        vec![Tensor {
            name: "x".into(),
            shape: vec![1],
            data: TensorData::Fp32(vec![v]),
        }]
    }

    fn wait_healthy(rt: &VersionRuntime) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rt.is_healthy() {
            assert!(Instant::now() < deadline, "the worker was not replaced");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_panicking_worker_fails_its_job_and_gets_a_fresh_backend() {
        let opens = Arc::new(AtomicUsize::new(0));
        // the first reopen fails: the version stays unhealthy until one works
        let counter = opens.clone();
        let reopen: Reopen = Arc::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 {
                Err("not yet".into())
            } else {
                Ok(Box::new(Fragile) as Box<dyn Backend>)
            }
        });
        let config = ExecutionConfig::default();
        let rt = VersionRuntime::start_with_reopen(
            "m-1",
            signature(),
            config,
            vec![Box::new(Fragile)],
            Some(reopen),
        )
        .unwrap();
        assert!(rt.is_healthy());
        let err = rt.infer_blocking(input(-1.0)).unwrap_err();
        assert!(matches!(err, RuntimeError::Inference(_)), "{err:?}");
        wait_healthy(&rt);
        assert_eq!(
            opens.load(Ordering::SeqCst),
            2,
            "one failed reopen, then a good one"
        );
        assert_eq!(rt.infer_blocking(input(2.0)).unwrap(), input(2.0));
    }

    #[test]
    fn without_a_reopen_function_the_worker_keeps_its_backend() {
        let rt = VersionRuntime::start(
            "m-1",
            signature(),
            ExecutionConfig::default(),
            vec![Box::new(Fragile)],
        )
        .unwrap();
        assert!(rt.infer_blocking(input(-1.0)).is_err());
        assert_eq!(rt.infer_blocking(input(1.0)).unwrap(), input(1.0));
        assert!(rt.is_healthy());
    }

    /// Echoes its input after `pause`, recording the rows of every run.
    struct Slow {
        pause: Duration,
        runs: Arc<parking_lot::Mutex<Vec<i64>>>,
    }

    impl Backend for Slow {
        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
            std::thread::sleep(self.pause);
            self.runs.lock().push(inputs[0].shape[0]);
            Ok(inputs)
        }
    }

    fn row(v: f32) -> Vec<Tensor> {
        vec![Tensor {
            name: "x".into(),
            shape: vec![1, 1],
            data: TensorData::Fp32(vec![v]),
        }]
    }

    #[test]
    fn a_worker_waits_to_fill_a_batch_only_for_requests_on_their_way() {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 1],
        };
        let signature = Signature {
            inputs: vec![spec.clone()],
            outputs: vec![spec],
        };
        let runs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let config = ExecutionConfig {
            max_batch_size: 8,
            max_queue_delay_us: 10_000_000, // far longer than any wait below
            ..ExecutionConfig::default()
        };
        let backend = Slow {
            pause: Duration::from_millis(200),
            runs: runs.clone(),
        };
        let rt = Arc::new(VersionRuntime::start("m-1", signature, config, vec![Box::new(backend)]).unwrap());
        rt.infer_blocking(row(0.0)).unwrap(); // a first run: the worker knows how long one takes
        let later = |rt: &Arc<VersionRuntime>, after: Duration, arrival: Option<Arrival>| {
            let rt = rt.clone();
            std::thread::spawn(move || {
                std::thread::sleep(after);
                if let Some(a) = arrival {
                    a.arrived();
                }
                rt.infer_blocking(row(2.0)).unwrap()
            })
        };

        // nobody on the way: the first request runs alone at once, the
        // second (20 ms later) in the next run
        let second = later(&rt, Duration::from_millis(20), None);
        rt.infer_blocking(row(1.0)).unwrap();
        second.join().unwrap();
        assert_eq!(runs.lock()[1..], [1, 1]);

        // a request on its way (being decoded): the worker waits for it
        let arrival = rt.arrival();
        let second = later(&rt, Duration::from_millis(20), Some(arrival));
        rt.infer_blocking(row(1.0)).unwrap();
        second.join().unwrap();
        assert_eq!(runs.lock()[3..], [2], "the two requests share one run");
        assert_eq!(rt.arrivals.pending(), 0);
    }

    #[test]
    fn a_client_budget_is_only_the_clients_when_shorter() {
        let model = Duration::from_millis(100);
        let b = Budget::lowered(model, Some(Duration::from_millis(5)));
        assert_eq!(b.owner, crate::runtime::DeadlineOwner::Client);
        let b = Budget::lowered(model, Some(Duration::from_secs(60)));
        assert_eq!(b, Budget::model(model));
        assert_eq!(Budget::lowered(model, Some(model)), Budget::model(model));
        assert_eq!(Budget::lowered(model, None), Budget::model(model));
    }
}
