//! The metrics answer: the gauges that describe the current snapshot
//! (version ready, traffic weight, queue depth, circuit state, rate-limit
//! keys, in-flight) refreshed from the state they read, then the registry
//! rendered as Prometheus text.

use std::collections::HashSet;

use parking_lot::Mutex;

use super::state::AppState;
use crate::telemetry::names;

/// Series set on the previous scrape, so versions that left the snapshot
/// are set to 0 instead of keeping their last value.
static SEEN: Mutex<Option<HashSet<(String, u64)>>> = Mutex::new(None);

/// Refreshes the gauges that describe the current snapshot and renders the
/// Prometheus text exposition.
pub fn scrape(state: &AppState) -> String {
    let handle = crate::telemetry::install_metrics();
    refresh(state);
    handle.run_upkeep();
    handle.render()
}

fn refresh(state: &AppState) {
    use metrics::gauge;
    let snapshot = state.repo.snapshot();
    let mut now = HashSet::new();
    for (name, m) in &snapshot.models {
        let weights = weights(m);
        for (&v, entry) in &m.versions {
            let labels = [("model", name.clone()), ("version", v.to_string())];
            let healthy = entry.runtime.as_ref().is_none_or(|r| r.is_healthy());
            let ready = matches!(entry.state, crate::repository::VersionState::Ready) && healthy;
            gauge!(names::VERSION_READY, &labels).set(if ready { 1.0 } else { 0.0 });
            if ready {
                let route = if m.default_version() == Some(v) {
                    "stable"
                } else {
                    "sticky"
                };
                crate::telemetry::init_request_counters(name, v, route);
            }
            let weight = weights
                .iter()
                .find(|(w, _)| *w == v)
                .map(|(_, bp)| *bp)
                .unwrap_or(0);
            gauge!(names::TRAFFIC_WEIGHT_BASIS_POINTS, &labels).set(weight as f64);
            let depth = entry.runtime.as_ref().map(|r| r.queue_depth()).unwrap_or(0);
            gauge!(names::QUEUE_DEPTH_REQUESTS, &labels).set(depth as f64);
            let circuit = state.guard.breakers.state(name, v);
            gauge!(names::CIRCUIT_STATE, &labels).set(circuit.gauge());
            now.insert((name.clone(), v));
        }
    }
    for (name, m) in &snapshot.models {
        if m.policy.is_some() {
            crate::telemetry::set_policy_revision(name, m.policy_revision);
        }
    }
    crate::telemetry::set_ready(super::readiness::readiness(state).is_ok());
    let mut seen = SEEN.lock();
    if let Some(before) = seen.as_ref() {
        for (name, v) in before.difference(&now) {
            let labels = [("model", name.clone()), ("version", v.to_string())];
            gauge!(names::VERSION_READY, &labels).set(0.0);
            gauge!(names::TRAFFIC_WEIGHT_BASIS_POINTS, &labels).set(0.0);
            gauge!(names::QUEUE_DEPTH_REQUESTS, &labels).set(0.0);
        }
    }
    *seen = Some(now);
    drop(seen);
    gauge!(names::RATE_LIMIT_KEYS).set(state.guard.limits.keys() as f64);
    gauge!(names::IN_FLIGHT_REQUESTS).set(state.in_flight() as f64);
    gauge!(names::BODY_BYTES_IN_FLIGHT).set(state.body_budget.in_use() as f64);
}

/// (version, basis points) of versionless traffic under the model's policy,
/// or all of it to the default version without one.
pub fn weights(m: &crate::repository::ModelEntry) -> Vec<(u64, u32)> {
    const FULL: u32 = 10_000;
    match &m.policy {
        Some(p) => match &p.spec().candidate {
            Some(c) if c.version != p.stable() => {
                let w = c.weight.bp().min(FULL);
                vec![(c.version, w), (p.stable(), FULL - w)]
            }
            _ => vec![(p.stable(), FULL)],
        },
        None => m.default_version().map(|v| vec![(v, FULL)]).unwrap_or_default(),
    }
}
