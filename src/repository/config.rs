//! `config.toml`: a model's optional settings. Every key is
//! optional; unknown keys are errors that name the file and the key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::FileError;
use super::pbtxt::{self, DeclaredIo};
use crate::guard::LimitsConfig;
use crate::runtime::ExecutionConfig;

/// Everything `config.toml` may say about one model.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub execution: ExecutionConfig,
    pub versions: VersionPolicy,
    /// TF Serving style names for versions.
    pub labels: BTreeMap<String, u64>,
    pub validation: ValidationConfig,
    /// Per-model protection limits (`[limits]`).
    pub limits: LimitsConfig,
    /// Inputs and outputs a Triton `config.pbtxt` declares (checked against
    /// the model when a version loads).
    #[serde(skip)]
    pub declared: Option<DeclaredIo>,
    /// `config.pbtxt` fields that are set but not acted on, by name.
    #[serde(skip)]
    pub ignored: Vec<String>,
}

/// Which versions on disk are served.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersionPolicy {
    pub policy: PolicyKind,
    /// How many of the newest versions `latest` serves.
    pub latest: usize,
    /// The versions `specific` serves.
    pub specific: Vec<u64>,
}

/// The kinds of version policy Triton knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyKind {
    Latest,
    All,
    Specific,
}

impl Default for VersionPolicy {
    fn default() -> Self {
        VersionPolicy {
            policy: PolicyKind::Latest,
            latest: 1,
            specific: Vec::new(),
        }
    }
}

impl VersionPolicy {
    /// The versions to serve out of `available` (sorted ascending).
    pub fn select(&self, available: &[u64]) -> Vec<u64> {
        match self.policy {
            PolicyKind::All => available.to_vec(),
            PolicyKind::Latest => {
                let skip = available.len().saturating_sub(self.latest);
                available[skip..].to_vec()
            }
            PolicyKind::Specific => available
                .iter()
                .copied()
                .filter(|v| self.specific.contains(v))
                .collect(),
        }
    }
}

/// Thresholds a new version must meet before it takes traffic.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ValidationConfig {
    pub max_p95_ms: Option<f64>,
    pub min_accuracy: Option<f64>,
    pub max_file_bytes: Option<u64>,
    pub sha256: BTreeMap<u64, String>,
}

impl ModelConfig {
    /// Reads a model directory's `config.pbtxt` (Triton's) and `config.toml`,
    /// either or both; `config.toml` wins key by key. Defaults without
    /// either. The error names the file and the offending key.
    pub fn read_dir(dir: &Path, model: &str) -> Result<ModelConfig, FileError> {
        let toml_path = dir.join("config.toml");
        let pbtxt_path = dir.join("config.pbtxt");
        let triton = pbtxt::read(&pbtxt_path, model)?;
        let own = ModelConfig::read(&toml_path)?;
        let Some(triton) = triton else {
            return Ok(own);
        };
        let mut table = triton.table;
        if toml_path.is_file() {
            let text = std::fs::read_to_string(&toml_path).map_err(|e| FileError::new(&toml_path, e))?;
            let over: toml::Table = toml::from_str(&text).map_err(|e| FileError::new(&toml_path, e))?;
            merge(&mut table, over);
        }
        let mut config: ModelConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| FileError::new(&pbtxt_path, e.to_string().trim_end()))?;
        config.check().map_err(|e| FileError::new(&pbtxt_path, e))?;
        config.declared = Some(triton.io);
        config.ignored = triton.ignored;
        Ok(config)
    }

    /// Reads `path` if it exists; defaults otherwise. The error names the
    /// file and the offending key.
    pub fn read(path: &Path) -> Result<ModelConfig, FileError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ModelConfig::default()),
            Err(e) => return Err(FileError::new(path, e)),
        };
        let config: ModelConfig =
            toml::from_str(&text).map_err(|e| FileError::new(path, e.to_string().trim_end()))?;
        config.check().map_err(|e| FileError::new(path, e))?;
        Ok(config)
    }

    /// Checks what serde cannot; the message names the key at fault.
    fn check(&self) -> Result<(), String> {
        let e = &self.execution;
        if e.instances == 0 {
            return Err("execution.instances must be at least 1".into());
        }
        if e.instances > 64 {
            return Err("execution.instances must be at most 64".into());
        }
        if e.intra_op_threads == 0 {
            return Err("execution.intra_op_threads must be at least 1".into());
        }
        if e.max_queue == 0 {
            return Err("execution.max_queue must be at least 1".into());
        }
        if e.timeout_ms == 0 {
            return Err("execution.timeout_ms must be at least 1".into());
        }
        if self.versions.policy == PolicyKind::Latest && self.versions.latest == 0 {
            return Err("versions.latest must be at least 1".into());
        }
        if self.versions.policy == PolicyKind::Specific && self.versions.specific.is_empty() {
            return Err("versions.specific must list at least one version when policy = \"specific\"".into());
        }
        for (label, v) in &self.labels {
            if *v == 0 {
                return Err(format!("labels.{label} must be a positive version"));
            }
        }
        if self.limits.rate_limit_burst == Some(0) {
            return Err("limits.rate_limit_burst must be at least 1".into());
        }
        Ok(())
    }
}

/// Puts every key of `over` into `base`, section by section (`over` wins).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_select_versions() {
        let all = [1, 2, 3, 5];
        let mut p = VersionPolicy::default();
        assert_eq!(p.select(&all), vec![5]);
        p.latest = 2;
        assert_eq!(p.select(&all), vec![3, 5]);
        p.policy = PolicyKind::All;
        assert_eq!(p.select(&all), all.to_vec());
        p.policy = PolicyKind::Specific;
        p.specific = vec![1, 3, 9];
        assert_eq!(p.select(&all), vec![1, 3]);
    }

    #[test]
    fn errors_name_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[execution]\ninstnces = 2\n").unwrap();
        let err = ModelConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("config.toml"), "{err}");
        assert!(err.contains("instnces"), "{err}");
        std::fs::write(&path, "[execution]\nmax_batch_size = \"lots\"\n").unwrap();
        let err = ModelConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("max_batch_size"), "{err}");
        std::fs::write(&path, "[versions]\npolicy = \"newest\"\n").unwrap();
        let err = ModelConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("policy"), "{err}");
        std::fs::write(&path, "[execution]\ninstances = 0\n").unwrap();
        let err = ModelConfig::read(&path).unwrap_err().to_string();
        assert!(err.contains("execution.instances"), "{err}");
    }

    #[test]
    fn limits_parse_and_unknown_limit_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[limits]\nrate_limit = \"10/1s\"\nrate_limit_burst = 5\n").unwrap();
        let config = ModelConfig::read(&path).unwrap();
        let rate = config.limits.rate_limit.unwrap();
        assert_eq!((rate.count, rate.period.as_secs()), (10, 1));
        assert_eq!(config.limits.rate_limit_burst, Some(5));
        std::fs::write(&path, "[limits]\nrate = \"10/1s\"\n").unwrap();
        assert!(ModelConfig::read(&path).unwrap_err().to_string().contains("rate"));
        std::fs::write(&path, "[limits]\nrate_limit = \"often\"\n").unwrap();
        assert!(ModelConfig::read(&path)
            .unwrap_err()
            .to_string()
            .contains("not a rate"));
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = ModelConfig::read(&dir.path().join("config.toml")).unwrap();
        assert_eq!(config, ModelConfig::default());
    }
}
