//! Graceful shutdown. A *drain* is the period after a stop was asked for in
//! which readiness already answers 503 (so load balancers stop sending) but
//! both listeners keep serving; after it they stop accepting and in-flight
//! requests finish.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::api::AppState;

/// A one-shot, cloneable "stop now" flag.
#[derive(Clone, Default)]
pub struct Trigger {
    inner: Arc<(AtomicBool, Notify)>,
}

impl Trigger {
    /// Fires the trigger; every waiter wakes.
    pub fn fire(&self) {
        self.inner.0.store(true, Ordering::SeqCst);
        self.inner.1.notify_waiters();
    }

    /// Resolves once the trigger fired.
    pub async fn fired(&self) {
        loop {
            let notified = self.inner.1.notified();
            if self.inner.0.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// What a listener waits for before it stops accepting.
#[derive(Clone)]
pub(crate) struct Drain {
    pub(crate) state: Arc<AppState>,
    pub(crate) trigger: Trigger,
    pub(crate) drain: Duration,
}

impl Drain {
    /// Resolves when the drain is over: readiness turns 503 the moment the
    /// trigger fires, then the drain period passes.
    pub(crate) async fn finished(self) {
        self.trigger.fired().await;
        self.state.begin_shutdown();
        tokio::time::sleep(self.drain).await;
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
