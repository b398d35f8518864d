//! *Arrivals*: requests routed to a version and on their way to its queue
//! (their inputs being decoded). A worker gathering a batch waits for more
//! jobs only while some are on their way: a batch then fills with requests
//! that are certain to come, and no worker idles a core for a request that
//! is not.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The count of one version's requests on their way to its queue.
#[derive(Debug, Default, Clone)]
pub(super) struct Arrivals(Arc<AtomicUsize>);

impl Arrivals {
    /// A request is on its way until [`Arrival::arrived`] or the drop.
    pub(super) fn start(&self) -> Arrival {
        self.0.fetch_add(1, Ordering::AcqRel);
        Arrival {
            count: self.0.clone(),
            done: AtomicBool::new(false),
        }
    }

    /// Requests on their way now.
    pub(super) fn pending(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// One request on its way to a version's queue.
#[derive(Debug)]
pub struct Arrival {
    count: Arc<AtomicUsize>,
    done: AtomicBool,
}

impl Arrival {
    /// The request reached the queue, or will not (an invalid request).
    pub fn arrived(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.arrived();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_arrival_counts_once_until_it_arrives_or_drops() {
        let a = Arrivals::default();
        let first = a.start();
        let second = a.start();
        assert_eq!(a.pending(), 2);
        first.arrived();
        first.arrived();
        assert_eq!(a.pending(), 1);
        drop(first);
        assert_eq!(a.pending(), 1);
        drop(second);
        assert_eq!(a.pending(), 0);
    }
}
