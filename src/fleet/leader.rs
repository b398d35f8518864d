//! The *leader* loop: only the replica holding the Lease runs it. Each
//! pass, for every `ModelRollout`, it turns the spec into rollout
//! transitions — a new spec starts a rollout (once the running one has
//! finished), `paused` pauses or resumes, each new command value is applied
//! once and acknowledged — and writes the result as one compare-and-swap
//! status write; then the controller analyses the active rollouts on
//! fleet-wide metrics. A 409 means the object changed: the next pass reads
//! it again and recomputes.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::convert::{policy_spec, policy_status, push_history, rollout_of, rollout_spec, write_rollout};
use super::crd::{HandledCommand, ModelRollout, ModelRolloutStatus, COMMANDS};
use super::elector::Leadership;
use super::store::KubeStore;
use crate::policy::PolicySpec;
use crate::repository::Repository;
use crate::rollout::controller::{now_secs, plan_start, start_event, Controller};
use crate::rollout::machine::{self, Action, Event, Phase, Rollout};
use crate::rollout::policy_store::PolicyStoreError;

/// How often the leader reconciles and analyses.
const PASS: Duration = Duration::from_millis(250);

/// The leader's loop and what it needs.
pub(crate) struct Leader {
    pub(super) store: Arc<KubeStore>,
    pub(super) controller: Controller,
    pub(super) repo: Arc<Repository>,
    pub(super) leadership: Arc<Leadership>,
}

impl Leader {
    /// Runs a pass every 250 ms while this replica leads, until `stop`.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(PASS);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !self.leadership.is_leading() {
                continue;
            }
            for o in self.store.cache.all() {
                self.reconcile(&o).await;
            }
            self.controller.tick().await;
        }
    }

    /// Applies `o`'s spec (a new rollout, `paused`, commands) and writes
    /// the status when anything changed.
    async fn reconcile(&self, o: &ModelRollout) {
        let model = o.spec.model.clone();
        if !self.repo.snapshot().models.contains_key(&model) {
            return;
        }
        if self.store.cache.by_model(&model).map(|c| c.name_any()) != Some(o.name_any()) {
            return; // another object rolls this model out
        }
        let Some(rv) = o.resource_version() else { return };
        let status = o.status.clone().unwrap_or_default();
        let mut next = status.clone();
        let mut r = rollout_of(&model, &status);
        let now = now_secs();
        self.spec_changes(o, &mut next, &mut r, now);
        if let Some(cur) = r.clone() {
            let action = match (o.spec.paused, cur.phase) {
                (true, Phase::Progressing) => Some(Action::Pause),
                (false, Phase::Paused) => Some(Action::Resume),
                _ => None,
            };
            if let Some(Ok((n, e))) = action.map(|a| machine::act(&cur, a, now)) {
                write_rollout(&mut next, &n, Some(&e));
                r = Some(n);
            }
        }
        for name in COMMANDS {
            let Some(value) = o.spec.commands.get(name) else {
                continue;
            };
            if next.handled_commands.get(name).map(|h| h.value.as_str()) == Some(value) {
                continue;
            }
            let refused = self.command(name, &model, &mut next, &mut r, now).err();
            if let Some(why) = &refused {
                tracing::info!(model = %model, command = name, "command refused: {why}");
            }
            next.handled_commands.insert(
                name.to_string(),
                HandledCommand {
                    value: value.to_string(),
                    refused,
                },
            );
        }
        if next == status {
            return;
        }
        let before = rollout_of(&model, &status);
        match self.store.write_status(&model, &rv, |s| *s = next).await {
            Ok(_) => {
                if let (Some(n), Some(o)) = (&r, self.store.cache.by_model(&model)) {
                    self.store.announce(&o, before.as_ref(), n, None);
                }
            }
            Err(PolicyStoreError::Conflict(_)) => {}
            Err(e) => tracing::warn!(model = %model, error = %e, "status not written"),
        }
    }

    /// A spec the leader has not acted on: start it when no rollout runs
    /// (a spec changed while one runs waits for it to finish, and
    /// `observedGeneration` stays behind until then).
    fn spec_changes(
        &self,
        o: &ModelRollout,
        next: &mut ModelRolloutStatus,
        r: &mut Option<Rollout>,
        now: f64,
    ) {
        let model = &o.spec.model;
        let generation = o.metadata.generation;
        let running_finished = r.as_ref().is_none_or(|c| c.phase.is_final());
        let spec = match rollout_spec(&o.spec.rollout) {
            Ok(spec) => spec,
            Err(e) => {
                if running_finished {
                    next.message = Some(format!("invalid spec: {e}"));
                    next.observed_generation = generation;
                }
                return;
            }
        };
        let running = next.rollout.as_ref().and_then(|f| rollout_spec(f).ok());
        if r.is_some() && running.as_ref() == Some(&spec) {
            next.observed_generation = generation;
            return;
        }
        if !running_finished {
            return;
        }
        next.observed_generation = generation;
        let stable = next.policy.as_ref().map(|p| p.stable);
        match plan_start(&self.repo, model, spec, r.as_ref(), stable, now) {
            Ok(mut n) => {
                n.id = next.rollout_id + 1;
                n.salt = format!(
                    "{}-{}-{}",
                    o.name_any(),
                    n.id,
                    o.uid().unwrap_or_default().chars().take(8).collect::<String>()
                );
                n.revision = n.revision.max(next.policy.as_ref().map_or(0, |p| p.revision) + 1);
                let e = start_event(&n, "admin");
                tracing::info!(model = %model, rollout = n.id, "{}", e.decision);
                write_rollout(next, &n, Some(&e));
                *r = Some(n);
            }
            Err(e) => next.message = Some(format!("the rollout cannot start: {e}")),
        }
    }

    /// Applies command `name` to the rollout (or, for a rollback, to the
    /// policy); `Err` says why it was refused.
    fn command(
        &self,
        name: &str,
        model: &str,
        next: &mut ModelRolloutStatus,
        r: &mut Option<Rollout>,
        now: f64,
    ) -> Result<(), String> {
        if name == "rollback" {
            return self.rollback(model, next, r.as_ref(), now);
        }
        let action = match name {
            "promote" => Action::Promote,
            "promoteFull" => Action::PromoteFull,
            "abort" => Action::Abort,
            _ => Action::Retry,
        };
        let cur = r
            .as_ref()
            .ok_or_else(|| format!("model '{model}' has no rollout"))?;
        let (n, e) = machine::act(cur, action, now).map_err(|e| e.to_string())?;
        write_rollout(next, &n, Some(&e));
        *r = Some(n);
        Ok(())
    }

    /// Back to the version stable before the last promotion, in one policy
    /// swap across the fleet.
    fn rollback(
        &self,
        model: &str,
        next: &mut ModelRolloutStatus,
        r: Option<&Rollout>,
        now: f64,
    ) -> Result<(), String> {
        if let Some(cur) = r.filter(|c| !c.phase.is_final()) {
            return Err(format!(
                "rollout {} of model '{model}' is active; abort it instead",
                cur.id
            ));
        }
        let policy = next
            .policy
            .clone()
            .ok_or_else(|| format!("model '{model}' has no fleet policy to roll back"))?;
        let previous = next
            .previous_stable
            .filter(|&p| p != policy.stable)
            .ok_or_else(|| format!("model '{model}' has no previous stable version"))?;
        let ready = self
            .repo
            .snapshot()
            .models
            .get(model)
            .is_some_and(|m| m.is_ready(previous));
        if !ready {
            return Err(format!(
                "previous stable version {previous} of model '{model}' is no longer loaded"
            ));
        }
        let mut spec = PolicySpec::pinned(previous);
        spec.salt = policy_spec(&policy).salt;
        next.policy = Some(policy_status(&spec, policy.revision + 1));
        next.previous_stable = Some(policy.stable);
        let e = Event {
            at: now,
            phase: r.map_or(Phase::Promoted, |c| c.phase),
            step: r.map_or(0, |c| c.step),
            weight: crate::policy::Weight::ZERO,
            decision: format!("rolled back: version {previous} is stable again"),
            metrics: Value::Null,
            actor: "admin".into(),
        };
        push_history(next, r.map_or(next.rollout_id, |c| c.id), &e);
        Ok(())
    }
}
