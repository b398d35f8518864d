//! Local mode's two seams: [`LocalStore`] keeps rollouts in SQLite under
//! `--state-dir` and installs the policy each one implies in this server's
//! snapshot; [`LocalMetrics`] reads this server's own windows, shadow hub
//! and circuit breakers. One server is the whole fleet, so a policy has
//! converged the moment it is installed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use super::analysis::{BoxFuture, MetricsError, MetricsSource, ShadowSummary};
use super::machine::{Event, Phase, Rollout};
use super::policy_store::{PolicyStore, PolicyStoreError, Versioned};
use super::spec::Strategy;
use super::store::{Store, StoreError};
use crate::repository::Repository;
use crate::runtime::window::Summary;
use crate::traffic::shadow::ShadowHub;

/// Rollouts in SQLite, their policies installed in the local snapshot.
pub struct LocalStore {
    db: Store,
    repo: Arc<Repository>,
    /// The newest rollout per model and its version (a counter of writes
    /// in this process), mirrored from the database.
    current: Mutex<HashMap<String, (Rollout, u64)>>,
}

impl LocalStore {
    /// Opens `state_dir/switchyard.db` and loads the active rollouts.
    pub fn open(state_dir: &Path, repo: Arc<Repository>) -> Result<LocalStore, StoreError> {
        let db = Store::open(state_dir)?;
        let current = db
            .active()?
            .into_iter()
            .map(|r| (r.model.clone(), (r, 0)))
            .collect();
        Ok(LocalStore {
            db,
            repo,
            current: Mutex::new(current),
        })
    }

    /// Re-installs the policy of every active rollout (at start-up, before
    /// readiness): weights come back exactly as stored.
    pub fn restore(&self) {
        let active: Vec<Rollout> = self
            .current
            .lock()
            .values()
            .map(|(r, _)| r.clone())
            .filter(|r| !r.phase.is_final())
            .collect();
        for r in active {
            crate::telemetry::set_rollout(&r.model, r.phase.name(), r.step);
            match self.install(&r) {
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
    fn restore_refused(&self, r: &Rollout, refused: PolicyStoreError) {
        tracing::warn!(model = %r.model, error = %refused, "rollout policy refused at restore; loading its versions");
        for v in [r.stable, r.candidate] {
            if let Err(e) = self.repo.load_specific(&r.model, v) {
                tracing::warn!(model = %r.model, version = v, error = %e, "could not load a version the rollout needs");
            }
        }
        match self.install(r) {
            Ok(()) => {
                tracing::info!(model = %r.model, phase = ?r.phase, step = r.step, weight = %r.weight(), "rollout restored after loading its versions")
            }
            Err(e) => {
                let reason = format!("its traffic policy could not be restored after a restart: {e}");
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                let (n, event) =
                    super::machine::abort(r, reason, now, serde_json::json!({"error": e.to_string()}));
                let version = self.current.lock().get(&r.model).map(|(_, v)| v.to_string());
                if let Err(err) = self.save_now(version.as_deref(), &n, Some(&event)) {
                    tracing::error!(model = %r.model, error = %err, "could not store the aborted rollout");
                }
            }
        }
    }

    /// Appends `event` to `model`'s audit log, under its newest rollout (0
    /// before the first): rollbacks and policy changes by hand.
    pub fn record(&self, model: &str, event: &Event) -> Result<(), StoreError> {
        let id = self.stored(model)?.map_or(0, |(r, _)| r.id);
        self.db.record_event(model, id, event)?;
        tracing::info!(model, actor = %event.actor, "{}", event.decision);
        Ok(())
    }

    /// The newest rollout of `model` (active or finished).
    pub fn newest(&self, model: &str) -> Result<Option<Rollout>, StoreError> {
        Ok(self.stored(model)?.map(|(r, _)| r))
    }

    /// True when `model` has an active rollout.
    pub fn holds_any(&self, model: &str) -> bool {
        self.current
            .lock()
            .get(model)
            .is_some_and(|(r, _)| !r.phase.is_final())
    }

    /// True when an active rollout of `model` needs `version` (its stable
    /// or candidate): repository polling must not unload it.
    pub fn holds(&self, model: &str, version: u64) -> bool {
        self.current
            .lock()
            .get(model)
            .is_some_and(|(r, _)| !r.phase.is_final() && (r.stable == version || r.candidate == version))
    }

    fn install(&self, r: &Rollout) -> Result<(), PolicyStoreError> {
        self.repo
            .install_policy(&r.model, r.policy(), Some(r.revision), false)
            .map(|_| ())
            .map_err(|e| PolicyStoreError::Apply(e.to_string()))
    }

    /// The stored rollout of `model` and its version, from the mirror or the
    /// database (version 0 for a rollout this process has not written).
    fn stored(&self, model: &str) -> Result<Option<(Rollout, u64)>, StoreError> {
        if let Some(found) = self.current.lock().get(model) {
            return Ok(Some(found.clone()));
        }
        Ok(self.db.latest(model)?.map(|r| (r, 0)))
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl PolicyStore for LocalStore {
    fn load<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, PolicyStoreError>> {
        let found = self.stored(model).map(|found| {
            found.map(|(rollout, v)| Versioned {
                rollout,
                version: v.to_string(),
            })
        });
        ready(found.map_err(PolicyStoreError::from))
    }

    fn active(&self) -> BoxFuture<'_, Result<Vec<Versioned>, PolicyStoreError>> {
        let mut all: Vec<Versioned> = self
            .current
            .lock()
            .values()
            .filter(|(r, _)| !r.phase.is_final())
            .map(|(r, v)| Versioned {
                rollout: r.clone(),
                version: v.to_string(),
            })
            .collect();
        all.sort_by(|a, b| a.rollout.model.cmp(&b.rollout.model));
        ready(Ok(all))
    }

    fn next_id<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<i64, PolicyStoreError>> {
        ready(self.db.next_id(model).map_err(PolicyStoreError::from))
    }

    /// Stores first (rollout and event in one transaction), then installs
    /// the policy when it changed, then retires blue-green's old stable.
    fn save<'a>(
        &'a self,
        expected: Option<&'a str>,
        next: &'a Rollout,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<String, PolicyStoreError>> {
        ready(self.save_now(expected, next, event))
    }

    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>> {
        ready(self.db.events(model).map_err(PolicyStoreError::from))
    }

    fn recent_events<'a>(
        &'a self,
        model: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>> {
        ready(
            self.db
                .recent_events(model, limit)
                .map_err(PolicyStoreError::from),
        )
    }
}

impl LocalStore {
    fn save_now(
        &self,
        expected: Option<&str>,
        next: &Rollout,
        event: Option<&Event>,
    ) -> Result<String, PolicyStoreError> {
        let model = &next.model;
        let before = {
            let mut current = self.current.lock();
            let before = match current.get(model) {
                Some(found) => Some(found.clone()),
                None => self.db.latest(model)?.map(|r| (r, 0)),
            };
            let stored = before.as_ref().map(|(_, v)| v.to_string());
            if stored.as_deref() != expected {
                return Err(PolicyStoreError::Conflict(model.clone()));
            }
            self.db.save(next, event)?;
            let version = before.as_ref().map_or(1, |(_, v)| v + 1);
            current.insert(model.clone(), (next.clone(), version));
            before.map(|(r, _)| r)
        };
        crate::telemetry::set_rollout(model, next.phase.name(), next.step);
        let before_same = before.as_ref().filter(|b| b.id == next.id);
        if next.phase == Phase::Aborted && before_same.is_none_or(|b| b.phase != Phase::Aborted) {
            crate::telemetry::rollout_aborted(model);
        }
        if before_same.map(|b| b.policy()) != Some(next.policy()) {
            self.install(next)?;
        }
        let promoted_now =
            next.phase == Phase::Promoted && before_same.is_some_and(|b| b.phase != Phase::Promoted);
        if promoted_now && matches!(next.spec.strategy, Strategy::BlueGreen { .. }) {
            if let Err(e) = self.repo.unload_version(model, next.stable, Duration::ZERO) {
                tracing::warn!(model = %model, version = next.stable, error = %e, "old stable not unloaded");
            }
        }
        let version = self.current.lock().get(model).map_or(0, |(_, v)| *v);
        Ok(version.to_string())
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
    fn summary<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Summary>, MetricsError>> {
        let snapshot = self.repo.snapshot();
        let found = snapshot
            .models
            .get(model)
            .and_then(|m| m.versions.get(&version))
            .and_then(|v| v.runtime.as_ref())
            .map(|runtime| runtime.window().summary(since));
        ready(Ok(found))
    }

    fn shadow<'a>(
        &'a self,
        model: &'a str,
        primary: u64,
        shadow: u64,
        _since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<ShadowSummary>, MetricsError>> {
        let found = self
            .shadow
            .stats(model)
            .into_iter()
            .find(|s| s.primary_version == primary && s.shadow_version == shadow)
            .map(|s| ShadowSummary {
                compared: s.compared,
                agreement: s.agreement,
                errors: s.shadow_errors,
            });
        ready(Ok(found))
    }

    fn breaker_open<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        _since: SystemTime,
    ) -> BoxFuture<'a, Result<bool, MetricsError>> {
        ready(Ok(self
            .breakers
            .as_ref()
            .is_some_and(|probe| probe(model, version))))
    }

    /// This server is the whole fleet: converged once the snapshot holds
    /// the revision, since it was installed.
    fn converged<'a>(
        &'a self,
        model: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        let snapshot = self.repo.snapshot();
        let since = snapshot
            .models
            .get(model)
            .filter(|m| m.policy_revision >= revision)
            .and_then(|m| m.policy_since)
            .map(|t| t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()));
        ready(Ok(since))
    }
}
