//! Telemetry: metric names, the Prometheus registry, and logging.
//!
//! Metric names live in [`names`]; the `metrics` facade records them into
//! one process-wide Prometheus recorder installed by [`install_metrics`].
//! Gauges that describe a snapshot are refreshed on every scrape by
//! `serving::scrape`, which owns the state they read.

mod log_writer;
mod logging;
pub mod names;
mod registry;

pub use log_writer::LogGuard;
pub use logging::{init_logging, panic_message, LogFormat};
pub use registry::{
    feedback_recorded, init_panic_counters, init_request_counters, install_metrics, rollout_aborted,
    set_fleet_leader, set_policy_revision, set_ready, set_rollout, ROLLOUT_PHASES,
};
