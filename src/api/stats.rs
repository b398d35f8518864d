//! The Triton statistics extension:
//! `GET /v2/models[/{m}[/versions/{v}]]/stats`.
//!
//! A *model stat* is one READY version's counters since it was loaded
//! ([`VersionStats`]), in the JSON shape of Triton's
//! `docs/protocol/extension_statistics.md`. Reading them takes no lock
//! except the per-batch-size table's.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;

use super::respond::json;
use crate::api::error::ApiError;
use crate::repository::ModelEntry;
use crate::runtime::stats::Tally;
use crate::runtime::VersionStats;
use crate::serving::AppState;
use crate::traffic::{self, RouteError, VersionSelector};

/// The statistics routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2/models/stats", get(all_models))
        .route("/v2/models/{model}/stats", get(one_model))
        .route("/v2/models/{model}/versions/{version}/stats", get(one_version))
}

#[derive(Serialize)]
struct StatsResponse<'a> {
    model_stats: Vec<ModelStat<'a>>,
}

#[derive(Serialize)]
struct ModelStat<'a> {
    name: &'a str,
    version: String,
    /// Milliseconds since the Unix epoch; 0 before the first inference.
    last_inference: u64,
    inference_count: u64,
    execution_count: u64,
    inference_stats: InferenceStats,
    batch_stats: Vec<BatchStat>,
}

#[derive(Serialize)]
struct InferenceStats {
    success: DurationStat,
    fail: DurationStat,
    queue: DurationStat,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
    /// No response cache: always zero.
    cache_hit: DurationStat,
    cache_miss: DurationStat,
}

#[derive(Serialize)]
struct BatchStat {
    batch_size: usize,
    compute_input: DurationStat,
    compute_infer: DurationStat,
    compute_output: DurationStat,
}

#[derive(Serialize, Default)]
struct DurationStat {
    count: u64,
    ns: u64,
}

impl From<&Tally> for DurationStat {
    fn from(t: &Tally) -> DurationStat {
        let (count, ns) = t.get();
        DurationStat { count, ns }
    }
}

fn model_stat<'a>(name: &'a str, version: u64, stats: &VersionStats) -> ModelStat<'a> {
    ModelStat {
        name,
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
                compute_input: DurationStat {
                    count: b.count,
                    ns: b.compute_input_ns,
                },
                compute_infer: DurationStat {
                    count: b.count,
                    ns: b.compute_infer_ns,
                },
                compute_output: DurationStat {
                    count: b.count,
                    ns: b.compute_output_ns,
                },
            })
            .collect(),
    }
}

/// Stats of every READY version of `m`, oldest version first.
fn ready_stats(m: &ModelEntry) -> impl Iterator<Item = ModelStat<'_>> {
    m.ready_versions().filter_map(|v| {
        v.runtime
            .as_ref()
            .map(|r| model_stat(&m.name, v.number, r.stats()))
    })
}

async fn all_models(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.repo.snapshot();
    let model_stats = snapshot.models.values().flat_map(|m| ready_stats(m)).collect();
    json(&StatsResponse { model_stats })
}

async fn one_model(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    let snapshot = state.repo.snapshot();
    match snapshot.models.get(&model) {
        Some(m) => json(&StatsResponse {
            model_stats: ready_stats(m).collect(),
        }),
        None => ApiError::from(RouteError::UnknownModel(model)).into_response(),
    }
}

async fn one_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    version_stats(&state, &model, VersionSelector::from_path(&version)).into_response()
}

/// Stats of one version (a number or a label): 404 when unknown, 503 when
/// it is known but not READY.
fn version_stats(state: &AppState, model: &str, selector: VersionSelector<'_>) -> Result<Response, ApiError> {
    let snapshot = state.repo.snapshot();
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
    Ok(json(&StatsResponse {
        model_stats: vec![model_stat(model, v, runtime.stats())],
    }))
}
