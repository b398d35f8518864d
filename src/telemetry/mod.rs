//! Logging setup and the Prometheus metrics registry.
//!
//! Metric names live in [`names`]; the `metrics` facade records them into
//! one process-wide Prometheus recorder installed by [`install_metrics`].
//! Gauges that describe a snapshot (version ready, traffic weight, queue
//! depth, circuit state) are refreshed on every scrape by [`scrape`].

pub mod names;
mod scrape;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

pub use scrape::scrape;

/// Installs the global tracing subscriber; `RUST_LOG` overrides the level
/// (default `info`). Lines go to stdout through a writer thread that writes
/// whatever has queued up in one call, so the per-request log costs the
/// request path a channel send rather than a `write` under the stdout lock;
/// colours only when stdout is a terminal. Should stdout stall, lines beyond
/// the writer's queue (128k) are dropped rather than stalling requests. Keep the returned guard alive
/// until exit: dropping it flushes the lines still queued.
pub fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stdout().is_terminal();
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .thread_name("log-writer")
        .finish(std::io::BufWriter::new(std::io::stdout()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(writer);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return
/// the same handle). Several servers in one process (tests) share it.
pub fn install_metrics() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::SECONDS_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_rows".into()), names::ROWS_BUCKETS))
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        describe();
        handle.clone()
    })
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    use names::*;
    describe_counter!(REQUESTS_TOTAL, "Predict requests that reached a model version.");
    describe_histogram!(
        REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "End-to-end time of predict requests."
    );
    describe_histogram!(
        INFERENCE_DURATION_SECONDS,
        Unit::Seconds,
        "Time of one ONNX Runtime run (a batch counts once)."
    );
    describe_histogram!(
        QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "Time requests waited in a version's queue."
    );
    describe_histogram!(BATCH_SIZE_ROWS, "Rows per ONNX Runtime run.");
    describe_gauge!(QUEUE_DEPTH_REQUESTS, "Requests waiting in a version's queue.");
    describe_gauge!(VERSION_READY, "1 when the version is READY, else 0.");
    describe_gauge!(
        TRAFFIC_WEIGHT_BASIS_POINTS,
        "Share of versionless traffic routed to a version, in basis points."
    );
    describe_counter!(SHADOW_COMPARISONS_TOTAL, "Shadow comparisons by result.");
    describe_counter!(
        SHADOW_DROPPED_TOTAL,
        "Mirrored copies dropped because the shadow queue was full."
    );
    describe_gauge!(
        CIRCUIT_STATE,
        "Circuit breaker state per version: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(RATE_LIMITED_TOTAL, "Requests refused by a per-user rate limit.");
    describe_gauge!(RATE_LIMIT_KEYS, "Keys held by the rate limiters.");
    describe_counter!(LOAD_SHED_TOTAL, "Requests refused to protect the server.");
    describe_gauge!(IN_FLIGHT_REQUESTS, "Data-plane requests being served now.");
    describe_gauge!(
        ROLLOUT_PHASE,
        "1 for the current rollout phase of a model, else 0."
    );
    describe_gauge!(ROLLOUT_STEP, "Index of the current rollout step.");
    describe_counter!(ROLLOUT_ABORTED_TOTAL, "Rollouts aborted.");
}

/// Every rollout phase the gauge knows (a bounded label set).
pub const ROLLOUT_PHASES: &[&str] = &["validating", "progressing", "paused", "promoted", "aborted"];

/// Sets the rollout phase of `model` (one-hot over [`ROLLOUT_PHASES`]; an
/// unknown phase sets none) and its current step. For the rollout controller.
pub fn set_rollout(model: &str, phase: &str, step: usize) {
    for &p in ROLLOUT_PHASES {
        let value = if p == phase { 1.0 } else { 0.0 };
        metrics::gauge!(names::ROLLOUT_PHASE, "model" => model.to_string(), "phase" => p).set(value);
    }
    metrics::gauge!(names::ROLLOUT_STEP, "model" => model.to_string()).set(step as f64);
}

/// Counts an aborted rollout of `model`. For the rollout controller.
pub fn rollout_aborted(model: &str) {
    metrics::counter!(names::ROLLOUT_ABORTED_TOTAL, "model" => model.to_string()).increment(1);
}
