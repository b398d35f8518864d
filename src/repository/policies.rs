//! Control-plane edits that depend on routing: installing a traffic policy,
//! rolling back, and unloading versions only when nothing routes to them.
//! Each edit validates against, and replaces, one snapshot under the edit
//! lock, so a check and its effect can never interleave with another edit.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::snapshot::{ModelEntry, PreviousStable, Snapshot};
use super::store::Repository;
use crate::policy::{InvalidPolicy, Policy, PolicySpec, POLICY_LABELS};

/// Why a control-plane edit was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("unknown version {1} of model '{0}'")]
    UnknownVersion(String, u64),
    /// The policy is invalid; the old one stays in force.
    #[error("invalid policy for model '{0}': {1}")]
    Invalid(String, InvalidPolicy),
    /// The edit conflicts with what routes (409).
    #[error("{0}")]
    Conflict(String),
}

fn model_mut<'s>(s: &'s mut Snapshot, model: &str) -> Result<&'s mut ModelEntry, PolicyError> {
    s.models
        .get_mut(model)
        .map(Arc::make_mut)
        .ok_or_else(|| PolicyError::UnknownModel(model.to_string()))
}

impl ModelEntry {
    /// Versions that may not be unloaded now: those the policy names (or the
    /// default version and config labels without a policy), and the previous
    /// stable while its rollback window lasts.
    pub fn pinned_versions(&self, rollback_window: Duration, now: SystemTime) -> Vec<u64> {
        let mut v = match &self.policy {
            Some(p) => p.referenced(),
            None => self.default_version().into_iter().collect(),
        };
        // config labels the policy maintains itself (stable, …) are superseded
        // by the policy once one is set
        v.extend(
            self.config
                .labels
                .iter()
                .filter(|(name, _)| self.policy.is_none() || !POLICY_LABELS.contains(&name.as_str()))
                .map(|(_, &version)| version),
        );
        if let Some(prev) = self.previous_stable {
            if within(prev.replaced_at, rollback_window, now) {
                v.push(prev.version);
            }
        }
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn within(at: SystemTime, window: Duration, now: SystemTime) -> bool {
    !window.is_zero() && now.duration_since(at).map(|d| d <= window).unwrap_or(true)
}

impl Repository {
    /// Validates `spec` against the versions READY now and installs it in
    /// one snapshot swap. When the stable version changes, the old one is
    /// remembered for rollback.
    pub fn set_policy(&self, model: &str, spec: PolicySpec) -> Result<Arc<Policy>, PolicyError> {
        self.install_policy(model, spec, None, false)
    }

    /// Installs `spec` like [`set_policy`](Self::set_policy), at `revision`
    /// (`None`: one above the current one). A `tolerant` policy needs only
    /// its stable version READY (a fleet replica following the cluster's
    /// policy, see [`Policy::tolerant`]).
    pub fn install_policy(
        &self,
        model: &str,
        spec: PolicySpec,
        revision: Option<u64>,
        tolerant: bool,
    ) -> Result<Arc<Policy>, PolicyError> {
        self.try_publish(|s| {
            let m = model_mut(s, model)?;
            let built = if tolerant {
                Policy::tolerant(spec, |v| m.is_ready(v))
            } else {
                Policy::new(spec, |v| m.is_ready(v))
            };
            let policy = Arc::new(built.map_err(|e| PolicyError::Invalid(model.to_string(), e))?);
            let old_stable = m.default_version();
            if let Some(old) = old_stable.filter(|&old| old != policy.stable()) {
                m.previous_stable = Some(PreviousStable {
                    version: old,
                    replaced_at: SystemTime::now(),
                });
            }
            m.policy = Some(policy.clone());
            m.policy_revision = revision.unwrap_or(m.policy_revision + 1);
            m.policy_since = Some(SystemTime::now());
            Ok(policy)
        })
    }

    /// Puts all traffic back on the previous stable version, if it was
    /// replaced within `window` and is still READY. The previous stable is
    /// then forgotten: a second rollback has nothing to return to.
    pub fn rollback(&self, model: &str, window: Duration) -> Result<Arc<Policy>, PolicyError> {
        self.try_publish(|s| {
            let m = model_mut(s, model)?;
            let prev = m.previous_stable.ok_or_else(|| {
                PolicyError::Conflict(format!("model '{model}' has no previous stable version"))
            })?;
            if !within(prev.replaced_at, window, SystemTime::now()) {
                return Err(PolicyError::Conflict(format!(
                    "the rollback window of {}s for version {} of model '{model}' has passed",
                    window.as_secs(),
                    prev.version
                )));
            }
            if !m.is_ready(prev.version) {
                return Err(PolicyError::Conflict(format!(
                    "previous stable version {} of model '{model}' is no longer READY",
                    prev.version
                )));
            }
            let mut spec = m
                .policy
                .as_ref()
                .map(|p| p.spec().clone())
                .unwrap_or_else(|| PolicySpec::pinned(prev.version));
            spec.stable = prev.version;
            spec.candidate = None;
            spec.allow_list.clear();
            spec.preview = None;
            if spec.shadow.as_ref().is_some_and(|s| s.version == prev.version) {
                spec.shadow = None;
            }
            let policy = Arc::new(
                Policy::new(spec, |v| m.is_ready(v))
                    .map_err(|e| PolicyError::Invalid(model.to_string(), e))?,
            );
            m.policy = Some(policy.clone());
            m.policy_revision += 1;
            m.policy_since = Some(SystemTime::now());
            // a rollback is undone by a new rollout, not by another rollback
            m.previous_stable = None;
            Ok(policy)
        })
    }

    /// Removes a version that nothing routes to. Requests already holding
    /// its runtime finish; its workers stop when the last one does.
    pub fn unload_version(
        &self,
        model: &str,
        version: u64,
        rollback_window: Duration,
    ) -> Result<(), PolicyError> {
        self.try_publish(|s| {
            let m = model_mut(s, model)?;
            if !m.versions.contains_key(&version) {
                return Err(PolicyError::UnknownVersion(model.to_string(), version));
            }
            if m.pinned_versions(rollback_window, SystemTime::now()).contains(&version) {
                return Err(PolicyError::Conflict(format!(
                    "version {version} of model '{model}' is routed to (by the traffic policy, a label or the \
                     rollback window); change the policy first"
                )));
            }
            m.versions.remove(&version);
            Ok(())
        })?;
        self.release(model, version);
        Ok(())
    }

    /// Removes a whole model (Triton's repository `unload`). Refused (409)
    /// while the model has a traffic policy: unloading it would silently
    /// drop the policy (and a rollout's weights) with it.
    pub fn unload_model(&self, model: &str) -> Result<(), PolicyError> {
        let removed = self.try_publish(|s| {
            let m = s
                .models
                .get(model)
                .ok_or_else(|| PolicyError::UnknownModel(model.to_string()))?;
            if let Some(p) = &m.policy {
                return Err(PolicyError::Conflict(format!(
                    "model '{model}' has a traffic policy routing to versions {:?}; unloading it would drop \
                     the policy: set the policy back to a single stable version with the admin API first",
                    p.referenced()
                )));
            }
            Ok(s.models
                .remove(model)
                .map(|m| m.versions.keys().copied().collect::<Vec<_>>()))
        })?;
        for v in removed.unwrap_or_default() {
            self.release(model, v);
        }
        Ok(())
    }

    /// One poll of the repository: loads new models and versions the version
    /// policy selects, and unloads versions that left the disk or the
    /// selection once nothing routes to them (blocking).
    pub fn poll(&self, rollback_window: Duration) {
        self.poll_keeping(rollback_window, |_, _| false);
    }

    /// [`poll`](Self::poll) that also keeps every version for which `keep`
    /// is true (an active rollout's versions), besides the routed ones and
    /// those an admin load or a validation holds.
    pub fn poll_keeping(&self, rollback_window: Duration, keep: impl Fn(&str, u64) -> bool) {
        let names = match self.model_names() {
            Ok(names) => names,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the model repository");
                return;
            }
        };
        for name in &names {
            self.load_model(name);
            let snapshot = self.snapshot();
            let Some(m) = snapshot.models.get(name) else {
                continue;
            };
            let wanted = m.config.versions.select(&self.versions_on_disk(name));
            let pinned = m.pinned_versions(rollback_window, SystemTime::now());
            for &v in m.versions.keys() {
                let held = self.is_held(name, v) || keep(name, v);
                if !wanted.contains(&v) && !pinned.contains(&v) && !held {
                    match self.unload_version(name, v, rollback_window) {
                        Ok(()) => tracing::info!(model = %name, version = v, "version unloaded"),
                        Err(e) => tracing::debug!(model = %name, version = v, error = %e, "kept"),
                    }
                }
            }
        }
    }
}
