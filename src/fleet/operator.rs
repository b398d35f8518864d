//! The admin API and the CLI in a fleet: every command, on any replica,
//! becomes a write of the `ModelRollout`'s *spec* (a new rollout, `paused`,
//! or a fresh value in `spec.commands`), after the same checks the leader
//! will make, so a refusal comes back at once; then the replica waits for
//! the leader's answer in the status (the command value acknowledged, or
//! the phase reached) and returns what the leader decided. Reads come from
//! the watched status.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use kube::ResourceExt;

use super::convert::{policy_spec, rollout_fields, rollout_of};
use super::crd::{Commands, ModelRollout, ModelRolloutSpec};
use super::store::{object_name, Cache};
use crate::policy::PolicySpec;
use crate::repository::Repository;
use crate::rollout::analysis::BoxFuture;
use crate::rollout::controller::{now_secs, plan_start, RolloutError};
use crate::rollout::machine::{self, Action, Event, Phase, Rollout};
use crate::rollout::operator::Operator;
use crate::rollout::store::Store;
use crate::rollout::RolloutSpec;

/// Rollout commands through the cluster object.
pub(crate) struct FleetOperator {
    pub(super) api: Api<ModelRollout>,
    pub(super) cache: Arc<Cache>,
    pub(super) repo: Arc<Repository>,
    pub(super) audit: Arc<Store>,
    pub(super) identity: String,
    pub(super) call_timeout: Duration,
    /// How long a command waits for the leader's answer.
    pub(super) answer_timeout: Duration,
    pub(super) counter: AtomicU64,
}

fn unavailable(e: impl std::fmt::Display) -> RolloutError {
    RolloutError::Unavailable(format!("the Kubernetes API: {e}"))
}

impl FleetOperator {
    /// A command value no one used before.
    fn nonce(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}-{}-{n}", self.identity, (now_secs() * 1000.0) as u64)
    }

    fn current(&self, model: &str) -> (Option<ModelRollout>, Option<Rollout>) {
        let o = self.cache.by_model(model);
        let r = o
            .as_ref()
            .and_then(|o| o.status.as_ref())
            .and_then(|s| rollout_of(model, s));
        (o, r)
    }

    /// Changes `model`'s spec with `change` (creating the object from
    /// `fresh` when it does not exist), read-modify-write with the
    /// resourceVersion; returns the generation written.
    async fn write_spec(
        &self,
        model: &str,
        change: impl Fn(&mut ModelRolloutSpec),
        fresh: Option<&ModelRolloutSpec>,
    ) -> Result<i64, RolloutError> {
        let name = self
            .cache
            .by_model(model)
            .map_or_else(|| object_name(model), |o| o.name_any());
        for _ in 0..5 {
            let got = tokio::time::timeout(self.call_timeout, self.api.get_opt(&name))
                .await
                .map_err(unavailable)?
                .map_err(unavailable)?;
            let call = match got {
                Some(mut o) => {
                    change(&mut o.spec);
                    tokio::time::timeout(self.call_timeout, async {
                        self.api.replace(&name, &PostParams::default(), &o).await
                    })
                    .await
                }
                None => {
                    let mut spec = fresh.cloned().ok_or_else(|| {
                        RolloutError::NotFound(format!("model '{model}' has no ModelRollout"))
                    })?;
                    change(&mut spec);
                    let o = ModelRollout::new(&name, spec);
                    tokio::time::timeout(self.call_timeout, async {
                        self.api.create(&PostParams::default(), &o).await
                    })
                    .await
                }
            };
            match call.map_err(unavailable)? {
                Ok(o) => {
                    let generation = o.metadata.generation.unwrap_or(0);
                    self.cache.put(o);
                    return Ok(generation);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {
                    return Err(RolloutError::Invalid(s.message))
                }
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(RolloutError::Conflict(format!(
            "the ModelRollout of model '{model}' kept changing; try again"
        )))
    }

    /// Waits until `answered` holds for `model`'s object as watched.
    async fn answer<T>(
        &self,
        model: &str,
        answered: impl Fn(&ModelRollout) -> Option<T>,
    ) -> Result<T, RolloutError> {
        let deadline = Instant::now() + self.answer_timeout;
        loop {
            if let Some(t) = self.cache.by_model(model).as_ref().and_then(&answered) {
                return Ok(t);
            }
            if Instant::now() >= deadline {
                return Err(RolloutError::Unavailable(format!(
                    "the ModelRollout of model '{model}' was written, but no leader answered within {:?} \
                     (is one elected? see GET /admin/v1/fleet); its status will show the outcome",
                    self.answer_timeout
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sets command `name` to a fresh value and waits for its answer.
    async fn command(&self, model: &str, name: &str) -> Result<ModelRollout, RolloutError> {
        let value = self.nonce();
        self.write_spec(model, |s| s.commands.set(name, value.clone()), None)
            .await?;
        let handled = self
            .answer(model, |o| {
                let h = o.status.as_ref()?.handled_commands.get(name)?;
                (h.value == value).then(|| (h.refused.clone(), o.clone()))
            })
            .await?;
        match handled {
            (Some(refused), _) => Err(RolloutError::Conflict(refused)),
            (None, o) => Ok(o),
        }
    }

    async fn start_now(&self, model: &str, spec: RolloutSpec) -> Result<Rollout, RolloutError> {
        let (o, current) = self.current(model);
        let stable = o
            .as_ref()
            .and_then(|o| o.status.as_ref()?.policy.as_ref().map(|p| p.stable));
        // the leader's own checks, here, so a refusal answers at once
        plan_start(
            &self.repo,
            model,
            spec.clone(),
            current.as_ref(),
            stable,
            now_secs(),
        )?;
        let before = current.map_or(0, |r| r.id);
        let fields = rollout_fields(&spec);
        let generation = self
            .write_spec(
                model,
                |s| {
                    s.rollout = fields.clone();
                    s.paused = false;
                },
                Some(&ModelRolloutSpec {
                    model: model.to_string(),
                    rollout: fields.clone(),
                    paused: false,
                    commands: Commands::default(),
                }),
            )
            .await?;
        let outcome = self
            .answer(model, |o| {
                let s = o.status.as_ref()?;
                if s.observed_generation? < generation {
                    return None;
                }
                Some(match rollout_of(model, s).filter(|r| r.id > before) {
                    Some(r) => Ok(r),
                    None => Err(s.message.clone().unwrap_or_else(|| "not started".into())),
                })
            })
            .await?;
        outcome.map_err(RolloutError::Conflict)
    }

    async fn act_now(&self, model: &str, action: Action) -> Result<Rollout, RolloutError> {
        let (_, current) = self.current(model);
        let cur = current.ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no rollout")))?;
        machine::act(&cur, action, now_secs()).map_err(|e| RolloutError::Conflict(e.to_string()))?;
        let name = match action {
            Action::Pause | Action::Resume => {
                let paused = action == Action::Pause;
                self.write_spec(model, |s| s.paused = paused, None).await?;
                return self
                    .answer(model, |o| {
                        let r = rollout_of(model, o.status.as_ref()?)?;
                        let done = r.phase.is_final() || (r.phase == Phase::Paused) == paused;
                        done.then_some(r)
                    })
                    .await;
            }
            Action::Promote => "promote",
            Action::PromoteFull => "promoteFull",
            Action::Abort => "abort",
            Action::Retry => "retry",
        };
        let o = self.command(model, name).await?;
        o.status
            .as_ref()
            .and_then(|s| rollout_of(model, s))
            .ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no rollout")))
    }

    async fn rollback_now(&self, model: &str) -> Result<PolicySpec, RolloutError> {
        if self.cache.by_model(model).is_none() {
            return Err(RolloutError::NotFound(format!(
                "model '{model}' has no ModelRollout"
            )));
        }
        let o = self.command(model, "rollback").await?;
        o.status
            .as_ref()
            .and_then(|s| s.policy.as_ref())
            .map(policy_spec)
            .ok_or_else(|| RolloutError::NotFound(format!("model '{model}' has no fleet policy")))
    }
}

impl Operator for FleetOperator {
    fn start<'a>(
        &'a self,
        model: &'a str,
        spec: RolloutSpec,
    ) -> BoxFuture<'a, Result<Rollout, RolloutError>> {
        Box::pin(self.start_now(model, spec))
    }

    fn get<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Rollout>, RolloutError>> {
        Box::pin(std::future::ready(Ok(self.current(model).1)))
    }

    fn act<'a>(&'a self, model: &'a str, action: Action) -> BoxFuture<'a, Result<Rollout, RolloutError>> {
        Box::pin(self.act_now(model, action))
    }

    fn rollback<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<PolicySpec, RolloutError>> {
        Box::pin(self.rollback_now(model))
    }

    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>> {
        Box::pin(std::future::ready(
            self.audit.events(model).map_err(RolloutError::from),
        ))
    }
    fn recent_events<'a>(
        &'a self,
        model: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, Event)>, RolloutError>> {
        Box::pin(std::future::ready(
            self.audit.recent_events(model, limit).map_err(RolloutError::from),
        ))
    }
}
