//! The worker loop: take a job, gather compatible jobs into a batch, run the
//! backend once, split the outputs back to each job.
//!
//! Batching is greedy: a worker takes whatever is already queued. It waits
//! for more only while requests routed to the version are on their way to
//! the queue ([`Arrivals`]), and then no longer than `max_delay` nor than
//! its last run took (a batch is worth waiting for only while it fills
//! sooner than a run would finish). So a lone client never waits (Triton's
//! fixed delay costs it `max_queue_delay_us` on every request), and no
//! worker idles a core for a request that is not coming while others wait.
//!
//! A worker's backend sits in a [`Slot`] that a request may also borrow to
//! run itself on its own thread ([`Runner`] does the bookkeeping for both),
//! see `VersionRuntime::infer`. Whoever catches a backend's panic marks the
//! slot broken; only the worker repairs it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::Mutex;

use super::arrival::Arrivals;
use super::job::{Backend, Job, RunMetrics, RuntimeError};
use super::stats::VersionStats;
use crate::tensor::{Tensor, TensorData};

/// What a worker's queue carries.
pub(super) enum Work {
    Job(Job),
    /// A backend panicked outside the worker: look at the slot.
    Repair,
}

/// One backend, owned by a worker and lent to requests that run inline.
pub(super) struct Slot {
    pub(super) backend: Box<dyn Backend>,
    /// Set when the backend panicked: it must not run until replaced.
    pub(super) broken: Option<String>,
}

impl Slot {
    pub(super) fn shared(backend: Box<dyn Backend>) -> Arc<Mutex<Slot>> {
        Arc::new(Mutex::new(Slot {
            backend,
            broken: None,
        }))
    }
}

/// Runs jobs on a slot and records what every run of a version records,
/// whichever thread runs it.
pub(super) struct Runner {
    pub(super) stats: Arc<VersionStats>,
    pub(super) metrics: Arc<RunMetrics>,
    pub(super) output_count: usize,
    /// The version's count of workers without a working backend; raised
    /// before the jobs of a panicked run are answered.
    pub(super) down: Arc<AtomicUsize>,
    /// Nanoseconds per row of the last run that answered one request
    /// (`u64::MAX` before the first).
    pub(super) single_row_ns: AtomicU64,
}

impl Runner {
    pub(super) fn new(
        stats: Arc<VersionStats>,
        metrics: Arc<RunMetrics>,
        output_count: usize,
        down: Arc<AtomicUsize>,
    ) -> Runner {
        Runner {
            stats,
            metrics,
            output_count,
            down,
            single_row_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// About how long a run of one job with `rows` rows takes, from the
    /// last single-request run; `None` before there was one.
    pub(super) fn estimate(&self, rows: usize) -> Option<Duration> {
        match self.single_row_ns.load(Ordering::Relaxed) {
            u64::MAX => None,
            ns => Some(Duration::from_nanos(ns.saturating_mul(rows.max(1) as u64))),
        }
    }
}

pub(super) struct Worker {
    pub(super) rx: Receiver<Work>,
    pub(super) slot: Arc<Mutex<Slot>>,
    pub(super) runner: Arc<Runner>,
    /// Maximum rows per run; 0 = no batching.
    pub(super) max_batch: usize,
    pub(super) max_delay: Duration,
    /// The version's requests on their way to the queue.
    pub(super) arrivals: Arrivals,
    /// Jobs taken but not run yet: one that did not fit the last batch, or
    /// a batch whose backend turned out broken (they wait for the new one).
    pub(super) held: VecDeque<Job>,
}

/// Why a worker's loop ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Exit {
    /// Every sender is gone: the version retired.
    Retired,
    /// The backend panicked (the message): it needs replacing.
    BackendPanicked(String),
}

impl Worker {
    /// Serves jobs until every sender is gone (the version retired) or the
    /// backend panicked.
    pub(super) fn run(&mut self) -> Exit {
        let mut last_run = Duration::ZERO;
        loop {
            let first = match self.held.pop_front() {
                Some(job) => job,
                None => match self.rx.recv() {
                    Ok(Work::Job(job)) => job,
                    Ok(Work::Repair) => match self.slot.lock().broken.take() {
                        Some(panic) => return Exit::BackendPanicked(panic),
                        None => continue, // repaired already
                    },
                    Err(_) => return Exit::Retired, // every sender dropped
                },
            };
            let batch = if self.max_batch == 0 || rows(&first).is_none() {
                vec![first]
            } else {
                self.gather(first, last_run)
            };
            let started = Instant::now();
            let mut slot = self.slot.lock();
            if let Some(panic) = slot.broken.take() {
                // broken by a request that ran inline: these wait for the new backend
                self.held.extend(batch);
                return Exit::BackendPanicked(panic);
            }
            self.runner.execute(&mut slot, batch);
            if let Some(panic) = slot.broken.take() {
                return Exit::BackendPanicked(panic);
            }
            last_run = started.elapsed();
        }
    }

    /// A batch starting with `first`: what is queued, and what is on its
    /// way for at most `max_delay` and `last_run`.
    fn gather(&mut self, first: Job, last_run: Duration) -> Vec<Job> {
        let mut total = rows(&first).unwrap_or(1);
        let mut batch = vec![first];
        let wait_until = Instant::now() + self.max_delay.min(last_run);
        while total < self.max_batch {
            let next = match self.held.pop_front() {
                Some(job) => job,
                None => match self.rx.try_recv() {
                    Ok(Work::Job(job)) => job,
                    Ok(Work::Repair) => continue, // the slot is checked before the run
                    Err(_) if self.arrivals.pending() == 0 => break,
                    Err(_) => match self.rx.recv_deadline(wait_until) {
                        Ok(Work::Job(job)) => job,
                        Ok(Work::Repair) => continue,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                },
            };
            match rows(&next) {
                Some(n) if total + n <= self.max_batch && same_row_shape(&batch[0], &next) => {
                    total += n;
                    batch.push(next);
                }
                _ => {
                    self.held.push_front(next);
                    break;
                }
            }
        }
        batch
    }
}

impl Runner {
    /// Runs `jobs` (one, or several compatible ones) on `slot` and answers
    /// each; a panic marks the slot broken.
    pub(super) fn execute(&self, slot: &mut Slot, jobs: Vec<Job>) {
        let started = Instant::now();
        let (live, expired): (Vec<Job>, Vec<Job>) = jobs.into_iter().partition(|j| j.deadline > started);
        for job in expired {
            let waited = started - job.enqueued;
            self.stats.record_failure(waited);
            let _ = job.reply.send(Err(RuntimeError::Deadline(job.budget)));
        }
        if live.is_empty() {
            return;
        }
        for job in &live {
            let waited = started - job.enqueued;
            self.stats.queue.add_one(waited);
            self.metrics.queue_wait.record(waited.as_secs_f64());
        }
        let requests = live.len();
        let (replies, counts, inputs) = split_jobs(live);
        let total_rows: usize = counts.iter().sum();
        let built = Instant::now();
        // the backend is the one part that may panic (ORT bindings, model
        // code); its jobs fail, the version turns unhealthy first
        let result = match catch_unwind(AssertUnwindSafe(|| slot.backend.run(inputs))) {
            Ok(result) => result,
            Err(panic) => {
                self.down.fetch_add(1, Ordering::SeqCst);
                slot.broken = Some(crate::telemetry::panic_message(panic.as_ref()));
                Err(crate::runtime::BackendError::Run(
                    "the worker running this request failed and is being replaced".into(),
                ))
            }
        };
        let ran = Instant::now();
        self.metrics.inference.record((ran - built).as_secs_f64());
        self.metrics.batch_rows.record(total_rows as f64);
        if requests == 1 && result.is_ok() {
            let per_row = (ran - built).as_nanos() / total_rows.max(1) as u128;
            self.single_row_ns
                .store(per_row.min(u64::MAX as u128 - 1) as u64, Ordering::Relaxed);
        }
        let outcome = result.map_err(RuntimeError::from).and_then(|outputs| {
            if requests == 1 {
                Ok(vec![outputs])
            } else {
                unbatch(outputs, &counts, self.output_count)
            }
        });
        let done = Instant::now();
        match outcome {
            Ok(per_job) => {
                self.stats
                    .record_batch(requests, total_rows, built - started, ran - built, done - ran);
                for ((reply, enqueued), outputs) in replies.into_iter().zip(per_job) {
                    self.stats.success.add_one(done - enqueued);
                    let _ = reply.send(Ok(outputs));
                }
            }
            Err(err) => {
                for (reply, enqueued) in replies {
                    self.stats.record_failure(done - enqueued);
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }
}

type Reply = (
    tokio::sync::oneshot::Sender<Result<Vec<Tensor>, RuntimeError>>,
    Instant,
);

/// Separates replies from inputs; concatenates inputs along the first
/// dimension when there are several jobs.
fn split_jobs(mut jobs: Vec<Job>) -> (Vec<Reply>, Vec<usize>, Vec<Tensor>) {
    if jobs.len() == 1 {
        let job = jobs.pop().expect("one job");
        let rows = rows(&job).unwrap_or(1);
        return (vec![(job.reply, job.enqueued)], vec![rows], job.inputs);
    }
    let counts: Vec<usize> = jobs.iter().map(|j| rows(j).unwrap_or(1)).collect();
    let total: usize = counts.iter().sum();
    let mut merged: Vec<Tensor> = jobs[0]
        .inputs
        .iter()
        .map(|t| {
            let per_row = t.data.len() / (t.shape[0].max(1) as usize);
            let mut shape = t.shape.clone();
            shape[0] = total as i64;
            Tensor {
                name: t.name.clone(),
                shape,
                data: TensorData::with_capacity(t.dtype(), per_row * total),
            }
        })
        .collect();
    let mut replies = Vec::with_capacity(jobs.len());
    for job in jobs {
        for (m, t) in merged.iter_mut().zip(&job.inputs) {
            m.data.extend_from(&t.data);
        }
        replies.push((job.reply, job.enqueued));
    }
    (replies, counts, merged)
}

/// Splits each batched output back into one output list per job.
fn unbatch(
    outputs: Vec<Tensor>,
    counts: &[usize],
    expected: usize,
) -> Result<Vec<Vec<Tensor>>, RuntimeError> {
    let total: usize = counts.iter().sum();
    if outputs.len() != expected {
        return Err(RuntimeError::Inference(format!(
            "model returned {} outputs, expected {expected}",
            outputs.len()
        )));
    }
    let mut per_job: Vec<Vec<Tensor>> = counts.iter().map(|_| Vec::with_capacity(outputs.len())).collect();
    for out in outputs {
        if out.shape.first().copied() != Some(total as i64) {
            return Err(RuntimeError::Inference(format!(
                "output '{}' has first dimension {:?}, expected the batch size {total}",
                out.name,
                out.shape.first()
            )));
        }
        let per_row = out.data.len().checked_div(total).unwrap_or(0);
        let mut start = 0;
        for (job_out, &n) in per_job.iter_mut().zip(counts) {
            let mut shape = out.shape.clone();
            shape[0] = n as i64;
            job_out.push(Tensor {
                name: out.name.clone(),
                shape,
                data: out.data.slice(start..start + n * per_row),
            });
            start += n * per_row;
        }
    }
    Ok(per_job)
}

/// Rows in a job (the first dimension of its inputs), when it has one.
pub(super) fn rows(job: &Job) -> Option<usize> {
    let first = job.inputs.first()?.shape.first().copied()?;
    job.inputs
        .iter()
        .all(|t| t.shape.first() == Some(&first))
        .then_some(first as usize)
}

/// The next run from `jobs`: the first job, and the later ones that fit
/// beside it (same non-batch dims, at most `max_batch` rows; alone when
/// `max_batch` is 0 or the job has no batch dimension). The others stay,
/// in order.
pub(super) fn take_batch(jobs: &mut VecDeque<Job>, max_batch: usize) -> Option<Vec<Job>> {
    let first = jobs.pop_front()?;
    let Some(mut total) = rows(&first).filter(|_| max_batch > 0) else {
        return Some(vec![first]);
    };
    let mut batch = vec![first];
    let mut i = 0;
    while i < jobs.len() && total < max_batch {
        match rows(&jobs[i]) {
            Some(n) if total + n <= max_batch && same_row_shape(&batch[0], &jobs[i]) => {
                total += n;
                batch.extend(jobs.remove(i));
            }
            _ => i += 1,
        }
    }
    Some(batch)
}

/// Two jobs may share a batch when every input has the same non-batch dims.
fn same_row_shape(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}
