//! The controller runs rollouts: it keeps the active ones, gathers an
//! [`Observation`] when an analysis is due, lets the pure state machine
//! decide, stores the result, and only then writes the implied policy
//! through the [`PolicySink`].

use std::collections::HashMap;
use std::sync::Arc;
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

/// The rollout controller.
pub struct Controller {
    store: Store,
    repo: Arc<Repository>,
    metrics: Arc<dyn MetricsSource>,
    sink: Arc<dyn PolicySink>,
    /// The newest rollout per model (active or finished), mirrored from the store.
    current: parking_lot::Mutex<HashMap<String, Rollout>>,
    /// Serialises decisions (ticks and admin actions).
    turn: tokio::sync::Mutex<()>,
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
            store,
            repo,
            metrics,
            sink,
            current: parking_lot::Mutex::new(current),
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Re-applies the policy of every active rollout (at start-up, before
    /// readiness): weights come back exactly as stored.
    pub fn restore(&self) {
        let active: Vec<Rollout> = self.current.lock().values().cloned().collect();
        for r in active {
            crate::telemetry::set_rollout(&r.model, r.phase.name(), r.step);
            match self.sink.apply(&r.model, r.policy()) {
                Ok(()) => {
                    tracing::info!(model = %r.model, phase = ?r.phase, step = r.step, weight = r.weight(), "rollout restored")
                }
                Err(e) => {
                    tracing::error!(model = %r.model, error = %e, "could not restore the rollout's policy")
                }
            }
        }
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
                    "model '{model}' already has an active rollout (id {}, {:?}); abort it first",
                    r.id, r.phase
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
        let id = self.store.next_id(model)?;
        let now = now_secs();
        let r = Rollout::new(id, model, stable, spec, now);
        let event = Event {
            at: now,
            phase: r.phase,
            step: 0,
            weight: 0,
            decision: format!("started: {} → {}", stable, r.candidate),
            metrics: json!({"spec": r.spec}),
            actor: "admin".into(),
        };
        self.commit(&r, Some(&event), None)?;
        Ok(r)
    }

    /// Applies a manual action.
    pub async fn act(&self, model: &str, action: Action) -> Result<Rollout, RolloutError> {
        let _turn = self.turn.lock().await;
        let r = self
            .get(model)?
            .ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no rollout")))?;
        let (n, e) =
            machine::act(&r, action, now_secs()).map_err(|e| RolloutError::Conflict(e.to_string()))?;
        self.commit(&n, Some(&e), Some(&r))?;
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
            if let Err(err) = self.commit(&n, e.as_ref(), Some(&r)) {
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
        self.current.lock().insert(n.model.clone(), n.clone());
        crate::telemetry::set_rollout(&n.model, n.phase.name(), n.step);
        if n.phase == Phase::Aborted && before.is_some_and(|b| b.phase != Phase::Aborted) {
            crate::telemetry::rollout_aborted(&n.model);
        }
        if let Some(e) = event {
            tracing::info!(model = %n.model, rollout = n.id, phase = ?e.phase, step = e.step, weight = e.weight, actor = %e.actor, "{}", e.decision);
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
