//! The cluster as a [`PolicyStore`]: the *cache* holds the namespace's
//! `ModelRollout` objects as the watch last delivered them (or as the last
//! write returned them), and the *Kubernetes store* reads rollouts from it
//! and writes them as one `PUT .../status` carrying the resourceVersion
//! read — a compare-and-swap: 409 Conflict when anyone wrote in between.
//! Only the leader writes; a replica that does not lead gets
//! `Unavailable`. The status and the rollout state change in the same
//! write, so a leader change never sees one without the other.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube::ResourceExt;
use parking_lot::RwLock;

use super::convert::{rollout_of, write_rollout};
use super::crd::{ModelRollout, ModelRolloutStatus};
use super::elector::Leadership;
use super::events::EventRecorder;
use crate::rollout::analysis::BoxFuture;
use crate::rollout::machine::{Event, Phase, Rollout};
use crate::rollout::policy_store::{PolicyStore, PolicyStoreError, Versioned};
use crate::rollout::store::Store;

/// The namespace's `ModelRollout` objects by name, as last seen.
#[derive(Default)]
pub(crate) struct Cache {
    objects: RwLock<BTreeMap<String, ModelRollout>>,
}

impl Cache {
    /// Every object.
    pub(crate) fn all(&self) -> Vec<ModelRollout> {
        self.objects.read().values().cloned().collect()
    }

    /// The object that rolls `model` out (the oldest, should several).
    pub(crate) fn by_model(&self, model: &str) -> Option<ModelRollout> {
        self.objects
            .read()
            .values()
            .filter(|o| o.spec.model == model)
            .min_by_key(|o| (o.metadata.creation_timestamp.clone().map(|t| t.0), o.name_any()))
            .cloned()
    }

    /// Stores one object as seen now.
    pub(crate) fn put(&self, o: ModelRollout) {
        self.objects.write().insert(o.name_any(), o);
    }

    /// Forgets a deleted object.
    pub(crate) fn remove(&self, name: &str) {
        self.objects.write().remove(name);
    }

    /// Replaces everything (after a complete list).
    pub(crate) fn replace_all(&self, objects: Vec<ModelRollout>) {
        *self.objects.write() = objects.into_iter().map(|o| (o.name_any(), o)).collect();
    }
}

/// The name of the object that rolls `model` out: the model's name made a
/// DNS-1123 subdomain (lower case, `_` and `.` as `-`).
pub fn object_name(model: &str) -> String {
    model
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' | '-' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .collect::<String>()
        .trim_matches('-')
        .to_string()
}

/// Rollouts in the namespace's `ModelRollout` statuses.
pub(crate) struct KubeStore {
    pub(super) api: Api<ModelRollout>,
    pub(super) cache: Arc<Cache>,
    pub(super) leadership: Arc<Leadership>,
    pub(super) events: EventRecorder,
    /// This replica's audit log (the ids of local rollouts).
    pub(super) audit: Arc<Store>,
    /// Every API call's limit.
    pub(super) call_timeout: Duration,
}

impl KubeStore {
    /// Writes the status of `model`'s object as `change` makes it, if the
    /// object's resourceVersion is still `expected` and this replica
    /// leads. Returns the new resourceVersion.
    pub(crate) async fn write_status(
        &self,
        model: &str,
        expected: &str,
        change: impl FnOnce(&mut ModelRolloutStatus),
    ) -> Result<String, PolicyStoreError> {
        if !self.leadership.is_leading() {
            return Err(PolicyStoreError::Unavailable(
                "this replica does not lead the fleet".into(),
            ));
        }
        let mut o = self
            .cache
            .by_model(model)
            .ok_or_else(|| PolicyStoreError::Unavailable(format!("no ModelRollout for model '{model}'")))?;
        if o.resource_version().as_deref() != Some(expected) {
            return Err(PolicyStoreError::Conflict(model.to_string()));
        }
        let mut status = o.status.clone().unwrap_or_default();
        change(&mut status);
        status.leader = Some(self.leadership.identity());
        o.status = Some(status);
        let name = o.name_any();
        let pp = PostParams::default();
        let call = self.api.replace_status(&name, &pp, &o);
        match tokio::time::timeout(self.call_timeout, call).await {
            Ok(Ok(written)) => {
                let rv = written.resource_version().unwrap_or_default();
                self.cache.put(written);
                Ok(rv)
            }
            Ok(Err(kube::Error::Api(s))) if s.code == 409 => {
                self.refresh(&name).await;
                Err(PolicyStoreError::Conflict(model.to_string()))
            }
            Ok(Err(e)) => Err(PolicyStoreError::Unavailable(e.to_string())),
            Err(_) => Err(PolicyStoreError::Unavailable(format!(
                "no answer from the Kubernetes API within {:?}",
                self.call_timeout
            ))),
        }
    }

    /// Reads one object again after a conflict (the watch may lag).
    pub(crate) async fn refresh(&self, name: &str) {
        if let Ok(Ok(Some(o))) = tokio::time::timeout(self.call_timeout, self.api.get_opt(name)).await {
            self.cache.put(o);
        }
    }

    fn versioned(o: &ModelRollout) -> Option<Versioned> {
        let rollout = rollout_of(&o.spec.model, o.status.as_ref()?)?;
        Some(Versioned {
            rollout,
            version: o.resource_version().unwrap_or_default(),
        })
    }

    /// After a write: the Kubernetes Event and the abort counter, when the
    /// phase changed.
    pub(super) fn announce(
        &self,
        o: &ModelRollout,
        before: Option<&Rollout>,
        next: &Rollout,
        event: Option<&Event>,
    ) {
        let changed = before.is_none_or(|b| b.phase != next.phase || b.id != next.id);
        if !changed {
            return;
        }
        if next.phase == Phase::Aborted {
            crate::telemetry::rollout_aborted(&next.model);
        }
        let message = event.map_or_else(|| format!("{:?}", next.phase), |e| e.decision.clone());
        self.events.phase_changed(o, next.phase, &message);
    }
}

impl PolicyStore for KubeStore {
    fn load<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, PolicyStoreError>> {
        let found = self.cache.by_model(model).and_then(|o| KubeStore::versioned(&o));
        Box::pin(std::future::ready(Ok(found)))
    }

    fn active(&self) -> BoxFuture<'_, Result<Vec<Versioned>, PolicyStoreError>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut active = Vec::new();
        for o in self.cache.all() {
            // one object per model: the one by_model picks
            if !seen.insert(o.spec.model.clone()) {
                continue;
            }
            let Some(o) = self.cache.by_model(&o.spec.model) else {
                continue;
            };
            if let Some(v) = KubeStore::versioned(&o).filter(|v| !v.rollout.phase.is_final()) {
                active.push(v);
            }
        }
        Box::pin(std::future::ready(Ok(active)))
    }

    fn next_id<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<i64, PolicyStoreError>> {
        let id = self
            .cache
            .by_model(model)
            .and_then(|o| o.status.map(|s| s.rollout_id))
            .unwrap_or(0)
            + 1;
        Box::pin(std::future::ready(Ok(id)))
    }

    fn save<'a>(
        &'a self,
        expected: Option<&'a str>,
        next: &'a Rollout,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<String, PolicyStoreError>> {
        Box::pin(async move {
            let Some(expected) = expected else {
                return Err(PolicyStoreError::Unavailable(
                    "a fleet starts rollouts through the ModelRollout's spec".into(),
                ));
            };
            let before = self
                .cache
                .by_model(&next.model)
                .and_then(|o| KubeStore::versioned(&o));
            let rv = self
                .write_status(&next.model, expected, |s| write_rollout(s, next, event))
                .await?;
            if let Some(o) = self.cache.by_model(&next.model) {
                self.announce(&o, before.as_ref().map(|v| &v.rollout), next, event);
            }
            Ok(rv)
        })
    }

    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>> {
        Box::pin(std::future::ready(
            self.audit.events(model).map_err(PolicyStoreError::from),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_dns_subdomains() {
        assert_eq!(object_name("digits"), "digits");
        assert_eq!(object_name("mlp_wide"), "mlp-wide");
        assert_eq!(object_name("Big.Model"), "big-model");
        assert_eq!(object_name("_x_"), "x");
    }
}
