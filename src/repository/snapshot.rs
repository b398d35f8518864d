//! A *snapshot* is an immutable view of everything loaded: model names to
//! their versions, each version's state and runtime, and each model's
//! traffic policy. Requests load the current snapshot once and keep using
//! it; the control plane builds a new one and swaps it in. A version retires
//! when the last snapshot and the last request holding its runtime are gone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use super::config::ModelConfig;
use super::samples::Samples;
use crate::policy::Policy;
use crate::runtime::{Signature, VersionRuntime};

/// Where a version is in its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionState {
    Loading,
    Ready,
    Unloading,
    /// Failed to load or warm up; the reason is safe to show to clients.
    Unavailable(String),
}

impl VersionState {
    /// The protocol name (`READY`, …).
    pub fn name(&self) -> &'static str {
        match self {
            VersionState::Loading => "LOADING",
            VersionState::Ready => "READY",
            VersionState::Unloading => "UNLOADING",
            VersionState::Unavailable(_) => "UNAVAILABLE",
        }
    }

    /// The reason for UNAVAILABLE, empty otherwise.
    pub fn reason(&self) -> &str {
        match self {
            VersionState::Unavailable(r) => r,
            _ => "",
        }
    }
}

/// One version of a model in a snapshot.
#[derive(Clone)]
pub struct VersionEntry {
    pub number: u64,
    pub state: VersionState,
    /// Present exactly when the state is READY.
    pub runtime: Option<Arc<VersionRuntime>>,
}

impl VersionEntry {
    /// The signature, when the version is loaded.
    pub fn signature(&self) -> Option<&Arc<Signature>> {
        self.runtime.as_ref().map(|r| r.signature())
    }
}

/// One model in a snapshot.
#[derive(Clone)]
pub struct ModelEntry {
    pub name: String,
    pub config: Arc<ModelConfig>,
    pub samples: Option<Arc<Samples>>,
    pub versions: BTreeMap<u64, VersionEntry>,
    /// Set when the model's own files (config.toml, samples.json) are broken.
    pub error: Option<String>,
    /// The traffic policy; `None` until one is set: then everything goes to
    /// the default version.
    pub policy: Option<Arc<Policy>>,
    /// The stable version a policy change replaced, kept for rollback.
    pub previous_stable: Option<PreviousStable>,
    /// The revision of `policy`: local edits count up from the last one; in
    /// a fleet it is the revision of the cluster's policy. 0 without one.
    pub policy_revision: u64,
    /// When `policy` was installed.
    pub policy_since: Option<SystemTime>,
}

impl ModelEntry {
    /// A model with no version loaded and no policy yet.
    pub fn new(name: &str, config: Arc<ModelConfig>, samples: Option<Arc<Samples>>) -> ModelEntry {
        ModelEntry {
            name: name.to_string(),
            config,
            samples,
            versions: BTreeMap::new(),
            error: None,
            policy: None,
            previous_stable: None,
            policy_revision: 0,
            policy_since: None,
        }
    }

    /// The version a request without an explicit version goes to when no
    /// policy is set: the `stable` label of config.toml if set, else the
    /// highest READY version.
    pub fn default_version(&self) -> Option<u64> {
        if let Some(p) = &self.policy {
            return Some(p.stable());
        }
        if let Some(&v) = self.config.labels.get("stable") {
            return Some(v);
        }
        self.versions
            .values()
            .rev()
            .find(|v| v.state == VersionState::Ready)
            .map(|v| v.number)
    }

    /// The version a label names: the policy's labels first, then config.toml's.
    pub fn label(&self, label: &str) -> Option<u64> {
        self.policy
            .as_ref()
            .and_then(|p| p.label(label))
            .or_else(|| self.config.labels.get(label).copied())
    }

    /// Versions live traffic can reach: they must be READY for readiness.
    pub fn routed(&self) -> Vec<u64> {
        match &self.policy {
            Some(p) => p.routed(),
            None => self.default_version().into_iter().collect(),
        }
    }

    /// Versions that must be READY for readiness (see [`Policy::required`]).
    pub fn required(&self) -> Vec<u64> {
        match &self.policy {
            Some(p) => p.required(),
            None => self.default_version().into_iter().collect(),
        }
    }

    /// True when `version` is READY.
    pub fn is_ready(&self, version: u64) -> bool {
        self.versions
            .get(&version)
            .is_some_and(|v| v.state == VersionState::Ready)
    }

    /// The READY versions, ascending.
    pub fn ready_versions(&self) -> impl DoubleEndedIterator<Item = &VersionEntry> {
        self.versions.values().filter(|v| v.state == VersionState::Ready)
    }
}

/// An immutable view of everything loaded.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub models: BTreeMap<String, Arc<ModelEntry>>,
    /// False until the first scan of the repository has finished.
    pub initial_load_done: bool,
}

/// The stable version a policy change replaced, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviousStable {
    pub version: u64,
    pub replaced_at: SystemTime,
}
