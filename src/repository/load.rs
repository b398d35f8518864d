//! Loading: reading a model's files and starting its versions (ONNX
//! Runtime sessions on worker threads), each warmed up on a real inference
//! before it is reported READY. A version that fails to load is reported
//! UNAVAILABLE with the reason and never disturbs the versions that serve.

use std::sync::Arc;

use super::config::ModelConfig;
use super::error::LoadError;
use super::external;
use super::samples::Samples;
use super::snapshot::{ModelEntry, VersionEntry, VersionState};
use super::store::Repository;
use crate::runtime::onnx::OnnxBackend;
use crate::runtime::{Backend, Reopen, Signature, VersionRuntime};
use crate::tensor::{Tensor, TensorData};

impl Repository {
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
                tracing::error!(root = %self.root().display(), error = %e, "cannot read the model repository")
            }
        }
        self.publish(|s| s.initial_load_done = true);
    }

    /// (Re)reads one model's files and loads the versions its policy selects
    /// that are not loaded yet (blocking). Returns the versions now READY.
    pub fn load_model(&self, name: &str) -> Vec<u64> {
        let dir = match self.model_dir(name) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::warn!(error = %e, "not loading");
                return Vec::new();
            }
        };
        let files = ModelConfig::read_dir(&dir, name)
            .and_then(|config| Samples::read(&dir.join("samples.json")).map(|samples| (config, samples)));
        let (config, samples) = match files {
            Ok(ok) => ok,
            Err(e) => {
                let reason = self.scrub(&e.to_string());
                tracing::error!(model = name, error = %e, "model configuration is invalid");
                self.publish(|s| {
                    let entry = s.models.entry(name.to_string()).or_insert_with(|| {
                        Arc::new(ModelEntry::new(name, Arc::new(ModelConfig::default()), None))
                    });
                    Arc::make_mut(entry).error = Some(reason);
                });
                return Vec::new();
            }
        };
        if !config.ignored.is_empty() {
            tracing::warn!(
                model = name,
                fields = %config.ignored.join(", "),
                "config.pbtxt fields that switchyard does not act on"
            );
        }
        let config = Arc::new(config);
        let samples = samples.map(Arc::new);
        let wanted = config.versions.select(&self.versions_on_disk(name));
        let mut to_load = Vec::new();
        self.publish(|s| {
            let entry = s
                .models
                .entry(name.to_string())
                .or_insert_with(|| Arc::new(ModelEntry::new(name, config.clone(), samples.clone())));
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
    /// The version is *held*: repository polling never unloads it (only an
    /// explicit unload does).
    pub fn load_specific(&self, name: &str, version: u64) -> Result<VersionState, LoadError> {
        self.model_dir(name)?;
        if !self.versions_on_disk(name).contains(&version) {
            return Err(LoadError::NoVersionDirectory(name.to_string(), version));
        }
        if !self.snapshot().models.contains_key(name) {
            self.load_model(name);
        }
        let snapshot = self.snapshot();
        let m = snapshot
            .models
            .get(name)
            .ok_or_else(|| LoadError::ModelUnreadable(name.to_string()))?;
        if let Some(e) = &m.error {
            return Err(LoadError::Broken(e.clone()));
        }
        if let Some(v) = m.versions.get(&version) {
            if matches!(v.state, VersionState::Ready | VersionState::Loading) {
                self.hold(name, version);
                return Ok(self.settled(name, version));
            }
        }
        self.hold(name, version);
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
        Ok(self.settled(name, version))
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
                        state: VersionState::Unavailable(self.scrub(&e.to_string())),
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
    ) -> Result<VersionRuntime, LoadError> {
        let dir = self.version_dir(model, version)?;
        let path = dir.join("model.onnx");
        let bytes = std::fs::read(&path).map_err(|e| LoadError::ModelFile(e.to_string()))?;
        external::check_confined(&bytes, &dir)?;
        drop(bytes);
        let exec = &config.execution;
        let mut backends: Vec<Box<dyn Backend>> = Vec::with_capacity(exec.instances);
        let mut signature = None;
        for _ in 0..exec.instances {
            let (backend, sig) = OnnxBackend::open(&path, exec.intra_op_threads)?;
            signature = Some(sig);
            backends.push(Box::new(backend));
        }
        let signature = signature.ok_or(LoadError::NoInstances)?;
        if let Some(declared) = &config.declared {
            declared.check(&signature).map_err(LoadError::Config)?;
        }
        // a worker whose backend panicked gets a fresh session from here
        let threads = exec.intra_op_threads;
        let reopen: Reopen = Arc::new(move || {
            OnnxBackend::open(&path, threads)
                .map(|(backend, _)| Box::new(backend) as Box<dyn Backend>)
                .map_err(|e| e.to_string())
        });
        let runtime = VersionRuntime::start_with_reopen(
            &format!("{model}-{version}"),
            signature,
            exec.clone(),
            backends,
            Some(reopen),
        )
        .map_err(|e| LoadError::Workers(e.to_string()))?;
        let inputs = warmup_inputs(runtime.signature(), samples);
        runtime.infer_blocking(inputs)?;
        Ok(runtime)
    }
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
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use super::*;
    use crate::runtime::onnx;

    /// The fleet preloads a rollout's candidate while the leader validates
    /// it: the second `load_specific` waits for the first load, rather
    /// than answering LOADING (which validation reads as a failed load).
    #[test]
    fn a_load_already_running_is_waited_for() {
        onnx::init(&onnx::default_library_path()).expect("ONNX Runtime (scripts/setup-onnxruntime.sh)");
        let dir = tempfile::tempdir().unwrap();
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/digits");
        let copy = dir.path().join("digits");
        for entry in walk(&models) {
            let to = copy.join(entry.strip_prefix(&models).unwrap());
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(&entry, &to).unwrap();
        }
        let repo = Arc::new(Repository::new(dir.path()));
        repo.load_model("digits");
        let m = repo.snapshot().models["digits"].clone();
        // another caller's load of version 2 is under way
        repo.set_version(
            "digits",
            VersionEntry {
                number: 2,
                state: VersionState::Loading,
                runtime: None,
            },
        );
        let second = std::thread::spawn({
            let repo = repo.clone();
            move || repo.load_specific("digits", 2)
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!second.is_finished(), "answered while the load was running");
        repo.load_versions("digits", &m.config, m.samples.as_deref(), vec![2]);
        assert_eq!(second.join().unwrap().unwrap(), VersionState::Ready);
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
