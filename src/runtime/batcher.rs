//! The worker loop: take a job, gather compatible jobs into a batch, run the
//! backend once, split the outputs back to each job.
//!
//! Batching is greedy: a worker takes whatever is already queued. It waits
//! for more only while requests routed to the version are on their way to
//! the queue ([`Arrivals`]), and then no longer than `max_delay` nor than
//! its last run took (a batch is worth waiting for only while it fills
//! sooner than a run would finish). So a lone client never waits (Triton's
//! fixed delay costs it `max_queue_delay_us` on every request), and no
//! worker idles for a request that is not coming while others wait.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::arrival::Arrivals;
use super::job::{Backend, Job, RunMetrics, RuntimeError};
use super::stats::VersionStats;
use crate::tensor::{Tensor, TensorData};

pub(super) struct Worker {
    pub(super) rx: Receiver<Job>,
    pub(super) backend: Box<dyn Backend>,
    /// Maximum rows per run; 0 = no batching.
    pub(super) max_batch: usize,
    pub(super) max_delay: Duration,
    /// The version's requests on their way to the queue.
    pub(super) arrivals: Arrivals,
    pub(super) stats: Arc<VersionStats>,
    pub(super) metrics: Arc<RunMetrics>,
    pub(super) output_count: usize,
    /// The version's count of workers without a working backend; raised
    /// before the jobs of a panicked run are answered.
    pub(super) down: Arc<AtomicUsize>,
    /// Set when the backend panicked: the worker stops for a fresh one.
    pub(super) broken: Option<String>,
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
        let mut carry: Option<Job> = None;
        let mut last_run = Duration::ZERO;
        loop {
            if let Some(panic) = self.broken.take() {
                // a carried job waits in the queue's place for the next backend
                if let Some(job) = carry.take() {
                    let _ = job.reply.send(Err(RuntimeError::Inference(
                        "the worker running this request failed and is being replaced".into(),
                    )));
                }
                return Exit::BackendPanicked(panic);
            }
            let first = match carry.take() {
                Some(job) => job,
                None => match self.rx.recv() {
                    Ok(job) => job,
                    Err(_) => return Exit::Retired, // every sender dropped
                },
            };
            if self.max_batch == 0 || rows(&first).is_none() {
                self.execute(vec![first]);
                continue;
            }
            let mut batch = vec![first];
            let mut total = rows(&batch[0]).unwrap_or(1);
            let wait_until = Instant::now() + self.max_delay.min(last_run);
            while total < self.max_batch {
                let next = match self.rx.try_recv() {
                    Ok(job) => job,
                    Err(_) if self.arrivals.pending() == 0 => break,
                    Err(_) => match self.rx.recv_deadline(wait_until) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    },
                };
                match rows(&next) {
                    Some(n) if total + n <= self.max_batch && same_row_shape(&batch[0], &next) => {
                        total += n;
                        batch.push(next);
                    }
                    _ => {
                        carry = Some(next);
                        break;
                    }
                }
            }
            let started = Instant::now();
            self.execute(batch);
            last_run = started.elapsed();
        }
    }

    /// Runs `jobs` (one, or several compatible ones) and answers each.
    fn execute(&mut self, jobs: Vec<Job>) {
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
        let result = match catch_unwind(AssertUnwindSafe(|| self.backend.run(inputs))) {
            Ok(result) => result,
            Err(panic) => {
                self.down.fetch_add(1, Ordering::SeqCst);
                self.broken = Some(panic_message(panic.as_ref()));
                Err(crate::runtime::BackendError::Run(
                    "the worker running this request failed and is being replaced".into(),
                ))
            }
        };
        let ran = Instant::now();
        self.metrics.inference.record((ran - built).as_secs_f64());
        self.metrics.batch_rows.record(total_rows as f64);
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
fn rows(job: &Job) -> Option<usize> {
    let first = job.inputs.first()?.shape.first().copied()?;
    job.inputs
        .iter()
        .all(|t| t.shape.first() == Some(&first))
        .then_some(first as usize)
}

/// Two jobs may share a batch when every input has the same non-batch dims.
fn same_row_shape(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|(x, y)| x.shape.get(1..) == y.shape.get(1..))
}

/// The message of a caught panic.
pub(super) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}
