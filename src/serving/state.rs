//! The *state* of a running server: the repository and its snapshots, the
//! protection state, the shadow hub, where rollouts run (this server's
//! controller, or the fleet), the memory of recent request ids, the
//! per-second history of the live page, and the lifecycle (restored,
//! shutting down). Every front end's handlers read it; it is built once
//! from plain [`Settings`].

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::history::History;
use super::limits::BodyBudget;
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
    /// True when the data listener is bound to a loopback address: control
    /// surfaces without a configured token are open there, and only there.
    pub data_loopback: bool,
    /// Serve Triton's model-repository API on the data listener.
    pub repository_api: bool,
    /// Who may post feedback, and which values.
    pub feedback: FeedbackSettings,
    /// Request bodies: read deadline, minimum rate, budget.
    pub bodies: BodySettings,
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

/// Who may post feedback, and which values are accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// A bearer token that may post feedback (besides the admin token).
    pub token: Option<String>,
    /// The smallest and largest value accepted (inclusive).
    pub min: f64,
    pub max: f64,
}

/// How request bodies are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySettings {
    /// The whole body must arrive within this.
    pub read_timeout: Duration,
    /// Bytes per second a body must average once its first seconds are
    /// over (0 = no minimum).
    pub min_rate: usize,
    /// Bytes of bodies held at once, over all requests.
    pub budget: usize,
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
    /// The last 15 minutes per version, one sample a second (the live page).
    pub history: History,
    /// Permits for data-plane requests in flight (load shedding).
    in_flight: Arc<Semaphore>,
    /// Requests in flight as admissions found them, averaged over about
    /// the last eight (1/256ths).
    recent_in_flight: AtomicU32,
    /// Bytes of request bodies held at once.
    pub body_budget: BodyBudget,
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
        // a rollout (or a retry) starts with a closed breaker and fresh
        // shadow counters: an earlier attempt's failures do not decide it
        let (breakers, mirror) = (guard.breakers.clone(), shadow.clone());
        controller.on_fresh_start(Box::new(move |model, stable, candidate| {
            breakers.reset(model, candidate);
            mirror.reset(model, stable, candidate);
        }));
        let rollouts = Arc::new(LocalOperator {
            controller: controller.clone(),
            store: store.clone(),
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
            history: History::default(),
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight.max(1))),
            recent_in_flight: AtomicU32::new(0),
            body_budget: BodyBudget::new(settings.bodies.budget),
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

    /// True when `model` has an active rollout here, so it must not be
    /// unloaded (in a fleet the policy it routes by refuses the unload).
    pub fn rollout_holds_any(&self, model: &str) -> bool {
        match &self.control {
            Control::Local { store, .. } => store.holds_any(model),
            Control::Fleet(_) => false,
        }
    }

    /// True when an active rollout needs `version` of `model` (its stable
    /// or candidate; in a fleet, a version its policy routes or mirrors to):
    /// repository polling must not unload it.
    pub fn rollout_holds(&self, model: &str, version: u64) -> bool {
        match &self.control {
            Control::Local { store, .. } => store.holds(model, version),
            Control::Fleet(_) => self.repo.snapshot().models.get(model).is_some_and(|m| {
                m.policy.as_ref().is_some_and(|p| {
                    let s = p.spec();
                    s.stable == version
                        || s.candidate.as_ref().is_some_and(|c| c.version == version)
                        || s.shadow.as_ref().is_some_and(|sh| sh.version == version)
                })
            }),
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

    /// True when a control surface of the data listener (repository API,
    /// feedback) may be used with `given` as its bearer token: the admin
    /// token (or `also`) must match when one is configured; without any,
    /// only a loopback data listener is open.
    pub fn data_control_allowed(&self, given: Option<&str>, also: Option<&str>) -> bool {
        let tokens: Vec<&str> = [self.settings.admin_token.as_deref(), also]
            .into_iter()
            .flatten()
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            return self.settings.data_loopback;
        }
        let given = given.unwrap_or("");
        // constant-time per token; which token matched is not observable
        tokens.iter().fold(false, |ok, t| {
            ok | bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), t.as_bytes()))
        })
    }

    /// True when an `Authorization` value carries the admin token
    /// (`Bearer <token>`, compared in constant time), or when no token is
    /// configured (the server starts without one only when the listeners
    /// that expose it are on loopback). Guards gRPC's repository RPCs.
    pub fn authorized(&self, authorization: Option<&str>) -> bool {
        let Some(expected) = self.settings.admin_token.as_deref().filter(|t| !t.is_empty()) else {
            return true;
        };
        let given = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            expected.as_bytes(),
        ))
    }

    /// Data-plane requests being served now.
    pub fn in_flight(&self) -> usize {
        self.settings.max_in_flight.max(1) - self.in_flight.available_permits()
    }

    /// Counts in an admitted request; true when it is served alone and
    /// the ones before it were too (one client at a time: no batch would
    /// form, so a fast version runs it at once, without waiting for the
    /// rest of its thread's turn).
    pub fn admitted_alone(&self) -> bool {
        let before = self.recent_in_flight.load(Ordering::Relaxed);
        let (average, alone) = admission(before, self.in_flight());
        // lost updates between racing admissions only blur the average
        self.recent_in_flight.store(average, Ordering::Relaxed);
        alone
    }
}

/// The average of in-flight requests (1/256ths) after an admission that
/// found `in_flight`, and whether that request and the recent ones were
/// alone (the average below 1.25).
fn admission(average: u32, in_flight: usize) -> (u32, bool) {
    let now = (in_flight.min(1 << 16) as u32) << 8;
    let average = average - average / 8 + now / 8;
    (average, in_flight <= 1 && average < (1 << 8) + (1 << 8) / 4)
}

#[cfg(test)]
mod tests {
    use super::admission;

    #[test]
    fn requests_count_as_alone_only_after_a_run_of_lone_ones() {
        let mut average = 0;
        let mut alone = false;
        for _ in 0..32 {
            (average, alone) = admission(average, 1);
        }
        assert!(alone, "one client at a time");
        (average, alone) = admission(average, 2);
        assert!(!alone, "another request is in flight");
        // a single lone request after concurrent ones is not enough
        for _ in 0..8 {
            (average, _) = admission(average, 3);
        }
        (average, alone) = admission(average, 1);
        assert!(!alone, "the recent ones were not alone");
        let mut lone = 1;
        while !alone {
            (average, alone) = admission(average, 1);
            lone += 1;
        }
        assert!((4..=24).contains(&lone), "alone again after {lone} lone requests");
    }
}
