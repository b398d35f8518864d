//! Statistics (Triton's statistics extension), independent of the wire.
//!
//! A *model stat* is one READY version's counters since it was loaded
//! ([`VersionStats`]) in the shape of Triton's `model_stats`: HTTP writes it
//! as JSON, gRPC as `inference.ModelStatistics`. Reading the counters takes
//! no lock except the per-batch-size table's.

use std::sync::atomic::Ordering::Relaxed;

use serde::Serialize;

use crate::repository::{ModelEntry, Snapshot};
use crate::runtime::stats::Tally;
use crate::runtime::VersionStats;
use crate::traffic::{self, RouteError, VersionSelector};

/// One version's statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelStat {
    pub name: String,
    pub version: String,
    /// Milliseconds since the Unix epoch; 0 before the first inference.
    pub last_inference: u64,
    /// Rows inferred (a batch of n rows counts n).
    pub inference_count: u64,
    /// ONNX Runtime runs.
    pub execution_count: u64,
    pub inference_stats: InferenceStats,
    /// One entry per batch size that ran.
    pub batch_stats: Vec<BatchStat>,
}

/// Cumulative request counts and durations by phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferenceStats {
    pub success: DurationStat,
    pub fail: DurationStat,
    pub queue: DurationStat,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
    /// No response cache: always zero.
    pub cache_hit: DurationStat,
    pub cache_miss: DurationStat,
}

/// Runs of one batch size and their cumulative durations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchStat {
    pub batch_size: usize,
    pub compute_input: DurationStat,
    pub compute_infer: DurationStat,
    pub compute_output: DurationStat,
}

/// A count and the nanoseconds it took in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DurationStat {
    pub count: u64,
    pub ns: u64,
}

impl From<&Tally> for DurationStat {
    fn from(t: &Tally) -> DurationStat {
        let (count, ns) = t.get();
        DurationStat { count, ns }
    }
}

fn model_stat(name: &str, version: u64, stats: &VersionStats) -> ModelStat {
    let per_batch = |count, ns| DurationStat { count, ns };
    ModelStat {
        name: name.to_string(),
        version: version.to_string(),
        last_inference: stats.last_inference_ms.load(Relaxed),
        inference_count: stats.inference_count.load(Relaxed),
        execution_count: stats.execution_count.load(Relaxed),
        inference_stats: InferenceStats {
            success: (&stats.success).into(),
            fail: (&stats.fail).into(),
            queue: (&stats.queue).into(),
            compute_input: (&stats.compute_input).into(),
            compute_infer: (&stats.compute_infer).into(),
            compute_output: (&stats.compute_output).into(),
            cache_hit: DurationStat::default(),
            cache_miss: DurationStat::default(),
        },
        batch_stats: stats
            .batch_stats()
            .into_iter()
            .map(|(batch_size, b)| BatchStat {
                batch_size,
                compute_input: per_batch(b.count, b.compute_input_ns),
                compute_infer: per_batch(b.count, b.compute_infer_ns),
                compute_output: per_batch(b.count, b.compute_output_ns),
            })
            .collect(),
    }
}

/// Stats of every READY version of `m`, oldest version first.
fn ready_stats(m: &ModelEntry) -> impl Iterator<Item = ModelStat> + '_ {
    m.ready_versions().filter_map(|v| {
        v.runtime
            .as_ref()
            .map(|r| model_stat(&m.name, v.number, r.stats()))
    })
}

/// Stats of every READY version of every model.
pub fn all(snapshot: &Snapshot) -> Vec<ModelStat> {
    snapshot.models.values().flat_map(|m| ready_stats(m)).collect()
}

/// Stats of every READY version of `model`; unknown model → error.
pub fn of_model(snapshot: &Snapshot, model: &str) -> Result<Vec<ModelStat>, RouteError> {
    let m = snapshot
        .models
        .get(model)
        .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
    Ok(ready_stats(m).collect())
}

/// Stats of one version (a number or a label): unknown → `Unknown*`,
/// known but not READY → `NotReady`.
pub fn of_version(
    snapshot: &Snapshot,
    model: &str,
    selector: VersionSelector<'_>,
) -> Result<ModelStat, RouteError> {
    let m = snapshot
        .models
        .get(model)
        .ok_or_else(|| RouteError::UnknownModel(model.to_string()))?;
    let (v, _) = traffic::version_number(m, selector)?;
    let entry = m.versions.get(&v);
    let runtime = entry.and_then(|e| e.runtime.as_ref()).ok_or_else(|| {
        let state = entry.map_or("not loaded", |e| e.state.name());
        RouteError::NotReady(model.to_string(), v, state.to_string())
    })?;
    Ok(model_stat(model, v, runtime.stats()))
}
