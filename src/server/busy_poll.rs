//! Busy polling: after an HTTP thread writes an answer, it keeps polling
//! its sockets for a short while before it sleeps.
//!
//! A client that got its answer often sends its next request within tens
//! of microseconds. A thread asleep in `epoll_wait` then has to be woken,
//! and on a shared core that wake can wait behind another thread's time
//! slice: at 8 connections on two cores this is where digits' p99 came from
//! (3.2 ms, against 0.8 ms while polling; BENCHMARKS.md). So each HTTP
//! thread runs a *poller* task: for `budget` after each answer written on
//! the thread it yields to the thread's event loop, which then polls the
//! sockets without blocking, and it gives the CPU to any other runnable
//! thread of the core between polls (`sched_yield`), so the inference
//! workers and other processes lose nothing but the syscalls.
//!
//! The poller stands down while any request of its thread waits for an
//! inference worker: the worker needs the cores more than the thread needs
//! to be awake, and its answer wakes the thread anyway.

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// This thread's poller, when it has one.
struct Poller {
    budget: Duration,
    /// Polling goes on until then.
    until: Instant,
    /// The poller task, asleep until the next answer.
    asleep: Option<Waker>,
}

thread_local! {
    static POLLER: RefCell<Option<Poller>> = const { RefCell::new(None) };
}

/// Called when an answer is written: this thread's poller, if any, polls
/// for its budget from now on.
pub fn answered() {
    POLLER.with(|p| {
        let Ok(mut p) = p.try_borrow_mut() else {
            return;
        };
        if let Some(p) = p.as_mut() {
            p.until = Instant::now() + p.budget;
            if let Some(waker) = p.asleep.take() {
                waker.wake();
            }
        }
    });
}

/// The poller of the current thread's (single-threaded) runtime; runs
/// until the runtime ends. A zero `budget` installs nothing.
pub async fn run(budget: Duration) {
    if budget.is_zero() {
        return;
    }
    POLLER.set(Some(Poller {
        budget,
        until: Instant::now(),
        asleep: None,
    }));
    loop {
        // asleep until an answer is written
        poll_fn(|cx| {
            POLLER.with_borrow_mut(|p| {
                let p = p.as_mut().expect("installed above");
                if p.until > Instant::now() {
                    Poll::Ready(())
                } else {
                    p.asleep = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
        })
        .await;
        while polling() {
            std::thread::yield_now();
            tokio::task::yield_now().await;
        }
    }
}

/// Whether the poller goes on; ends its turn when a request of this thread
/// waits for a worker.
fn polling() -> bool {
    POLLER.with_borrow_mut(|p| {
        let p = p.as_mut().expect("installed by run");
        let now = Instant::now();
        if crate::runtime::awaiting_workers() > 0 {
            p.until = now;
        }
        p.until > now
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Awaiting;

    /// Times the runtime's thread parked (slept in the driver) while `f` ran.
    async fn parks_during(f: impl std::future::Future<Output = ()>) -> u64 {
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.worker_park_count(0);
        f.await;
        metrics.worker_park_count(0) - before
    }

    #[test]
    fn after_an_answer_the_thread_polls_for_its_budget_then_sleeps() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(run(Duration::from_millis(300)));
            tokio::task::yield_now().await;
            let nap = || tokio::time::sleep(Duration::from_millis(20));
            assert!(parks_during(nap()).await > 0, "no answer yet: it sleeps");

            answered();
            assert_eq!(parks_during(nap()).await, 0, "within the budget it never sleeps");
            let past = tokio::time::sleep(Duration::from_millis(400));
            assert!(parks_during(past).await > 0, "past the budget it sleeps again");

            // a request of this thread waits for a worker: no polling
            let waiting = Awaiting::start();
            answered();
            assert!(parks_during(nap()).await > 0);
            drop(waiting);
            answered();
            assert_eq!(parks_during(nap()).await, 0);
        });
    }

    #[test]
    fn no_budget_and_no_poller_change_nothing() {
        answered(); // no poller on this thread
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            tokio::spawn(run(Duration::ZERO));
            tokio::task::yield_now().await;
            answered();
            let nap = tokio::time::sleep(Duration::from_millis(20));
            assert!(parks_during(nap).await > 0);
        });
    }
}
