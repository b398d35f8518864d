//! How many requests of this thread wait for a worker's answer.

use std::cell::Cell;

thread_local! {
    static AWAITING: Cell<usize> = const { Cell::new(0) };
}

/// Counts one request of this thread as waiting for a worker until dropped.
pub(crate) struct Awaiting(());

impl Awaiting {
    pub(crate) fn start() -> Awaiting {
        AWAITING.with(|a| a.set(a.get() + 1));
        Awaiting(())
    }
}

impl Drop for Awaiting {
    fn drop(&mut self) {
        AWAITING.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Requests of this thread waiting for a worker's answer now.
pub fn awaiting_workers() -> usize {
    AWAITING.with(Cell::get)
}
