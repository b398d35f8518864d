//! Pre-deployment validation: before any traffic, the candidate
//! must load, match the stable version's signature, run every sample with
//! finite outputs, reach `min_accuracy` on labelled samples, keep its p95
//! under `max_p95_ms`, stay under the size limit and match its sha256.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::repository::config::ValidationConfig;
use crate::repository::{ModelEntry, Repository, Samples, VersionState};
use crate::runtime::{Signature, TensorSpec, VersionRuntime};
use crate::tensor::{Tensor, TensorData};

/// Warm runs timed for the latency check.
const LATENCY_RUNS: usize = 50;

/// One named check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub passed: bool,
    /// The measured value, e.g. "0.9689" or "0.42 ms".
    pub value: String,
    pub detail: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub version: u64,
    pub against: Option<u64>,
    pub passed: bool,
    pub checks: Vec<Check>,
}

impl Report {
    /// The failing checks, named, for an abort reason.
    pub fn failures(&self) -> String {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{} ({}: {})", c.name, c.value, c.detail))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn check(name: &'static str, passed: bool, value: impl Into<String>, detail: impl Into<String>) -> Check {
    Check {
        name,
        passed,
        value: value.into(),
        detail: detail.into(),
    }
}

fn finite(d: &TensorData) -> bool {
    match d {
        TensorData::Fp16(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Fp32(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Fp64(v) => v.iter().all(|x| x.is_finite()),
        _ => true,
    }
}

/// Validates `version` of `model` against `stable` (blocking; loads the
/// version next to the serving ones if needed).
pub fn validate(repo: &Repository, model: &str, version: u64, stable: Option<u64>) -> Report {
    let mut checks = Vec::new();
    let loaded = load(repo, model, version, &mut checks);
    if let Some((m, runtime)) = loaded {
        let sig = runtime.signature().clone();
        if let Some(s) = stable
            .and_then(|s| m.versions.get(&s))
            .and_then(|v| v.signature().cloned())
        {
            checks.push(signature(&sig, &s));
        }
        let first_inputs = match m.samples.as_deref() {
            Some(samples) => run_samples(&runtime, &sig, samples, &m.config.validation, &mut checks),
            None => None,
        };
        let inputs = first_inputs.unwrap_or_else(|| crate::repository::warmup_inputs(&sig, None));
        checks.push(latency(&runtime, inputs, m.config.validation.max_p95_ms));
        file_checks(repo, model, version, &m.config.validation, &mut checks);
    }
    Report {
        model: model.to_string(),
        version,
        against: stable,
        passed: checks.iter().all(|c| c.passed),
        checks,
    }
}

/// "loads": the version loads and warms up; its model entry and runtime.
fn load(
    repo: &Repository,
    model: &str,
    version: u64,
    checks: &mut Vec<Check>,
) -> Option<(Arc<ModelEntry>, Arc<VersionRuntime>)> {
    match repo.load_specific(model, version) {
        Ok(VersionState::Ready) => checks.push(check("loads", true, "READY", "loaded and warmed up")),
        Ok(state) => {
            checks.push(check("loads", false, state.name(), state.reason().to_string()));
            return None;
        }
        Err(e) => {
            checks.push(check("loads", false, "missing", e.to_string()));
            return None;
        }
    }
    let snapshot = repo.snapshot();
    let Some(m) = snapshot.models.get(model).cloned() else {
        checks.push(check("loads", false, "missing", "model vanished"));
        return None;
    };
    let Some(runtime) = m.versions.get(&version).and_then(|v| v.runtime.clone()) else {
        checks.push(check(
            "loads",
            false,
            "not READY",
            "version unloaded during validation",
        ));
        return None;
    };
    Some((m, runtime))
}

/// "signature": the same inputs (names, types, shapes) and output names
/// and types as the stable version.
fn signature(sig: &Signature, stable: &Signature) -> Check {
    let mut diffs = Vec::new();
    if sig.inputs != stable.inputs {
        diffs.push(format!(
            "inputs {:?} vs stable {:?}",
            brief(&sig.inputs),
            brief(&stable.inputs)
        ));
    }
    let outs = |v: &[TensorSpec]| v.iter().map(|t| (t.name.clone(), t.datatype)).collect::<Vec<_>>();
    if outs(&sig.outputs) != outs(&stable.outputs) {
        diffs.push(format!(
            "outputs {:?} vs stable {:?}",
            brief(&sig.outputs),
            brief(&stable.outputs)
        ));
    }
    if diffs.is_empty() {
        check(
            "signature",
            true,
            "compatible",
            "same inputs and outputs as the stable version",
        )
    } else {
        check("signature", false, "incompatible", diffs.join("; "))
    }
}

/// "samples" (every sample runs with finite outputs) and "accuracy" (on
/// labelled samples, against `min_accuracy`). Returns the first sample's
/// inputs for the latency check.
fn run_samples(
    runtime: &VersionRuntime,
    sig: &Signature,
    samples: &Samples,
    validation: &ValidationConfig,
    checks: &mut Vec<Check>,
) -> Option<Vec<Tensor>> {
    let (mut ran, mut bad, mut labelled, mut correct) = (0, Vec::new(), 0usize, 0usize);
    let label_index = samples.label_output.as_deref().and_then(|l| sig.output_index(l));
    let mut first_inputs = None;
    for (i, sample) in samples.samples.iter().enumerate() {
        let inputs = match sample.tensors(sig) {
            Ok(t) => t,
            Err(e) => {
                bad.push(format!("sample {i}: {e}"));
                continue;
            }
        };
        if first_inputs.is_none() {
            first_inputs = Some(inputs.clone());
        }
        match runtime.infer_blocking(inputs) {
            Ok(outputs) => {
                ran += 1;
                if let Some(t) = outputs.iter().find(|t| !finite(&t.data)) {
                    bad.push(format!("sample {i}: output '{}' is not finite", t.name));
                }
                if let (Some(li), Some(label)) = (label_index, sample.label) {
                    labelled += 1;
                    if predicted_label(&outputs[li].data) == Some(label) {
                        correct += 1;
                    }
                }
            }
            Err(e) => bad.push(format!("sample {i}: {e}")),
        }
    }
    checks.push(check(
        "samples",
        bad.is_empty(),
        format!("{ran}/{} ran", samples.samples.len()),
        if bad.is_empty() {
            "all outputs finite".to_string()
        } else {
            bad.into_iter().take(3).collect::<Vec<_>>().join("; ")
        },
    ));
    let min = validation.min_accuracy;
    if labelled > 0 {
        let acc = correct as f64 / labelled as f64;
        checks.push(check(
            "accuracy",
            min.is_none_or(|m| acc >= m),
            format!("{acc:.4}"),
            match min {
                Some(m) => format!("{correct}/{labelled} correct; min_accuracy {m}"),
                None => format!("{correct}/{labelled} correct; no min_accuracy set"),
            },
        ));
    } else if let Some(min) = min {
        checks.push(check(
            "accuracy",
            false,
            "n/a",
            format!("min_accuracy {min} needs labelled samples"),
        ));
    }
    first_inputs
}

/// The class a label output holds for the first row.
fn predicted_label(data: &TensorData) -> Option<i64> {
    match data {
        TensorData::Int64(v) => v.first().copied(),
        TensorData::Int32(v) => v.first().map(|&x| x as i64),
        _ => None,
    }
}

/// "latency": p95 over warm runs, against `max_p95_ms`.
fn latency(runtime: &VersionRuntime, inputs: Vec<Tensor>, max_p95_ms: Option<f64>) -> Check {
    let mut times = Vec::with_capacity(LATENCY_RUNS);
    for _ in 0..LATENCY_RUNS {
        let t = Instant::now();
        if runtime.infer_blocking(inputs.clone()).is_err() {
            break;
        }
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let p95 = times
        .get(((times.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
        .copied()
        .unwrap_or(f64::INFINITY);
    check(
        "latency",
        max_p95_ms.is_none_or(|m| p95 <= m),
        format!("{p95:.3} ms"),
        match max_p95_ms {
            Some(m) => format!("p95 over {} warm runs; max_p95_ms {m}", times.len()),
            None => format!("p95 over {} warm runs; no max_p95_ms set", times.len()),
        },
    )
}

/// "size" (against `max_file_bytes`) and "sha256" (when one is given).
fn file_checks(
    repo: &Repository,
    model: &str,
    version: u64,
    validation: &ValidationConfig,
    checks: &mut Vec<Check>,
) {
    let path = match repo.version_dir(model, version) {
        Ok(dir) => dir.join("model.onnx"),
        Err(e) => {
            checks.push(check("size", false, "unreadable", e.to_string()));
            return;
        }
    };
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) => {
            checks.push(check("size", false, "unreadable", e.to_string()));
            return;
        }
    };
    let size = bytes.len() as u64;
    checks.push(check(
        "size",
        validation.max_file_bytes.is_none_or(|m| size <= m),
        format!("{size} bytes"),
        match validation.max_file_bytes {
            Some(m) => format!("max_file_bytes {m}"),
            None => "no max_file_bytes set".into(),
        },
    ));
    if let Some(want) = validation.sha256.get(&version) {
        let got = format!("{:x}", Sha256::digest(&bytes));
        checks.push(check(
            "sha256",
            got.eq_ignore_ascii_case(want),
            got,
            format!("expected {want}"),
        ));
    }
}

fn brief(specs: &[TensorSpec]) -> Vec<String> {
    specs
        .iter()
        .map(|t| format!("{} {} {:?}", t.name, t.datatype, t.shape))
        .collect()
}
