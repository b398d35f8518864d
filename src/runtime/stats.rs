//! Per-version counters: the source of the Triton statistics extension and
//! of the metrics that rollouts analyse. Plain atomics, so the request path
//! never takes a lock except for the per-batch-size table.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;

/// A count and a total duration in nanoseconds.
#[derive(Debug, Default)]
pub struct Tally {
    pub count: AtomicU64,
    pub ns: AtomicU64,
}

impl Tally {
    /// Adds one event that took `d`.
    pub fn add_one(&self, d: Duration) {
        self.add(1, d);
    }

    fn add(&self, n: u64, d: Duration) {
        self.count.fetch_add(n, Relaxed);
        self.ns.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// (count, total nanoseconds).
    pub fn get(&self) -> (u64, u64) {
        (self.count.load(Relaxed), self.ns.load(Relaxed))
    }
}

/// Statistics for one batch size.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchTally {
    pub count: u64,
    pub compute_input_ns: u64,
    pub compute_infer_ns: u64,
    pub compute_output_ns: u64,
}

/// Counters of one model version since it was loaded.
#[derive(Debug, Default)]
pub struct VersionStats {
    /// Requests answered successfully, with their end-to-end time in the runtime.
    pub success: Tally,
    /// Requests that failed (queue full, deadline, inference error).
    pub fail: Tally,
    /// Time requests waited in the queue.
    pub queue: Tally,
    /// Building ORT inputs (per request share).
    pub compute_input: Tally,
    /// Running ORT (per request share).
    pub compute_infer: Tally,
    /// Splitting outputs back (per request share).
    pub compute_output: Tally,
    /// Rows inferred successfully (a batch of n rows counts n).
    pub inference_count: AtomicU64,
    /// Successful ORT runs (a batch counts once).
    pub execution_count: AtomicU64,
    /// Milliseconds since the Unix epoch of the last successful ORT run (0 before any).
    pub last_inference_ms: AtomicU64,
    batches: Mutex<BTreeMap<usize, BatchTally>>,
}

impl VersionStats {
    /// Records a failed request that spent `d` in the runtime.
    pub fn record_failure(&self, d: Duration) {
        self.fail.add(1, d);
    }

    /// Records one successful ORT run over `requests` requests with `rows`
    /// rows (Triton counts only successful executions and inferences).
    pub(crate) fn record_batch(
        &self,
        requests: usize,
        rows: usize,
        input: Duration,
        infer: Duration,
        output: Duration,
    ) {
        self.inference_count.fetch_add(rows as u64, Relaxed);
        self.execution_count.fetch_add(1, Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        self.last_inference_ms.store(now_ms, Relaxed);
        let n = requests as u64;
        self.compute_input.add(n, input);
        self.compute_infer.add(n, infer);
        self.compute_output.add(n, output);
        let mut batches = self.batches.lock();
        let b = batches.entry(rows).or_default();
        b.count += 1;
        b.compute_input_ns += input.as_nanos() as u64;
        b.compute_infer_ns += infer.as_nanos() as u64;
        b.compute_output_ns += output.as_nanos() as u64;
    }

    /// Per batch size (in rows): how many runs and their compute times.
    pub fn batch_stats(&self) -> BTreeMap<usize, BatchTally> {
        self.batches.lock().clone()
    }
}
