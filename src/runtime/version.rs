//! A *version runtime* owns a bounded queue and `instances` worker threads;
//! each worker owns one backend (an ONNX Runtime session in production) and
//! runs it synchronously. Async callers submit a job with `try_send` (full
//! queue → [`RuntimeError::QueueFull`]) and await a oneshot reply until the
//! request's deadline.
//!
//! A *fast* version (a one-request run under `inline_below_us`) is run on
//! the caller's thread instead when nothing is queued and a backend is
//! free: for a model that runs in tens of microseconds, handing the request
//! to a worker thread and the answer back (two thread wake-ups) costs more
//! than the run. Under load the queue is not empty, so requests go to the
//! workers and batch as before.
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
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::arrival::{Arrival, Arrivals};
use super::batcher::{self, Runner, Slot, Work};
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
    /// A request whose run is expected to take less than this runs on the
    /// thread that received it when nothing is queued and a backend is
    /// free (no hand-off to a worker thread); 0 turns this off.
    pub inline_below_us: u64,
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
            inline_below_us: 200,
        }
    }
}

/// Opens a fresh backend for a worker whose backend panicked.
pub type Reopen = Arc<dyn Fn() -> Result<Box<dyn Backend>, String> + Send + Sync>;

/// A loaded, running model version: the queue into its workers.
pub struct VersionRuntime {
    signature: Arc<Signature>,
    queue: Sender<Work>,
    config: ExecutionConfig,
    stats: Arc<VersionStats>,
    window: Window,
    /// Workers waiting for a fresh backend after a panic.
    workers_down: Arc<AtomicUsize>,
    /// The workers' backends, lent to requests that run inline.
    slots: Vec<Arc<Mutex<Slot>>>,
    runner: Arc<Runner>,
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
        let (tx, rx) = crossbeam_channel::bounded::<Work>(config.max_queue.max(1));
        let batching = if config.max_batch_size > 1 && signature.batchable() {
            config.max_batch_size
        } else {
            0
        };
        let workers_down = Arc::new(AtomicUsize::new(0));
        let arrivals = Arrivals::default();
        let alive = Arc::new(());
        let runner = Arc::new(Runner::new(
            stats.clone(),
            metrics,
            signature.outputs.len(),
            workers_down.clone(),
        ));
        let mut slots = Vec::new();
        for (i, backend) in backends.into_iter().enumerate() {
            let slot = Slot::shared(backend);
            slots.push(slot.clone());
            let worker = batcher::Worker {
                rx: rx.clone(),
                slot,
                runner: runner.clone(),
                max_batch: batching,
                max_delay: Duration::from_micros(config.max_queue_delay_us),
                arrivals: arrivals.clone(),
                held: Default::default(),
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
            queue: tx,
            config,
            stats,
            window: Window::default(),
            workers_down,
            slots,
            runner,
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
    /// when `None`). `server_idle` says the process serves no other
    /// request now: then a fast version may run it on this thread.
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        budget: Option<Budget>,
        server_idle: bool,
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
        let job = if server_idle {
            self.run_inline(job)
        } else {
            Some(job)
        };
        if let Some(job) = job {
            match self.queue.try_send(Work::Job(job)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.stats.record_failure(Duration::ZERO);
                    self.runner.metrics.shed.increment(1);
                    return Err(RuntimeError::QueueFull(self.queue.len()));
                }
                Err(TrySendError::Disconnected(_)) => return Err(RuntimeError::Closed),
            }
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
        self.queue
            .send(Work::Job(job))
            .map_err(|_| RuntimeError::Closed)?;
        rx.blocking_recv().unwrap_or_else(|_| Err(worker_lost()))
    }

    /// Runs `job` here when the version is fast and has no other request
    /// queued, running or on its way (the job is answered then); gives it
    /// back otherwise. Under load requests go to the workers, which batch
    /// them and run them beside the threads serving HTTP.
    fn run_inline(&self, job: Job) -> Option<Job> {
        let limit = Duration::from_micros(self.config.inline_below_us);
        let fast = batcher::rows(&job)
            .and_then(|rows| self.runner.estimate(rows))
            .is_some_and(|run| run < limit);
        if !fast || !self.queue.is_empty() || self.arrivals.pending() > 0 {
            return Some(job);
        }
        for slot in &self.slots {
            let Some(mut slot) = slot.try_lock() else { continue };
            if slot.broken.is_some() {
                continue;
            }
            self.runner.execute(&mut slot, vec![job]);
            if slot.broken.is_some() {
                // the worker owning this backend replaces it; the version
                // reports unhealthy until then
                let _ = self.queue.try_send(Work::Repair);
            }
            return None;
        }
        Some(job)
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
            worker.runner.metrics.restarts.increment(1);
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
                    *worker.slot.lock() = Slot {
                        backend,
                        broken: None,
                    };
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

    /// A runtime over one [`Fragile`] backend whose reopen function counts
    /// its calls (and fails the first when `first_reopen_fails`).
    fn fragile(config: ExecutionConfig, first_reopen_fails: bool) -> (VersionRuntime, Arc<AtomicUsize>) {
        let opens = Arc::new(AtomicUsize::new(0));
        let counter = opens.clone();
        let reopen: Reopen = Arc::new(move || {
            if counter.fetch_add(1, Ordering::SeqCst) == 0 && first_reopen_fails {
                Err("not yet".into())
            } else {
                Ok(Box::new(Fragile) as Box<dyn Backend>)
            }
        });
        let rt = VersionRuntime::start_with_reopen(
            "m-1",
            signature(),
            config,
            vec![Box::new(Fragile)],
            Some(reopen),
        )
        .unwrap();
        (rt, opens)
    }

    #[test]
    fn a_panicking_worker_fails_its_job_and_gets_a_fresh_backend() {
        // the first reopen fails: the version stays unhealthy until one works
        let (rt, opens) = fragile(ExecutionConfig::default(), true);
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

    /// Echoes its input, recording the thread of every run.
    struct Where(Arc<parking_lot::Mutex<Vec<std::thread::ThreadId>>>);

    impl Backend for Where {
        fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, BackendError> {
            self.0.lock().push(std::thread::current().id());
            Ok(inputs)
        }
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    /// Waits for the workers to let go of their backends: a worker answers
    /// before it does, and a request in between finds no free backend.
    fn wait_backends_free(rt: &VersionRuntime) {
        let since = Instant::now();
        while rt.slots.iter().any(|slot| slot.is_locked()) {
            assert!(
                since.elapsed() < Duration::from_secs(5),
                "a worker keeps its backend"
            );
            std::thread::yield_now();
        }
    }

    #[test]
    fn a_fast_version_runs_a_lone_request_on_the_callers_thread() {
        let here = std::thread::current().id();
        for (inline_below_us, server_idle, inline) in
            [(200_000, true, true), (200_000, false, false), (0, true, false)]
        {
            let threads = Arc::new(parking_lot::Mutex::new(Vec::new()));
            let config = ExecutionConfig {
                inline_below_us,
                ..ExecutionConfig::default()
            };
            let rt =
                VersionRuntime::start("m-1", signature(), config, vec![Box::new(Where(threads.clone()))])
                    .unwrap();
            // before any run the version's speed is unknown: never inline
            block_on(rt.infer(input(1.0), None, server_idle)).unwrap();
            wait_backends_free(&rt);
            let out = block_on(rt.infer(input(2.0), None, server_idle)).unwrap();
            assert_eq!(out, input(2.0));
            let threads = threads.lock();
            assert_ne!(threads[0], here, "the first run is a worker's");
            assert_eq!(
                threads[1] == here,
                inline,
                "inline_below_us {inline_below_us}, server idle {server_idle}"
            );
        }
    }

    #[test]
    fn a_backend_that_panics_inline_is_replaced_by_its_worker() {
        let config = ExecutionConfig {
            inline_below_us: 200_000,
            ..ExecutionConfig::default()
        };
        let (rt, opens) = fragile(config, false);
        rt.infer_blocking(input(1.0)).unwrap();
        wait_backends_free(&rt);
        let err = block_on(rt.infer(input(-1.0), None, true)).unwrap_err();
        assert!(matches!(err, RuntimeError::Inference(_)), "{err:?}");
        wait_healthy(&rt);
        assert_eq!(
            opens.load(Ordering::SeqCst),
            1,
            "the worker opened a fresh backend"
        );
        assert_eq!(block_on(rt.infer(input(3.0), None, true)).unwrap(), input(3.0));
        assert_eq!(rt.infer_blocking(input(4.0)).unwrap(), input(4.0));
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
