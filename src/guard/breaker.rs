//! Circuit breakers, one per (model, version).
//!
//! A *breaker* watches the outcomes clients saw from one version. It opens
//! after `consecutive_failures` failures in a row or when the failure rate
//! over a window exceeds `failure_rate` (with at least `MIN_REQUESTS`
//! requests); while open, routing sends that version's traffic to the
//! stable version (`x-route: fallback`). After `open_for` the breaker is
//! half-open: requests reach the version again and the first outcome
//! closes or re-opens it.
//!
//! The state machine is `failsafe`'s; it fits an async server as is because
//! its `is_call_permitted` / `on_success` / `on_error` calls are synchronous
//! and cheap, so routing asks before the call and `api::observe` reports
//! after it (failsafe's future wrapper is not needed). failsafe exposes no
//! side-effect-free state query, so an [`Instrument`] mirrors every
//! transition into an atomic that the hot path and `/metrics` read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use failsafe::failure_policy::{consecutive_failures, success_rate_over_time_window, FailurePolicy};
use failsafe::{backoff, Instrument, StateMachine};
use parking_lot::RwLock;

/// Requests a failure-rate decision needs in its window.
const MIN_REQUESTS: u32 = 20;
/// The window of the failure-rate policy.
const RATE_WINDOW: Duration = Duration::from_secs(30);

/// When a breaker opens and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (0 = never by count).
    pub consecutive_failures: u32,
    /// Failure share in the window that opens it (≥ 1.0 = never by rate).
    pub failure_rate: f64,
    /// How long an open breaker refuses before it lets requests probe.
    pub open_for: Duration,
}

/// The state of a breaker as routing and metrics see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

impl CircuitState {
    /// The value of the circuit state gauge.
    pub fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed => 0.0,
            CircuitState::Open => 1.0,
            CircuitState::HalfOpen => 2.0,
        }
    }

    fn from_u8(v: u8) -> CircuitState {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }
}

/// Mirrors failsafe's transitions into an atomic and the log.
struct Mirror {
    state: Arc<AtomicU8>,
    model: String,
    version: u64,
}

impl Instrument for Mirror {
    fn on_call_rejected(&self) {}

    fn on_open(&self) {
        self.state.store(1, Ordering::SeqCst);
        tracing::warn!(model = %self.model, version = self.version, "circuit breaker opened");
    }

    fn on_half_open(&self) {
        self.state.store(2, Ordering::SeqCst);
        tracing::info!(model = %self.model, version = self.version, "circuit breaker half-open: probing");
    }

    fn on_closed(&self) {
        if self.state.swap(0, Ordering::SeqCst) != 0 {
            tracing::info!(model = %self.model, version = self.version, "circuit breaker closed");
        }
    }
}

type Policy = failsafe::failure_policy::OrElse<
    failsafe::failure_policy::ConsecutiveFailures<backoff::Constant>,
    failsafe::failure_policy::SuccessRateOverTimeWindow<backoff::Constant>,
>;

struct Breaker {
    machine: StateMachine<Policy, Mirror>,
    state: Arc<AtomicU8>,
}

impl Breaker {
    fn new(config: &BreakerConfig, model: &str, version: u64) -> Breaker {
        let open = backoff::constant(config.open_for);
        let by_count = consecutive_failures(
            if config.consecutive_failures == 0 {
                u32::MAX
            } else {
                config.consecutive_failures
            },
            open.clone(),
        );
        let success = (1.0 - config.failure_rate).clamp(0.0, 1.0);
        let by_rate = success_rate_over_time_window(success, MIN_REQUESTS, RATE_WINDOW, open);
        let state = Arc::new(AtomicU8::new(0));
        let mirror = Mirror {
            state: state.clone(),
            model: model.to_string(),
            version,
        };
        Breaker {
            machine: StateMachine::new(by_count.or_else(by_rate), mirror),
            state,
        }
    }

    fn state(&self) -> CircuitState {
        CircuitState::from_u8(self.state.load(Ordering::SeqCst))
    }
}

/// Every version's breaker. Breakers are created on the first outcome
/// recorded for a version; versions that leave the repository are pruned
/// by [`Breakers::retain`].
pub struct Breakers {
    config: BreakerConfig,
    map: RwLock<HashMap<String, HashMap<u64, Arc<Breaker>>>>,
}

impl Breakers {
    /// No breakers yet.
    pub fn new(config: BreakerConfig) -> Breakers {
        Breakers {
            config,
            map: RwLock::new(HashMap::new()),
        }
    }

    /// How long an open breaker refuses (the `Retry-After` of a refused
    /// explicit request).
    pub fn open_for(&self) -> Duration {
        self.config.open_for
    }

    fn get(&self, model: &str, version: u64) -> Option<Arc<Breaker>> {
        self.map.read().get(model)?.get(&version).cloned()
    }

    /// True while the breaker of `model` version `version` is open (a
    /// half-open breaker lets requests probe, so it is not "open").
    pub fn is_open(&self, model: &str, version: u64) -> bool {
        self.state(model, version) == CircuitState::Open
    }

    /// The state of a version's breaker (closed when none exists).
    pub fn state(&self, model: &str, version: u64) -> CircuitState {
        self.get(model, version)
            .map(|b| b.state())
            .unwrap_or(CircuitState::Closed)
    }

    /// Routing's question: may a request go to this version now? Moves an
    /// open breaker whose period is over to half-open.
    pub fn permits(&self, model: &str, version: u64) -> bool {
        match self.get(model, version) {
            None => true,
            Some(b) if b.state() == CircuitState::Closed => true,
            Some(b) => b.machine.is_call_permitted(),
        }
    }

    /// Records what a client got from a version: `Some(true)` success,
    /// `Some(false)` a failure of the version, `None` says nothing about it.
    pub fn record(&self, model: &str, version: u64, success: Option<bool>) {
        let Some(success) = success else { return };
        let breaker = match self.get(model, version) {
            Some(b) => b,
            None if success => return, // a closed breaker with nothing to count
            None => {
                let mut map = self.map.write();
                map.entry(model.to_string())
                    .or_default()
                    .entry(version)
                    .or_insert_with(|| Arc::new(Breaker::new(&self.config, model, version)))
                    .clone()
            }
        };
        if success {
            breaker.machine.on_success();
        } else {
            breaker.machine.on_error();
        }
    }

    /// Forgets a version's breaker: it is closed, with nothing counted (a
    /// new rollout or a retry starts from a clean slate).
    pub fn reset(&self, model: &str, version: u64) {
        let mut map = self.map.write();
        if let Some(versions) = map.get_mut(model) {
            versions.remove(&version);
            if versions.is_empty() {
                map.remove(model);
            }
        }
    }

    /// Versions whose breaker is open or half-open now.
    pub fn not_closed(&self) -> Vec<(String, u64)> {
        self.map
            .read()
            .iter()
            .flat_map(|(m, versions)| {
                versions
                    .iter()
                    .filter(|(_, b)| b.state() != CircuitState::Closed)
                    .map(move |(&v, _)| (m.clone(), v))
            })
            .collect()
    }

    /// Drops the breakers of versions for which `keep` is false.
    pub fn retain(&self, mut keep: impl FnMut(&str, u64) -> bool) {
        let mut map = self.map.write();
        map.retain(|model, versions| {
            versions.retain(|&v, _| keep(model, v));
            !versions.is_empty()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers(open_ms: u64) -> Breakers {
        Breakers::new(BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 1.0,
            open_for: Duration::from_millis(open_ms),
        })
    }

    #[test]
    fn opens_after_consecutive_failures_and_closes_after_a_good_probe() {
        let b = breakers(50);
        assert!(b.permits("m", 2));
        b.record("m", 2, Some(false));
        b.record("m", 2, Some(false));
        assert!(!b.is_open("m", 2));
        b.record("m", 2, Some(true)); // a success resets the count
        for _ in 0..3 {
            b.record("m", 2, Some(false));
        }
        assert!(b.is_open("m", 2));
        assert!(!b.permits("m", 2));
        assert!(!b.is_open("m", 1), "breakers are per version");
        std::thread::sleep(Duration::from_millis(80));
        assert!(b.permits("m", 2), "half-open after the open period");
        assert_eq!(b.state("m", 2), CircuitState::HalfOpen);
        b.record("m", 2, Some(true));
        assert_eq!(b.state("m", 2), CircuitState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_and_client_errors_count_for_nothing() {
        let b = breakers(30);
        for _ in 0..3 {
            b.record("m", 1, Some(false));
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.permits("m", 1));
        b.record("m", 1, None);
        assert_eq!(b.state("m", 1), CircuitState::HalfOpen);
        b.record("m", 1, Some(false));
        assert!(b.is_open("m", 1));
        b.retain(|_, _| false);
        assert_eq!(b.state("m", 1), CircuitState::Closed);
    }

    #[test]
    fn a_reset_breaker_is_closed_with_nothing_counted() {
        let b = breakers(60_000);
        for _ in 0..3 {
            b.record("m", 2, Some(false));
        }
        assert_eq!(b.not_closed(), vec![("m".to_string(), 2)]);
        b.reset("m", 2);
        assert_eq!(b.state("m", 2), CircuitState::Closed);
        assert!(b.not_closed().is_empty());
        b.record("m", 2, Some(false));
        b.record("m", 2, Some(false));
        assert!(!b.is_open("m", 2), "the count started again");
    }
}
