//! An *operator* is what the admin API and the CLI drive rollouts through,
//! wherever they live: [`LocalOperator`] runs them in this server's
//! controller; in a fleet, the fleet layer writes the cluster's
//! `ModelRollout` object and reads what its leader decided.

use std::sync::Arc;
use std::time::Duration;

use super::analysis::BoxFuture;
use super::controller::{Controller, RolloutError};
use super::machine::{Action, Event, Rollout};
use super::spec::RolloutSpec;
use crate::policy::PolicySpec;
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
    pub repo: Arc<Repository>,
    /// How long a replaced stable version stays loaded for rollback.
    pub rollback_window: Duration,
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
        let result = self
            .repo
            .rollback(model, self.rollback_window)
            .map(|p| p.spec().clone())
            .map_err(RolloutError::from);
        Box::pin(std::future::ready(result))
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
