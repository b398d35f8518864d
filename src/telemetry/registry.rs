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
        HANDLER_PANICS_TOTAL,
        "Requests whose handler panicked: answered 500 (INTERNAL on gRPC); the server goes on."
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
    describe_gauge!(READY, "1 while the readiness probe answers 200, else 0.");
    describe_gauge!(
        POLICY_REVISION,
        "Revision of the traffic policy this server applies."
    );
    describe_gauge!(FLEET_LEADER, "1 while this server leads its fleet, else 0.");
    describe_counter!(FEEDBACK_VALUES_TOTAL, "Feedback values recorded.");
    describe_gauge!(FEEDBACK_SUM, "Running sum of the feedback values recorded.");
    describe_gauge!(
        FEEDBACK_SQUARES_SUM,
        "Running sum of the squared feedback values recorded."
    );
    describe_counter!(FEEDBACK_NON_BINARY_TOTAL, "Feedback values other than 0 and 1.");
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

/// Creates, at 0, every `requests_total` status class of a version traffic
/// can reach, so a fleet-wide error ratio never loses a version that had no
/// errors yet and the first requests count in a `rate()`. `route` is the
/// route the version's traffic mostly takes.
pub fn init_request_counters(model: &str, version: u64, route: &'static str) {
    for status in ["2xx", "4xx", "5xx"] {
        metrics::counter!(
            names::REQUESTS_TOTAL,
            "model" => model.to_string(),
            "version" => version.to_string(),
            "route" => route,
            "protocol" => "v2",
            "status" => status,
        )
        .increment(0);
    }
}

/// Creates the handler panic counters at 0, so a server's first panic
/// counts in an `increase()` (a series born at 1 shows no increase).
pub fn init_panic_counters() {
    for listener in ["data", "admin", "grpc"] {
        metrics::counter!(names::HANDLER_PANICS_TOTAL, "listener" => listener).increment(0);
    }
}

/// Sets the policy revision `model` is served with.
pub fn set_policy_revision(model: &str, revision: u64) {
    metrics::gauge!(names::POLICY_REVISION, "model" => model.to_string()).set(revision as f64);
}

/// Sets whether this server's readiness probe answers 200.
pub fn set_ready(ready: bool) {
    metrics::gauge!(names::READY).set(if ready { 1.0 } else { 0.0 });
}

/// Sets whether this server leads its fleet.
pub fn set_fleet_leader(leading: bool) {
    metrics::gauge!(names::FLEET_LEADER).set(if leading { 1.0 } else { 0.0 });
}

/// Counts one feedback value for `version` of `model` (the sums let a
/// fleet's leader compute the mean and variance across replicas).
pub fn feedback_recorded(model: &str, version: u64, value: f64) {
    let labels = [("model", model.to_string()), ("version", version.to_string())];
    metrics::counter!(names::FEEDBACK_VALUES_TOTAL, &labels).increment(1);
    metrics::counter!(names::FEEDBACK_NON_BINARY_TOTAL, &labels)
        .increment(u64::from(value != 0.0 && value != 1.0));
    metrics::gauge!(names::FEEDBACK_SUM, &labels).increment(value);
    metrics::gauge!(names::FEEDBACK_SQUARES_SUM, &labels).increment(value * value);
}

/// Counts an aborted rollout of `model`. For the rollout controller.
pub fn rollout_aborted(model: &str) {
    metrics::counter!(names::ROLLOUT_ABORTED_TOTAL, "model" => model.to_string()).increment(1);
}
