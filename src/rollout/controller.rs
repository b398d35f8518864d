//! The controller runs rollouts: it keeps the active ones, gathers an
//! [`Observation`] when an analysis is due, lets the pure state machine
//! decide, stores the result, and only then writes the implied policy
//! through the [`PolicySink`].
//!
//! SQLite work (ids, saves, reads) runs on blocking threads, never on the
//! async workers that serve requests.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::analysis::{analyze, measure, MetricsSource};
use super::machine::{self, Action, Event, Observation, Phase, Rollout, Stage};
use super::spec::{RolloutSpec, Strategy};
use super::store::{Store, StoreError};
use super::{statistics, validation};
use crate::policy::PolicySpec;
use crate::repository::{PolicyError, Repository};
use crate::runtime::window::Summary;
use crate::traffic::shadow::{ShadowHub, ShadowStats};

/// Why a policy could not be written.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SinkError {
    /// The local repository refused the edit.
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

/// Where the controller writes policies: the local snapshot swap.
pub trait PolicySink: Send + Sync {
    /// Installs `policy` for `model`.
    fn apply(&self, model: &str, policy: PolicySpec) -> Result<(), SinkError>;
    /// Unloads a version nothing routes to any more (blue-green's old stable).
    fn retire(&self, model: &str, version: u64) -> Result<(), SinkError>;
}

/// The local sink: the repository's snapshot swap.
pub struct LocalPolicies(pub Arc<Repository>);

impl PolicySink for LocalPolicies {
    fn apply(&self, model: &str, policy: PolicySpec) -> Result<(), SinkError> {
        self.0.set_policy(model, policy)?;
        Ok(())
    }
    fn retire(&self, model: &str, version: u64) -> Result<(), SinkError> {
        Ok(self.0.unload_version(model, version, Duration::ZERO)?)
    }
}

/// Circuit-breaker state, as the protection layer reports it.
pub type BreakerProbe = Arc<dyn Fn(&str, u64) -> bool + Send + Sync>;

/// The local metrics: the versions' windows and the shadow hub.
pub struct LocalMetrics {
    pub repo: Arc<Repository>,
    pub shadow: Arc<ShadowHub>,
    pub breakers: Option<BreakerProbe>,
}

impl MetricsSource for LocalMetrics {
    fn summary(&self, model: &str, version: u64, since: SystemTime) -> Option<Summary> {
        let snapshot = self.repo.snapshot();
        let runtime = snapshot
            .models
            .get(model)?
            .versions
            .get(&version)?
            .runtime
            .clone()?;
        Some(runtime.window().summary(since))
    }
    fn shadow(&self, model: &str, primary: u64, shadow: u64) -> Option<ShadowStats> {
        self.shadow
            .stats(model)
            .into_iter()
            .find(|s| s.primary_version == primary && s.shadow_version == shadow)
    }
    fn breaker_open(&self, model: &str, version: u64) -> bool {
        self.breakers.as_ref().is_some_and(|probe| probe(model, version))
    }
}

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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the rollout's traffic policy could not be applied: {0}")]
    Sink(#[from] SinkError),
}

/// Called when a rollout (re)starts from its first step, with (model,
/// stable, candidate): the server resets the candidate's circuit breaker
/// and the pair's shadow counters, so nothing from an earlier attempt
/// decides this one.
pub type FreshStart = Box<dyn Fn(&str, u64, u64) + Send + Sync>;

/// The rollout controller.
pub struct Controller {
    store: Arc<Store>,
    repo: Arc<Repository>,
    metrics: Arc<dyn MetricsSource>,
    sink: Arc<dyn PolicySink>,
    /// The newest rollout per model (active or finished), mirrored from the store.
    current: parking_lot::Mutex<HashMap<String, Rollout>>,
    /// Serialises decisions (ticks and admin actions).
    turn: tokio::sync::Mutex<()>,
    fresh_start: OnceLock<FreshStart>,
}

impl Controller {
    /// Opens the store and loads the active rollouts.
    pub fn open(
        state_dir: &std::path::Path,
        repo: Arc<Repository>,
        metrics: Arc<dyn MetricsSource>,
        sink: Arc<dyn PolicySink>,
    ) -> Result<Controller, RolloutError> {
        let store = Store::open(state_dir)?;
        let current = store
            .active()?
            .into_iter()
            .map(|r| (r.model.clone(), r))
            .collect();
        Ok(Controller {
            store: Arc::new(store),
            repo,
            metrics,
            sink,
            current: parking_lot::Mutex::new(current),
            turn: tokio::sync::Mutex::new(()),
            fresh_start: OnceLock::new(),
        })
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

    /// True when `model` has an active rollout.
    pub fn holds_any(&self, model: &str) -> bool {
        self.current
            .lock()
            .get(model)
            .is_some_and(|r| !r.phase.is_final())
    }

    /// True when an active rollout of `model` needs `version` (its stable
    /// or candidate): repository polling must not unload it.
    pub fn holds(&self, model: &str, version: u64) -> bool {
        self.current
            .lock()
            .get(model)
            .is_some_and(|r| !r.phase.is_final() && (r.stable == version || r.candidate == version))
    }

    /// Re-applies the policy of every active rollout (at start-up, before
    /// readiness): weights come back exactly as stored.
    pub fn restore(&self) {
        let active: Vec<Rollout> = self.current.lock().values().cloned().collect();
        for r in active {
            crate::telemetry::set_rollout(&r.model, r.phase.name(), r.step);
            match self.sink.apply(&r.model, r.policy()) {
                Ok(()) => {
                    tracing::info!(model = %r.model, phase = ?r.phase, step = r.step, weight = %r.weight(), "rollout restored")
                }
                Err(e) => self.restore_refused(&r, e),
            }
        }
    }

    /// A stored rollout whose policy the repository refused at start-up
    /// (typically: a version it routes to is outside the version policy,
    /// so it was not loaded). Loads the versions it needs and tries again;
    /// when that fails too, aborts it with the reason, so it never stays
    /// "progressing" with weights that are not in force. Blocking.
    fn restore_refused(&self, r: &Rollout, refused: SinkError) {
        tracing::warn!(model = %r.model, error = %refused, "rollout policy refused at restore; loading its versions");
        for v in [r.stable, r.candidate] {
            if let Err(e) = self.repo.load_specific(&r.model, v) {
                tracing::warn!(model = %r.model, version = v, error = %e, "could not load a version the rollout needs");
            }
        }
        match self.sink.apply(&r.model, r.policy()) {
            Ok(()) => {
                tracing::info!(model = %r.model, phase = ?r.phase, step = r.step, weight = %r.weight(), "rollout restored after loading its versions")
            }
            Err(e) => {
                let reason = format!("its traffic policy could not be restored after a restart: {e}");
                let (n, event) = machine::abort(r, reason, now_secs(), json!({"error": e.to_string()}));
                if let Err(err) = self.commit(&n, Some(&event), Some(r)) {
                    tracing::error!(model = %r.model, error = %err, "could not store the aborted rollout");
                }
            }
        }
    }

    /// [`get`](Self::get) with the database read off the async workers.
    pub async fn get_async(&self, model: &str) -> Result<Option<Rollout>, RolloutError> {
        if let Some(r) = self.current.lock().get(model) {
            return Ok(Some(r.clone()));
        }
        let (store, model) = (self.store.clone(), model.to_string());
        off_thread(move || store.latest(&model)).await
    }

    /// [`events`](Self::events) with the database read off the async workers.
    pub async fn events_async(&self, model: &str) -> Result<Vec<(i64, Event)>, RolloutError> {
        let (store, model) = (self.store.clone(), model.to_string());
        off_thread(move || store.events(&model)).await
    }

    /// The newest rollout of `model`.
    pub fn get(&self, model: &str) -> Result<Option<Rollout>, RolloutError> {
        if let Some(r) = self.current.lock().get(model) {
            return Ok(Some(r.clone()));
        }
        Ok(self.store.latest(model)?)
    }

    /// The audit log of `model`.
    pub fn events(&self, model: &str) -> Result<Vec<(i64, Event)>, RolloutError> {
        Ok(self.store.events(model)?)
    }

    /// The newest `limit` events of `model`'s audit log, oldest first.
    pub fn recent_events(&self, model: &str, limit: usize) -> Result<Vec<(i64, Event)>, RolloutError> {
        Ok(self.store.recent_events(model, limit)?)
    }

    /// Starts a rollout of `spec` on `model` from its current stable version.
    pub async fn start(&self, model: &str, spec: RolloutSpec) -> Result<Rollout, RolloutError> {
        spec.check().map_err(|e| RolloutError::Invalid(e.to_string()))?;
        let _turn = self.turn.lock().await;
        let snapshot = self.repo.snapshot();
        let m = snapshot
            .models
            .get(model)
            .ok_or_else(|| RolloutError::NotFound(format!("unknown model '{model}'")))?;
        if let Some(r) = self.current.lock().get(model) {
            if !r.phase.is_final() {
                return Err(RolloutError::Conflict(format!(
                    "model '{model}' already has an active rollout: rollout {} is {}; abort it first",
                    r.id,
                    r.phase.name()
                )));
            }
        }
        let stable = m
            .default_version()
            .ok_or_else(|| RolloutError::Conflict(format!("model '{model}' has no stable version")))?;
        if stable == spec.candidate {
            return Err(RolloutError::Invalid(format!(
                "version {stable} is already the stable version"
            )));
        }
        if !m.versions.contains_key(&spec.candidate)
            && !self.repo.versions_on_disk(model).contains(&spec.candidate)
        {
            return Err(RolloutError::NotFound(format!(
                "model '{model}' has no version {} (neither loaded nor on disk)",
                spec.candidate
            )));
        }
        let (store, name) = (self.store.clone(), model.to_string());
        let id = off_thread(move || store.next_id(&name)).await?;
        let now = now_secs();
        let r = Rollout::new(id, model, stable, spec, now);
        self.fresh(&r);
        let event = Event {
            at: now,
            phase: r.phase,
            step: 0,
            weight: crate::policy::Weight::ZERO,
            decision: format!("started: {} → {}", stable, r.candidate),
            metrics: json!({"spec": r.spec}),
            actor: "admin".into(),
        };
        self.commit_async(&r, Some(&event), None).await?;
        Ok(r)
    }

    /// Applies a manual action.
    pub async fn act(&self, model: &str, action: Action) -> Result<Rollout, RolloutError> {
        let _turn = self.turn.lock().await;
        let r = self
            .get_async(model)
            .await?
            .ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no rollout")))?;
        let (n, e) =
            machine::act(&r, action, now_secs()).map_err(|e| RolloutError::Conflict(e.to_string()))?;
        if action == Action::Retry {
            self.fresh(&n);
        }
        self.commit_async(&n, Some(&e), Some(&r)).await?;
        Ok(n)
    }

    /// One controller pass: every active rollout whose analysis is due.
    pub async fn tick(&self) {
        let due: Vec<Rollout> = {
            let now = now_secs();
            self.current
                .lock()
                .values()
                .filter(|r| machine::analysis_due(r, now))
                .cloned()
                .collect()
        };
        for r in due {
            let obs = self.observe(&r).await;
            let _turn = self.turn.lock().await;
            // an admin action may have changed it while we observed
            let still = self.current.lock().get(&r.model).cloned();
            if still.as_ref() != Some(&r) {
                continue;
            }
            let (n, e) = machine::decide(&r, &obs, now_secs());
            if let Err(err) = self.commit_async(&n, e.as_ref(), Some(&r)).await {
                tracing::error!(model = %r.model, error = %err, "rollout step not stored");
            }
        }
    }

    /// Stores `n` (and its event) first, then applies its policy when it
    /// differs from `before`'s, then retires blue-green's old stable.
    fn commit(
        &self,
        n: &Rollout,
        event: Option<&Event>,
        before: Option<&Rollout>,
    ) -> Result<(), RolloutError> {
        self.store.save(n, event)?;
        self.after_save(n, event, before)
    }

    /// [`commit`](Self::commit) with the database write (an fsync) off the
    /// async workers.
    async fn commit_async(
        &self,
        n: &Rollout,
        event: Option<&Event>,
        before: Option<&Rollout>,
    ) -> Result<(), RolloutError> {
        let (store, saved, logged) = (self.store.clone(), n.clone(), event.cloned());
        off_thread(move || store.save(&saved, logged.as_ref())).await?;
        self.after_save(n, event, before)
    }

    /// What follows a stored change: the mirror, metrics, the log, the
    /// policy when it changed, blue-green's retirement of the old stable.
    fn after_save(
        &self,
        n: &Rollout,
        event: Option<&Event>,
        before: Option<&Rollout>,
    ) -> Result<(), RolloutError> {
        self.current.lock().insert(n.model.clone(), n.clone());
        crate::telemetry::set_rollout(&n.model, n.phase.name(), n.step);
        if n.phase == Phase::Aborted && before.is_some_and(|b| b.phase != Phase::Aborted) {
            crate::telemetry::rollout_aborted(&n.model);
        }
        if let Some(e) = event {
            tracing::info!(model = %n.model, rollout = n.id, phase = ?e.phase, step = e.step, weight = %e.weight, actor = %e.actor, "{}", e.decision);
        }
        let policy = n.policy();
        if before.map(|b| b.policy()) != Some(policy.clone()) {
            self.sink.apply(&n.model, policy)?;
        }
        let promoted_now = n.phase == Phase::Promoted && before.is_some_and(|b| b.phase != Phase::Promoted);
        if promoted_now && matches!(n.spec.strategy, Strategy::BlueGreen { .. }) {
            if let Err(e) = self.sink.retire(&n.model, n.stable) {
                tracing::warn!(model = %n.model, version = n.stable, error = %e, "old stable not unloaded");
            }
        }
        Ok(())
    }

    /// Gathers what the state machine needs for `r` now.
    async fn observe(&self, r: &Rollout) -> Observation {
        let mut obs = Observation {
            breaker_open: self.metrics.breaker_open(&r.model, r.candidate),
            ..Observation::default()
        };
        if r.phase == Phase::Validating {
            let (repo, model, c, s) = (self.repo.clone(), r.model.clone(), r.candidate, r.stable);
            let report =
                tokio::task::spawn_blocking(move || validation::validate(&repo, &model, c, Some(s))).await;
            obs.validation = Some(match report {
                Ok(report) if report.passed => Ok(serde_json::to_value(&report).unwrap_or(Value::Null)),
                Ok(report) => Err(report.failures()),
                Err(e) => Err(format!("validation crashed: {e}")),
            });
            return obs;
        }
        let since = at(r.step_started_at);
        let s_now = self.metrics.summary(&r.model, r.stable, since);
        let c_now = self.metrics.summary(&r.model, r.candidate, since);
        match r.stage() {
            Stage::Weight(_) => {
                if let (Some(s), Some(c)) = (&s_now, &c_now) {
                    obs.verdict = Some(analyze(&r.spec.analysis, s, c));
                    obs.measures = Some(measure(&r.spec.analysis, s, c));
                }
            }
            Stage::Switched => {
                if let (Some(s), Some(c)) = (&r.baseline, &c_now) {
                    obs.verdict = Some(analyze(&r.spec.analysis, s, c));
                    obs.measures = Some(measure(&r.spec.analysis, s, c));
                }
            }
            Stage::Preview => obs.stable_summary = self.metrics.summary(&r.model, r.stable, at(r.started_at)),
            Stage::Shadow => {
                obs.shadow = self
                    .metrics
                    .shadow(&r.model, r.stable, r.candidate)
                    .map(|s| (s.compared, s.agreement, s.shadow_errors));
            }
            Stage::Split(_) => {
                if let (Some(s), Some(c)) = (&s_now, &c_now) {
                    obs.ab = statistics::compare(&s.feedback, &c.feedback);
                }
            }
        }
        obs
    }
}

/// Runs a database call on a blocking thread.
async fn off_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, RolloutError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Database(format!("the database task failed: {e}")))?
        .map_err(RolloutError::from)
}
