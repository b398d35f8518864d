//! The controller runs rollouts: it reads each active one from the
//! [`PolicyStore`], gathers an [`Observation`] through the
//! [`MetricsSource`] when an analysis is due, lets the pure state machine
//! decide, and writes the result back with compare-and-swap. A conflict
//! means someone else decided first: the tick skips (and reads again next
//! time), a command reads again and recomputes. The clock is injected.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::analysis::{analyze, measure, MetricsSource};
use super::machine::{self, Action, Event, Observation, Phase, Rollout, Stage};
use super::policy_store::{PolicyStore, PolicyStoreError, Versioned};
use super::spec::RolloutSpec;
use super::store::StoreError;
use super::{statistics, validation};
use crate::repository::Repository;

/// Seconds since the Unix epoch.
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn at(secs: f64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0))
}

/// The clock the controller reads (seconds since the Unix epoch).
pub type Clock = Arc<dyn Fn() -> f64 + Send + Sync>;

/// Why a rollout command was refused or failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RolloutError {
    /// Unknown model, version or rollout.
    #[error("{0}")]
    NotFound(String),
    /// The spec is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The command does not fit the rollout's phase.
    #[error("{0}")]
    Conflict(String),
    /// The rollout store failed.
    #[error(transparent)]
    Store(#[from] PolicyStoreError),
    /// The rollout store cannot be reached now (a fleet's API is down).
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for RolloutError {
    fn from(e: StoreError) -> RolloutError {
        RolloutError::Store(e.into())
    }
}

/// How often a command retries after a compare-and-swap conflict.
const CONFLICT_RETRIES: usize = 5;

/// The new rollout of `spec` on `model`, checked against what this server
/// has loaded or on disk: the model exists, it has a stable version other
/// than the candidate, and the candidate exists. `current` is the model's
/// newest rollout, which must be finished; `stable` overrides the
/// repository's default version (a fleet's policy names it).
pub fn plan_start(
    repo: &Repository,
    model: &str,
    spec: RolloutSpec,
    current: Option<&Rollout>,
    stable: Option<u64>,
    now: f64,
) -> Result<Rollout, RolloutError> {
    spec.check().map_err(|e| RolloutError::Invalid(e.to_string()))?;
    let snapshot = repo.snapshot();
    let m = snapshot
        .models
        .get(model)
        .ok_or_else(|| RolloutError::NotFound(format!("unknown model '{model}'")))?;
    if let Some(r) = current.filter(|r| !r.phase.is_final()) {
        return Err(RolloutError::Conflict(format!(
            "model '{model}' already has an active rollout (id {}, {:?}); abort it first",
            r.id, r.phase
        )));
    }
    let stable = stable
        .or_else(|| m.default_version())
        .ok_or_else(|| RolloutError::Conflict(format!("model '{model}' has no stable version")))?;
    if stable == spec.candidate {
        return Err(RolloutError::Invalid(format!(
            "version {stable} is already the stable version"
        )));
    }
    if !m.versions.contains_key(&spec.candidate) && !repo.versions_on_disk(model).contains(&spec.candidate) {
        return Err(RolloutError::NotFound(format!(
            "model '{model}' has no version {} (neither loaded nor on disk)",
            spec.candidate
        )));
    }
    let mut r = Rollout::new(0, model, stable, spec, now);
    // the model's allow-list, labels and other shadows stay in force
    if let Some(p) = &m.policy {
        r.kept = machine::Kept::of(p.spec(), r.stable, r.candidate);
    }
    // revisions never go down across the rollouts of a model
    r.revision = current.map_or(0, |c| c.revision).max(m.policy_revision) + 1;
    Ok(r)
}

/// The event that records a rollout's start.
pub fn start_event(r: &Rollout, actor: &str) -> Event {
    Event {
        at: r.started_at,
        phase: r.phase,
        step: 0,
        weight: crate::policy::Weight::ZERO,
        decision: format!("started: {} → {}", r.stable, r.candidate),
        metrics: json!({"spec": r.spec}),
        actor: actor.into(),
    }
}

/// Called when a rollout (re)starts from its first step, with (model,
/// stable, candidate): the server resets the candidate's circuit breaker
/// and the pair's shadow counters, so nothing from an earlier attempt
/// decides this one.
pub type FreshStart = Box<dyn Fn(&str, u64, u64) + Send + Sync>;

/// The rollout controller.
pub struct Controller {
    store: Arc<dyn PolicyStore>,
    repo: Arc<Repository>,
    metrics: Arc<dyn MetricsSource>,
    clock: Clock,
    /// Serialises decisions (ticks and commands) within this process.
    turn: tokio::sync::Mutex<()>,
    fresh_start: OnceLock<FreshStart>,
}

impl Controller {
    /// A controller over `store`, reading `metrics`, on the system clock.
    pub fn new(
        repo: Arc<Repository>,
        store: Arc<dyn PolicyStore>,
        metrics: Arc<dyn MetricsSource>,
    ) -> Controller {
        Controller::with_clock(repo, store, metrics, Arc::new(now_secs))
    }

    /// Like [`new`](Self::new), on `clock` (tests).
    pub fn with_clock(
        repo: Arc<Repository>,
        store: Arc<dyn PolicyStore>,
        metrics: Arc<dyn MetricsSource>,
        clock: Clock,
    ) -> Controller {
        Controller {
            store,
            repo,
            metrics,
            clock,
            turn: tokio::sync::Mutex::new(()),
            fresh_start: OnceLock::new(),
        }
    }

    /// Sets what happens when a rollout starts or is retried (once).
    pub fn on_fresh_start(&self, hook: FreshStart) {
        let _ = self.fresh_start.set(hook);
    }

    fn fresh(&self, r: &Rollout) {
        if let Some(hook) = self.fresh_start.get() {
            hook(&r.model, r.stable, r.candidate);
        }
    }

    /// The newest rollout of `model`.
    pub async fn get(&self, model: &str) -> Result<Option<Rollout>, RolloutError> {
        Ok(self.store.load(model).await?.map(|v| v.rollout))
    }

    /// The audit log of `model`.
    pub async fn events(&self, model: &str) -> Result<Vec<(i64, Event)>, RolloutError> {
        Ok(self.store.events(model).await?)
    }

    /// The newest `limit` events of `model`'s audit log, oldest first.
    pub async fn recent_events(&self, model: &str, limit: usize) -> Result<Vec<(i64, Event)>, RolloutError> {
        Ok(self.store.recent_events(model, limit).await?)
    }

    /// Starts a rollout of `spec` on `model` from its current stable version.
    pub async fn start(&self, model: &str, spec: RolloutSpec) -> Result<Rollout, RolloutError> {
        spec.check().map_err(|e| RolloutError::Invalid(e.to_string()))?;
        let _turn = self.turn.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            let current = self.store.load(model).await?;
            let mut r = plan_start(
                &self.repo,
                model,
                spec.clone(),
                current.as_ref().map(|c| &c.rollout),
                None,
                (self.clock)(),
            )?;
            r.id = self.store.next_id(model).await?;
            let event = start_event(&r, "admin");
            let expected = current.as_ref().map(|c| c.version.as_str());
            // before the policy routes to it: a closed breaker, fresh counters
            self.fresh(&r);
            match self.store.save(expected, &r, Some(&event)).await {
                Ok(_) => return Ok(r),
                Err(PolicyStoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(conflict(model))
    }

    /// Applies a manual action.
    pub async fn act(&self, model: &str, action: Action) -> Result<Rollout, RolloutError> {
        let _turn = self.turn.lock().await;
        for _ in 0..CONFLICT_RETRIES {
            let current = self
                .store
                .load(model)
                .await?
                .ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no rollout")))?;
            let (n, e) = machine::act(&current.rollout, action, (self.clock)())
                .map_err(|e| RolloutError::Conflict(e.to_string()))?;
            if action == Action::Retry {
                self.fresh(&n);
            }
            match self.store.save(Some(&current.version), &n, Some(&e)).await {
                Ok(_) => return Ok(n),
                Err(PolicyStoreError::Conflict(_)) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(conflict(model))
    }

    /// One controller pass: every active rollout whose analysis is due.
    pub async fn tick(&self) {
        let active = match self.store.active().await {
            Ok(active) => active,
            Err(e) => {
                tracing::warn!(error = %e, "rollouts not readable; no analysis this tick");
                return;
            }
        };
        for v in active {
            if machine::analysis_due(&v.rollout, (self.clock)()) {
                self.analyse(v).await;
            }
        }
    }

    /// Observes, decides and writes one rollout; a conflict (someone wrote
    /// since it was read) drops this decision.
    async fn analyse(&self, v: Versioned) {
        let obs = observe(&self.repo, self.metrics.as_ref(), &v.rollout, &self.clock).await;
        let _turn = self.turn.lock().await;
        let (n, e) = machine::decide(&v.rollout, &obs, (self.clock)());
        if let Some(e) = &e {
            tracing::info!(model = %n.model, rollout = n.id, phase = ?e.phase, step = e.step, weight = %e.weight, actor = %e.actor, "{}", e.decision);
        }
        match self.store.save(Some(&v.version), &n, e.as_ref()).await {
            Ok(_) => {}
            Err(PolicyStoreError::Conflict(_)) => {
                tracing::debug!(model = %n.model, "rollout changed while it was analysed; deciding again next tick")
            }
            Err(err) => tracing::error!(model = %n.model, error = %err, "rollout step not stored"),
        }
    }
}

fn conflict(model: &str) -> RolloutError {
    RolloutError::Conflict(format!(
        "the rollout of model '{model}' kept changing while the command was applied; try again"
    ))
}

/// Gathers what the state machine needs for `r` now. A metrics error on
/// any read makes the whole observation "cannot tell".
pub async fn observe(
    repo: &Arc<Repository>,
    metrics: &dyn MetricsSource,
    r: &Rollout,
    clock: &Clock,
) -> Observation {
    let mut obs = Observation::default();
    if r.phase == Phase::Validating {
        let (repo, model, c, s) = (repo.clone(), r.model.clone(), r.candidate, r.stable);
        let report =
            tokio::task::spawn_blocking(move || validation::validate(&repo, &model, c, Some(s))).await;
        obs.validation = Some(match report {
            Ok(report) if report.passed => Ok(serde_json::to_value(&report).unwrap_or(Value::Null)),
            Ok(report) => Err(report.failures()),
            Err(e) => Err(format!("validation crashed: {e}")),
        });
        return obs;
    }
    let began = clock();
    if let Err(e) = gather(metrics, r, began, &mut obs).await {
        obs.metrics_error = Some(e.to_string());
    }
    obs
}

async fn gather(
    metrics: &dyn MetricsSource,
    r: &Rollout,
    began: f64,
    obs: &mut Observation,
) -> Result<(), super::analysis::MetricsError> {
    obs.breaker_open = metrics
        .breaker_open(&r.model, r.candidate, at(r.step_started_at))
        .await?;
    obs.converged_at = match r.revision_converged_at {
        Some(t) => Some(t),
        None => metrics.converged(&r.model, r.revision).await?,
    };
    let Some(converged) = obs.converged_at else {
        return Ok(());
    };
    // A window that starts now is empty: analyse from the next tick on.
    let start = converged.max(r.step_started_at);
    if start >= began {
        return Ok(());
    }
    let since = at(start);
    match r.stage() {
        Stage::Weight(_) => {
            let s = metrics.summary(&r.model, r.stable, since).await?;
            let c = metrics.summary(&r.model, r.candidate, since).await?;
            if let (Some(s), Some(c)) = (s, c) {
                obs.verdict = Some(analyze(&r.spec.analysis, &s, &c));
                obs.measures = Some(measure(&r.spec.analysis, &s, &c));
            }
        }
        Stage::Switched => {
            let c = metrics.summary(&r.model, r.candidate, since).await?;
            if let (Some(s), Some(c)) = (&r.baseline, c) {
                obs.verdict = Some(analyze(&r.spec.analysis, s, &c));
                obs.measures = Some(measure(&r.spec.analysis, s, &c));
            }
        }
        Stage::Preview => {
            obs.stable_summary = metrics.summary(&r.model, r.stable, at(r.started_at)).await?;
        }
        Stage::Shadow => {
            obs.shadow = metrics
                .shadow(&r.model, r.stable, r.candidate, at(r.started_at))
                .await?
                .map(|s| (s.compared, s.agreement, s.errors));
        }
        Stage::Split(_) => {
            let s = metrics.summary(&r.model, r.stable, since).await?;
            let c = metrics.summary(&r.model, r.candidate, since).await?;
            if let (Some(s), Some(c)) = (s, c) {
                obs.ab = statistics::compare(&s.feedback, &c.feedback);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
