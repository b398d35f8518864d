//! A *version runtime* owns a bounded queue and `instances` worker threads;
//! each worker owns one backend (an ONNX Runtime session in production) and
//! runs it synchronously. Async callers submit a job with `try_send` (full
//! queue → [`RuntimeError::QueueFull`]) and await a oneshot reply until the
//! request's deadline.
//!
//! A *fast* version (a one-request run under `inline_below_us`) is run on
//! the caller's thread instead, with a free backend: for a model that runs
//! in tens of microseconds, handing the request to a worker thread and the
//! answer back (two thread wake-ups) costs more than the run. A request
//! served alone runs at once; concurrent ones run in batches of what the
//! thread's event loop received in one turn (see `turn`), for at most
//! [`TURN_BUDGET`] per turn. When every backend is busy, or the budget is
//! spent, they go to the workers, which batch them as they do a slow
//! version's.
//!
//! A worker thread is *supervised*: when its backend panics, the jobs of
//! that run fail (500), the thread stays, gets a fresh backend from the
//! version's [`Reopen`] function, and the version reports unhealthy (not
//! ready) until every worker has one again.

use std::collections::VecDeque;
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
use super::turn::{Leader, TurnBatches};
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
    /// thread that received it, with a free backend (no hand-off to a
    /// worker thread); 0 turns this off.
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
    /// Rows per run (0: no batching), as the workers batch.
    max_batch: usize,
    /// The batches of the current turn of each thread running requests
    /// inline.
    turns: TurnBatches,
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
            max_batch: batching,
            turns: TurnBatches::default(),
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
        let job = match (self.is_fast(&job), server_idle) {
            (false, _) => Some(job),
            (true, true) => self.run_inline(job),
            (true, false) => {
                self.run_in_turn(job).await;
                None
            }
        };
        let _awaiting = match job {
            Some(job) => {
                self.submit(job).map_err(|(_, error)| error)?;
                Some(super::Awaiting::start())
            }
            None => None,
        };
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

    /// True when a run of `job` alone is expected to take less than
    /// `inline_below_us` (never before the version's first run).
    fn is_fast(&self, job: &Job) -> bool {
        let limit = Duration::from_micros(self.config.inline_below_us);
        batcher::rows(job)
            .and_then(|rows| self.runner.estimate(rows))
            .is_some_and(|run| run < limit)
    }

    /// Puts `job` in the workers' queue; a full or closed queue gives it
    /// back with the error (a full one is counted as shed).
    fn submit(&self, job: Job) -> Result<(), (Job, RuntimeError)> {
        let (work, error) = match self.queue.try_send(Work::Job(job)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(work)) => {
                self.stats.record_failure(Duration::ZERO);
                self.runner.metrics.shed.increment(1);
                (work, RuntimeError::QueueFull(self.queue.len()))
            }
            Err(TrySendError::Disconnected(work)) => (work, RuntimeError::Closed),
        };
        match work {
            Work::Job(job) => Err((job, error)),
            Work::Repair => unreachable!("a job was sent"),
        }
    }

    /// [`submit`](Self::submit), answering the job with the error itself.
    fn submit_or_answer(&self, job: Job) {
        if let Err((job, error)) = self.submit(job) {
            let _ = job.reply.send(Err(error));
        }
    }

    /// Runs `job` here when nothing else for the version is queued or on
    /// its way and a backend is free (the job is answered then); gives it
    /// back otherwise.
    fn run_inline(&self, job: Job) -> Option<Job> {
        if !self.queue.is_empty() || self.arrivals.pending() > 0 {
            return Some(job);
        }
        self.run_here(VecDeque::from([job])).pop_front()
    }

    /// Adds `job` to this thread's batch of the turn; the first request of
    /// the turn yields to the others, then runs the batch here, or hands
    /// it to the workers when no backend is free. Every job is answered.
    async fn run_in_turn(&self, job: Job) {
        let Some(leader) = self.turns.join(job) else {
            return;
        };
        let mut leading = Leading {
            rt: self,
            leader,
            ran: false,
        };
        tokio::task::yield_now().await;
        leading.ran = true;
        for job in self.run_here(leading.leader.take().into()) {
            self.submit_or_answer(job);
        }
    }

    /// Runs `jobs` in batches on a free backend, on this thread, for at
    /// most [`TURN_BUDGET`]; gives back what did not run (no backend free,
    /// it broke on the way, or the budget is spent).
    fn run_here(&self, mut jobs: VecDeque<Job>) -> VecDeque<Job> {
        let free = self
            .slots
            .iter()
            .filter_map(|slot| slot.try_lock())
            .find(|slot| slot.broken.is_none());
        let Some(mut slot) = free else { return jobs };
        let started = Instant::now();
        while let Some(batch) = batcher::take_batch(&mut jobs, self.max_batch) {
            self.runner.execute(&mut slot, batch);
            if slot.broken.is_some() {
                // the worker owning this backend replaces it; the version
                // reports unhealthy until then
                let _ = self.queue.try_send(Work::Repair);
                break;
            }
            if !jobs.is_empty() && started.elapsed() >= TURN_BUDGET {
                break;
            }
        }
        jobs
    }
}

/// The longest a turn's batches run on the thread that received them: the
/// thread's other connections wait meanwhile, so what is left then goes to
/// the workers (a batch already started runs to its end).
const TURN_BUDGET: Duration = Duration::from_millis(1);

/// A turn's leader; dropped before it ran its batch (its client went
/// away), it hands the others' requests to the workers.
struct Leading<'a> {
    rt: &'a VersionRuntime,
    leader: Leader,
    /// Whether the leader took its batch to run it.
    ran: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.ran {
            return;
        }
        // The first job is the leader's own, and its client went away:
        // running it would only waste a row of a worker's batch. Its
        // receiver is dropped after this guard, so a worker could not tell.
        for job in self.leader.take().into_iter().skip(1) {
            self.rt.submit_or_answer(job);
        }
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
                    crate::telemetry::panic_message(panic.as_ref())
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
#[path = "version_tests.rs"]
mod tests;
