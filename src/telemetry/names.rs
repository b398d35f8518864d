//! Every metric name switchyard exports. Prefix `switchyard_`,
//! units in the name, `_total` on counters; labels come only from bounded
//! sets: model, version, route, protocol, status class, result, reason,
//! phase, state.

/// Counter: predict requests that reached a version.
/// Labels: model, version, route, protocol, status ("2xx", "4xx", "5xx").
pub const REQUESTS_TOTAL: &str = "switchyard_requests_total";
/// Histogram: end-to-end time of a predict request. Labels: model, version, protocol.
pub const REQUEST_DURATION_SECONDS: &str = "switchyard_request_duration_seconds";
/// Histogram: one ONNX Runtime run (a batch counts once). Labels: model, version.
pub const INFERENCE_DURATION_SECONDS: &str = "switchyard_inference_duration_seconds";
/// Histogram: time a request waited in its version's queue. Labels: model, version.
pub const QUEUE_WAIT_SECONDS: &str = "switchyard_queue_wait_seconds";
/// Histogram: rows per ONNX Runtime run. Labels: model, version.
pub const BATCH_SIZE_ROWS: &str = "switchyard_batch_size_rows";
/// Gauge: requests waiting in a version's queue (at scrape time). Labels: model, version.
pub const QUEUE_DEPTH_REQUESTS: &str = "switchyard_queue_depth_requests";
/// Gauge: 1 when the version is READY, else 0. Labels: model, version.
pub const VERSION_READY: &str = "switchyard_version_ready";
/// Gauge: share of versionless traffic a version receives, in basis points
/// (10000 = all). Labels: model, version.
pub const TRAFFIC_WEIGHT_BASIS_POINTS: &str = "switchyard_traffic_weight_basis_points";
/// Counter: shadow comparisons. Labels: model, version (the shadow),
/// result ("agree", "disagree", "error").
pub const SHADOW_COMPARISONS_TOTAL: &str = "switchyard_shadow_comparisons_total";
/// Counter: mirrored copies dropped because the shadow queue was full.
/// Labels: model, version (the shadow).
pub const SHADOW_DROPPED_TOTAL: &str = "switchyard_shadow_dropped_total";
/// Gauge: circuit breaker state of a version: 0 closed, 1 open, 2 half-open.
/// Labels: model, version.
pub const CIRCUIT_STATE: &str = "switchyard_circuit_state";
/// Counter: requests refused by a per-user rate limit. Labels: model.
pub const RATE_LIMITED_TOTAL: &str = "switchyard_rate_limited_total";
/// Gauge: keys the rate limiters hold (bounded by --rate-limit-keys).
pub const RATE_LIMIT_KEYS: &str = "switchyard_rate_limit_keys";
/// Counter: requests refused to protect the server.
/// Labels: reason ("in_flight", "queue_full", "body_bytes", "connections").
pub const LOAD_SHED_TOTAL: &str = "switchyard_load_shed_total";
/// Gauge: bytes of request bodies being read or held by requests in flight
/// (bounded by --body-bytes-in-flight).
pub const BODY_BYTES_IN_FLIGHT: &str = "switchyard_body_bytes_in_flight";
/// Gauge: open client connections. Labels: listener ("data", "admin").
pub const OPEN_CONNECTIONS: &str = "switchyard_open_connections";
/// Counter: requests whose handler panicked (answered 500, INTERNAL on
/// gRPC; the server goes on). Labels: listener ("data", "admin", "grpc").
pub const HANDLER_PANICS_TOTAL: &str = "switchyard_handler_panics_total";
/// Counter: connections the server closed before the client did.
/// Labels: listener, reason ("header_timeout", "idle_timeout", "evicted").
pub const CONNECTIONS_CLOSED_TOTAL: &str = "switchyard_connections_closed_total";
/// Counter: worker threads whose backend panicked and was replaced.
/// Labels: model, version.
pub const WORKER_RESTARTS_TOTAL: &str = "switchyard_worker_restarts_total";
/// Counter: answers with NaN or infinite output values for finite inputs.
/// Labels: model, version.
pub const NONFINITE_OUTPUTS_TOTAL: &str = "switchyard_nonfinite_outputs_total";
/// Counter: feedback refused. Labels: reason ("unauthorized", "unknown_id",
/// "duplicate", "out_of_range", "invalid").
pub const FEEDBACK_REJECTED_TOTAL: &str = "switchyard_feedback_rejected_total";
/// Gauge: data-plane requests being served now.
pub const IN_FLIGHT_REQUESTS: &str = "switchyard_in_flight_requests";
/// Gauge: 1 for a model's current rollout phase, 0 for the others.
/// Labels: model, phase.
pub const ROLLOUT_PHASE: &str = "switchyard_rollout_phase";
/// Gauge: index of the current rollout step (0-based). Labels: model.
pub const ROLLOUT_STEP: &str = "switchyard_rollout_step";
/// Counter: rollouts aborted (by analysis, a breaker or an operator). Labels: model.
pub const ROLLOUT_ABORTED_TOTAL: &str = "switchyard_rollout_aborted_total";

/// Gauge: 1 while the server's readiness probe answers 200, else 0.
pub const READY: &str = "switchyard_ready";
/// Gauge: the revision of the traffic policy this server applies. Labels: model.
pub const POLICY_REVISION: &str = "switchyard_policy_revision";
/// Gauge: 1 while this server leads its fleet (fleet mode), else 0.
pub const FLEET_LEADER: &str = "switchyard_fleet_leader";
/// Counter: feedback values recorded. Labels: model, version.
pub const FEEDBACK_VALUES_TOTAL: &str = "switchyard_feedback_total";
/// Gauge: the running sum of the feedback values recorded (a gauge: values
/// may be negative). Labels: model, version.
pub const FEEDBACK_SUM: &str = "switchyard_feedback_values_summed";
/// Gauge: the running sum of the squared feedback values. Labels: model, version.
pub const FEEDBACK_SQUARES_SUM: &str = "switchyard_feedback_values_squared_summed";
/// Counter: feedback values other than 0 and 1. Labels: model, version.
pub const FEEDBACK_NON_BINARY_TOTAL: &str = "switchyard_feedback_non_binary_total";

/// Bucket bounds for every `_seconds` histogram.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Bucket bounds for the batch size histogram.
pub const ROWS_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

/// The status class label of an HTTP status ("2xx" … "5xx").
pub fn status_class(status: u16) -> &'static str {
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}
