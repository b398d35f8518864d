//! The process-wide Prometheus recorder and the rollout gauges the
//! controller sets.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names;

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
    describe_gauge!(
        BODY_BYTES_IN_FLIGHT,
        Unit::Bytes,
        "Bytes of request bodies being read or held by requests in flight."
    );
    describe_gauge!(OPEN_CONNECTIONS, "Open client connections.");
    describe_counter!(
        CONNECTIONS_CLOSED_TOTAL,
        "Connections the server closed: header or idle timeout, or evicted at the connection cap."
    );
    describe_counter!(
        WORKER_RESTARTS_TOTAL,
        "Worker threads whose backend panicked and was replaced."
    );
    describe_counter!(
        NONFINITE_OUTPUTS_TOTAL,
        "Answers with NaN or infinite outputs for finite inputs."
    );
    describe_counter!(FEEDBACK_REJECTED_TOTAL, "Feedback refused, by reason.");
    describe_counter!(FEEDBACK_TOTAL, "Feedback values accepted.");
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
