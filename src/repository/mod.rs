//! The model repository: a Triton-layout directory on disk, and the
//! immutable *snapshot* of what is loaded from it.
//!
//! A snapshot maps model names to their versions and each version's state
//! and runtime. Requests load the current snapshot once (arc-swap) and keep
//! using it; the control plane builds a new snapshot and swaps it in. A
//! version retires when the last snapshot and the last request holding its
//! runtime are gone.

pub mod config;
mod external;
mod policies;
pub mod samples;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use parking_lot::Mutex;

pub use config::ModelConfig;
pub use policies::{PolicyError, PreviousStable};
pub use samples::Samples;

use crate::runtime::onnx::OnnxBackend;
use crate::runtime::{Backend, Signature, VersionRuntime};
use crate::tensor::{Tensor, TensorData};
use crate::traffic::policy::Policy;

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
    /// The SPEC name (`READY`, …).
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
}

impl ModelEntry {
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

/// The repository on disk and the current snapshot of it.
pub struct Repository {
    root: PathBuf,
    current: ArcSwap<Snapshot>,
    /// Serialises snapshot edits (never held across a model load).
    edit: Mutex<()>,
}

impl Repository {
    /// A repository rooted at `root`; nothing is loaded yet.
    pub fn new(root: impl Into<PathBuf>) -> Repository {
        Repository {
            root: root.into(),
            current: ArcSwap::from_pointee(Snapshot::default()),
            edit: Mutex::new(()),
        }
    }

    /// The directory this repository reads.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Applies `f` to a copy of the current snapshot and publishes it.
    pub fn publish(&self, f: impl FnOnce(&mut Snapshot)) {
        let _guard = self.edit.lock();
        let mut next = Snapshot::clone(&self.current.load());
        f(&mut next);
        self.current.store(Arc::new(next));
    }

    /// Like [`publish`](Self::publish), but publishes nothing when `f` fails.
    pub fn try_publish<T, E>(&self, f: impl FnOnce(&mut Snapshot) -> Result<T, E>) -> Result<T, E> {
        let _guard = self.edit.lock();
        let mut next = Snapshot::clone(&self.current.load());
        let out = f(&mut next)?;
        self.current.store(Arc::new(next));
        Ok(out)
    }

    /// Sets one version's state (and runtime) in a new snapshot.
    fn set_version(&self, model: &str, entry: VersionEntry) {
        self.publish(|s| {
            if let Some(m) = s.models.get_mut(model) {
                Arc::make_mut(m).versions.insert(entry.number, entry);
            }
        });
    }

    /// Model directory names in the repository, sorted.
    pub fn model_names(&self) -> std::io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type()?.is_dir() && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// Complete version directories of `model` (a positive integer name
    /// without leading zero, holding `model.onnx`), ascending.
    pub fn versions_on_disk(&self, model: &str) -> Vec<u64> {
        let Ok(dir) = std::fs::read_dir(self.root.join(model)) else {
            return Vec::new();
        };
        let mut versions: Vec<u64> = dir
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let v = parse_version_dir(&name)?;
                e.path().join("model.onnx").is_file().then_some(v)
            })
            .collect();
        versions.sort_unstable();
        versions
    }

    /// Scans the repository and loads every model (blocking). Marks the
    /// initial load done at the end.
    pub fn load_all(&self) {
        match self.model_names() {
            Ok(names) => {
                for name in names {
                    self.load_model(&name);
                }
            }
            Err(e) => {
                tracing::error!(root = %self.root.display(), error = %e, "cannot read the model repository")
            }
        }
        self.publish(|s| s.initial_load_done = true);
    }

    /// (Re)reads one model's files and loads the versions its policy selects
    /// that are not loaded yet (blocking). Returns the versions now READY.
    pub fn load_model(&self, name: &str) -> Vec<u64> {
        let dir = self.root.join(name);
        let files = ModelConfig::read(&dir.join("config.toml"))
            .and_then(|config| Samples::read(&dir.join("samples.json")).map(|samples| (config, samples)));
        let (config, samples) = match files {
            Ok(ok) => ok,
            Err(e) => {
                let reason = self.scrub(&e);
                tracing::error!(model = name, error = %e, "model configuration is invalid");
                self.publish(|s| {
                    let entry = s.models.entry(name.to_string()).or_insert_with(|| {
                        Arc::new(ModelEntry {
                            name: name.to_string(),
                            config: Arc::new(ModelConfig::default()),
                            samples: None,
                            versions: BTreeMap::new(),
                            error: None,
                            policy: None,
                            previous_stable: None,
                        })
                    });
                    Arc::make_mut(entry).error = Some(reason);
                });
                return Vec::new();
            }
        };
        let config = Arc::new(config);
        let samples = samples.map(Arc::new);
        let wanted = config.versions.select(&self.versions_on_disk(name));
        let mut to_load = Vec::new();
        self.publish(|s| {
            let entry = s.models.entry(name.to_string()).or_insert_with(|| {
                Arc::new(ModelEntry {
                    name: name.to_string(),
                    config: config.clone(),
                    samples: samples.clone(),
                    versions: BTreeMap::new(),
                    error: None,
                    policy: None,
                    previous_stable: None,
                })
            });
            let m = Arc::make_mut(entry);
            m.config = config.clone();
            m.samples = samples.clone();
            m.error = None;
            for &v in &wanted {
                let loaded = m
                    .versions
                    .get(&v)
                    .is_some_and(|e| matches!(e.state, VersionState::Ready | VersionState::Loading));
                if !loaded {
                    m.versions.insert(
                        v,
                        VersionEntry {
                            number: v,
                            state: VersionState::Loading,
                            runtime: None,
                        },
                    );
                    to_load.push(v);
                }
            }
        });
        self.load_versions(name, &config, samples.as_deref(), to_load);
        self.snapshot()
            .models
            .get(name)
            .map(|m| m.ready_versions().map(|v| v.number).collect())
            .unwrap_or_default()
    }

    /// Loads one version next to the serving ones, whatever the version
    /// policy says (admin API). Returns its state afterwards.
    pub fn load_specific(&self, name: &str, version: u64) -> Result<VersionState, String> {
        if !self.versions_on_disk(name).contains(&version) {
            return Err(format!(
                "model '{name}' has no complete version directory {version} (with model.onnx)"
            ));
        }
        if !self.snapshot().models.contains_key(name) {
            self.load_model(name);
        }
        let snapshot = self.snapshot();
        let m = snapshot
            .models
            .get(name)
            .ok_or_else(|| format!("model '{name}' could not be read"))?;
        if let Some(e) = &m.error {
            return Err(e.clone());
        }
        if let Some(v) = m.versions.get(&version) {
            if matches!(v.state, VersionState::Ready | VersionState::Loading) {
                return Ok(v.state.clone());
            }
        }
        let (config, samples) = (m.config.clone(), m.samples.clone());
        self.set_version(
            name,
            VersionEntry {
                number: version,
                state: VersionState::Loading,
                runtime: None,
            },
        );
        self.load_versions(name, &config, samples.as_deref(), vec![version]);
        Ok(self
            .snapshot()
            .models
            .get(name)
            .and_then(|m| m.versions.get(&version))
            .map(|v| v.state.clone())
            .unwrap_or(VersionState::Unavailable("removed while loading".into())))
    }

    /// Loads `versions` (already marked LOADING) one after another and
    /// publishes each result.
    fn load_versions(&self, name: &str, config: &ModelConfig, samples: Option<&Samples>, versions: Vec<u64>) {
        for v in versions {
            let entry = match self.load_version(name, v, config, samples) {
                Ok(runtime) => {
                    tracing::info!(model = name, version = v, "version READY");
                    VersionEntry {
                        number: v,
                        state: VersionState::Ready,
                        runtime: Some(Arc::new(runtime)),
                    }
                }
                Err(e) => {
                    tracing::error!(model = name, version = v, error = %e, "version UNAVAILABLE");
                    VersionEntry {
                        number: v,
                        state: VersionState::Unavailable(self.scrub(&e)),
                        runtime: None,
                    }
                }
            };
            self.set_version(name, entry);
        }
    }

    /// Loads, starts and warms up one version (blocking).
    fn load_version(
        &self,
        model: &str,
        version: u64,
        config: &ModelConfig,
        samples: Option<&Samples>,
    ) -> Result<VersionRuntime, String> {
        let dir = self.root.join(model).join(version.to_string());
        let path = dir.join("model.onnx");
        let bytes = std::fs::read(&path).map_err(|e| format!("cannot read model.onnx: {e}"))?;
        external::check_confined(&bytes, &dir)?;
        drop(bytes);
        let exec = &config.execution;
        let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(exec.instances);
        let mut signature = None;
        for _ in 0..exec.instances {
            let (backend, sig) = OnnxBackend::open(&path, exec.intra_op_threads)
                .map_err(|e| format!("ONNX Runtime could not load model.onnx: {e}"))?;
            signature = Some(sig);
            backends.push(Box::new(backend));
        }
        let signature = signature.ok_or("no instances configured")?;
        let runtime = VersionRuntime::start(&format!("{model}-{version}"), signature, exec.clone(), backends)
            .map_err(|e| format!("cannot start worker threads: {e}"))?;
        let inputs = warmup_inputs(runtime.signature(), samples);
        runtime
            .infer_blocking(inputs)
            .map_err(|e| format!("warm-up inference failed: {e}"))?;
        Ok(runtime)
    }

    /// Removes local paths from a message meant for clients.
    fn scrub(&self, message: &str) -> String {
        let root = self.root.display().to_string();
        let mut out = message.replace(&root, "<repository>");
        if let Ok(abs) = self.root.canonicalize() {
            out = out.replace(&abs.display().to_string(), "<repository>");
        }
        out
    }
}

/// Parses a version directory name: a positive integer without leading zero.
pub fn parse_version_dir(name: &str) -> Option<u64> {
    if name.is_empty() || name.starts_with('0') || !name.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    name.parse().ok()
}

/// The first sample that fits the signature, else zeros of the declared
/// shape with dynamic dimensions set to 1.
pub fn warmup_inputs(signature: &Signature, samples: Option<&Samples>) -> Vec<Tensor> {
    if let Some(sample) = samples.and_then(|s| s.samples.first()) {
        match sample.tensors(signature) {
            Ok(t) => return t,
            Err(e) => tracing::warn!(error = %e, "first sample does not fit the model; warming up on zeros"),
        }
    }
    signature
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<i64> = spec.shape.iter().map(|&d| if d < 0 { 1 } else { d }).collect();
            let n = crate::tensor::element_count(&shape).unwrap_or(0);
            Tensor {
                name: spec.name.clone(),
                shape,
                data: TensorData::zeros(spec.datatype, n),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_dir_names() {
        assert_eq!(parse_version_dir("1"), Some(1));
        assert_eq!(parse_version_dir("42"), Some(42));
        for bad in ["0", "01", "", "1a", "-1", "v1", ".1"] {
            assert_eq!(parse_version_dir(bad), None, "{bad}");
        }
    }
}
