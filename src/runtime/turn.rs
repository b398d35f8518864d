//! *Turn batches*: the requests for a fast version that one thread's event
//! loop received in one turn, run together on that thread.
//!
//! The first request of a turn leads: it yields, so every other request the
//! loop has ready (and those the next poll of its sockets brings) joins the
//! batch first, then it runs the batch on a free backend. Nothing crosses
//! threads: no hand-off to a worker and no wake-up for the answers. When
//! every backend is busy, the batch goes to the workers' queue instead. A
//! leader dropped before it ran its batch (its client went away) hands the
//! other requests of its batch to the queue, so none of them is lost.

use std::sync::Arc;

use parking_lot::Mutex;
use thread_local::ThreadLocal;

use super::job::Job;

/// Each thread's batch of the current turn, for one version.
#[derive(Default)]
pub(super) struct TurnBatches {
    per_thread: ThreadLocal<Arc<Mutex<Vec<Job>>>>,
}

impl TurnBatches {
    /// Adds `job` to this thread's batch; when it is the first of the turn,
    /// the caller leads the batch (runs it after yielding).
    pub(super) fn join(&self, job: Job) -> Option<Leader> {
        let batch = self.per_thread.get_or(Default::default);
        let mut jobs = batch.lock();
        jobs.push(job);
        (jobs.len() == 1).then(|| Leader {
            // the leader may resume on another thread (a multi-threaded
            // runtime): it keeps the batch it leads, not the thread's
            batch: batch.clone(),
        })
    }
}

/// The request that runs its turn's batch.
pub(super) struct Leader {
    batch: Arc<Mutex<Vec<Job>>>,
}

impl Leader {
    /// The batch, closed: later requests on this thread start a new one.
    pub(super) fn take(&self) -> Vec<Job> {
        std::mem::take(&mut *self.batch.lock())
    }
}
