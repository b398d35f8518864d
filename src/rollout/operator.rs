//! An *operator* is what the admin API and the CLI drive rollouts through,
//! wherever they live: [`LocalOperator`] runs them in this server's
//! controller; in a fleet, the fleet layer writes the cluster's
//! `ModelRollout` object and reads what its leader decided.

use std::sync::Arc;
use std::time::Duration;

use super::analysis::BoxFuture;
use super::controller::{Controller, RolloutError};
use super::local::LocalStore;
use super::machine::{Action, Event, Phase, Rollout};
use super::spec::RolloutSpec;
use crate::policy::{PolicySpec, Weight};
use crate::repository::{PolicyError, Repository};

/// Rollout commands and reads, as the admin API offers them.
pub trait Operator: Send + Sync {
    /// Starts a rollout of `spec` on `model` from its stable version.
    fn start<'a>(&'a self, model: &'a str, spec: RolloutSpec)
        -> BoxFuture<'a, Result<Rollout, RolloutError>>;
    /// The newest rollout of `model` (active or finished).
    fn get<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Rollout>, RolloutError>>;
    /// Applies a manual action to the newest rollout of `model`.
    fn act<'a>(&'a self, model: &'a str, action: Action) -> BoxFuture<'a, Result<Rollout, RolloutError>>;
    /// Puts all traffic back on the previous stable version; returns the
    /// policy now in force.
    fn rollback<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<PolicySpec, RolloutError>>;
    /// The audit log of `model`: (rollout id, event), oldest first.
    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>>;
    /// The newest `limit` events of `model`'s audit log, oldest first.
    fn recent_events<'a>(
        &'a self,
        model: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>> {
        Box::pin(async move {
            let mut all = self.events(model).await?;
            let skip = all.len().saturating_sub(limit);
            Ok(all.split_off(skip))
        })
    }
}

impl From<PolicyError> for RolloutError {
    fn from(e: PolicyError) -> RolloutError {
        let message = e.to_string();
        match e {
            PolicyError::UnknownModel(_) | PolicyError::UnknownVersion(..) => RolloutError::NotFound(message),
            PolicyError::Invalid(..) => RolloutError::Invalid(message),
            PolicyError::Conflict(_) => RolloutError::Conflict(message),
        }
    }
}

/// Local mode: this server's controller, and rollback as a local policy swap.
pub struct LocalOperator {
    pub controller: Arc<Controller>,
    pub store: Arc<LocalStore>,
    pub repo: Arc<Repository>,
    /// How long a replaced stable version stays loaded for rollback.
    pub rollback_window: Duration,
}

impl LocalOperator {
    /// Rollback's rules: back to the version that was stable before the
    /// last promotion (within the rollback window), never to the candidate
    /// of an aborted rollout, never while a rollout runs; once. Recorded in
    /// the audit log.
    fn rollback_now(&self, model: &str) -> Result<PolicySpec, RolloutError> {
        let snapshot = self.repo.snapshot();
        let m = snapshot
            .models
            .get(model)
            .ok_or_else(|| RolloutError::NotFound(format!("unknown model '{model}'")))?;
        let newest = self.store.newest(model)?;
        if let Some(r) = newest.as_ref().filter(|r| !r.phase.is_final()) {
            return Err(RolloutError::Conflict(format!(
                "model '{model}' has an active rollout (id {}, {} → {}); abort it instead of rolling back",
                r.id, r.stable, r.candidate
            )));
        }
        let nothing = |why: String| {
            RolloutError::Conflict(format!("model '{model}' has nothing to roll back to: {why}"))
        };
        let previous = m.previous_stable.ok_or_else(|| {
            nothing("no promotion since the server started or since the last rollback".into())
        })?;
        if let Some(r) = newest
            .as_ref()
            .filter(|r| r.phase == Phase::Aborted && r.candidate == previous.version)
        {
            return Err(nothing(format!(
                "version {} was the candidate of rollout {}, which was aborted",
                previous.version, r.id
            )));
        }
        let from = m.default_version();
        let policy = self.repo.rollback(model, self.rollback_window)?.spec().clone();
        let event = Event {
            at: super::controller::now_secs(),
            phase: newest.as_ref().map_or(Phase::Promoted, |r| r.phase),
            step: newest.as_ref().map_or(0, |r| r.step),
            weight: Weight::ZERO,
            decision: match from {
                Some(v) => format!("rolled back: version {} is stable again (was {v})", policy.stable),
                None => format!("rolled back: version {} is stable again", policy.stable),
            },
            metrics: serde_json::json!({"policy": policy}),
            actor: "admin".into(),
        };
        self.store.record(model, &event)?;
        Ok(policy)
    }
}

impl Operator for LocalOperator {
    fn start<'a>(
        &'a self,
        model: &'a str,
        spec: RolloutSpec,
    ) -> BoxFuture<'a, Result<Rollout, RolloutError>> {
        Box::pin(self.controller.start(model, spec))
    }

    fn get<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Rollout>, RolloutError>> {
        Box::pin(self.controller.get(model))
    }

    fn act<'a>(&'a self, model: &'a str, action: Action) -> BoxFuture<'a, Result<Rollout, RolloutError>> {
        Box::pin(self.controller.act(model, action))
    }

    fn rollback<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<PolicySpec, RolloutError>> {
        Box::pin(std::future::ready(self.rollback_now(model)))
    }

    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>> {
        Box::pin(self.controller.events(model))
    }

    fn recent_events<'a>(
        &'a self,
        model: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>> {
        Box::pin(self.controller.recent_events(model, limit))
    }
}
