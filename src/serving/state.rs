//! The *state* of a running server: the repository and its snapshots, the
//! protection state, the shadow hub, where rollouts run (this server's
//! controller, or the fleet), the memory of recent request ids, and the
//! lifecycle (restored, shutting down). Every front end's handlers read
//! it; it is built once from plain [`Settings`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::recent::RecentRequests;
use crate::fleet::Fleet;
use crate::guard::{Guard, GuardSettings};
use crate::repository::Repository;
use crate::rollout::controller::{Controller, RolloutError};
use crate::rollout::local::{LocalMetrics, LocalStore};
use crate::rollout::operator::{LocalOperator, Operator};
use crate::traffic::shadow::ShadowHub;

/// What the shared state needs to know from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The header that carries the user key (sticky routing, rate limits).
    pub user_header: axum::http::HeaderName,
    /// Bearer token of the admin API and the repository API; `None` = open.
    pub admin_token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// How long a replaced stable version stays loaded for rollback.
    pub rollback_window: Duration,
    /// Mirrored requests that may wait for a shadow version.
    pub shadow_queue: usize,
    /// Data-plane requests served at once; beyond: 503.
    pub max_in_flight: usize,
    /// Where rollouts and their audit log are stored.
    pub state_dir: PathBuf,
    /// This server's name (the pod name in a fleet).
    pub pod_name: String,
    /// Rate limits and circuit breakers.
    pub guard: GuardSettings,
}

/// Where rollouts run.
pub enum Control {
    /// This server alone: rollouts in SQLite, its own controller.
    Local {
        controller: Arc<Controller>,
        store: Arc<LocalStore>,
    },
    /// A fleet: the cluster's `ModelRollout` objects, its leader decides.
    Fleet(Arc<Fleet>),
}

/// Shared state of every listener.
pub struct AppState {
    pub repo: Arc<Repository>,
    pub settings: Settings,
    pub shadow: Arc<ShadowHub>,
    /// Rollout commands and reads (the admin API's).
    pub rollouts: Arc<dyn Operator>,
    /// Where rollouts run.
    pub control: Control,
    /// Recent request ids → (model, version), for feedback attribution.
    pub recent: RecentRequests,
    /// Rate limits and circuit breakers.
    pub guard: Guard,
    /// Permits for data-plane requests in flight (load shedding).
    in_flight: Arc<Semaphore>,
    restored: AtomicBool,
    /// Cancelled when shutdown begins: readiness answers 503 from then on.
    shutdown: CancellationToken,
}

impl AppState {
    /// State over a repository (which may still be loading), running
    /// rollouts locally. Needs a tokio runtime (the shadow worker is a
    /// task); opens the rollout store.
    pub fn new(repo: Arc<Repository>, settings: Settings) -> Result<AppState, RolloutError> {
        let shadow = ShadowHub::start(settings.shadow_queue);
        let guard = Guard::new(&settings.guard);
        let breakers = guard.breakers.clone();
        let metrics = Arc::new(LocalMetrics {
            repo: repo.clone(),
            shadow: shadow.clone(),
            breakers: Some(Arc::new(move |model: &str, version: u64| {
                breakers.is_open(model, version)
            })),
        });
        let store = Arc::new(LocalStore::open(&settings.state_dir, repo.clone())?);
        let controller = Arc::new(Controller::new(repo.clone(), store.clone(), metrics));
        let rollouts = Arc::new(LocalOperator {
            controller: controller.clone(),
            repo: repo.clone(),
            rollback_window: settings.rollback_window,
        });
        Ok(AppState::build(
            repo,
            settings,
            shadow,
            guard,
            rollouts,
            Control::Local { controller, store },
        ))
    }

    /// State over a repository whose rollouts the fleet runs.
    pub fn with_fleet(repo: Arc<Repository>, settings: Settings, fleet: Arc<Fleet>) -> AppState {
        let shadow = ShadowHub::start(settings.shadow_queue);
        let guard = Guard::new(&settings.guard);
        AppState::build(
            repo,
            settings,
            shadow,
            guard,
            fleet.operator(),
            Control::Fleet(fleet),
        )
    }

    fn build(
        repo: Arc<Repository>,
        settings: Settings,
        shadow: Arc<ShadowHub>,
        guard: Guard,
        rollouts: Arc<dyn Operator>,
        control: Control,
    ) -> AppState {
        AppState {
            repo,
            shadow,
            rollouts,
            control,
            recent: RecentRequests::default(),
            guard,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            restored: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            settings,
        }
    }

    /// The fleet this server belongs to, in fleet mode.
    pub fn fleet(&self) -> Option<&Arc<Fleet>> {
        match &self.control {
            Control::Fleet(f) => Some(f),
            Control::Local { .. } => None,
        }
    }

    /// Active rollouts have their policies back.
    pub fn mark_restored(&self) {
        self.restored.store(true, Ordering::SeqCst);
    }

    /// True once active rollouts were restored after start-up.
    pub fn is_restored(&self) -> bool {
        self.restored.load(Ordering::SeqCst)
    }

    /// Why rollouts are not in place yet (restoring locally, syncing with
    /// the fleet), or `Ok`.
    pub fn rollouts_in_place(&self) -> Result<(), String> {
        if !self.is_restored() {
            return Err("restoring rollouts".into());
        }
        match &self.control {
            Control::Fleet(f) => f.synced(),
            Control::Local { .. } => Ok(()),
        }
    }

    /// The token cancelled when shutdown begins.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Marks the server as draining: readiness answers 503 from now on.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// True once shutdown began.
    pub fn is_shutting_down(&self) -> bool {
        self.shutdown.is_cancelled()
    }

    /// True while the circuit breaker of `model` version `version` is open
    /// (its versionless traffic falls back to stable).
    pub fn breaker_open(&self, model: &str, version: u64) -> bool {
        self.guard.breakers.is_open(model, version)
    }

    /// A permit for one data-plane request, or `None` when
    /// `max_in_flight` requests are being served (shed it).
    pub fn try_enter(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.in_flight.clone().try_acquire_owned().ok()
    }

    /// Data-plane requests being served now.
    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight.max(1) - self.in_flight.available_permits()
    }
}
