//! A *window* holds a version's recent outcomes as clients saw them (status
//! class and latency of each request, and feedback values), so rollout
//! analysis can compare two versions over the same period. It is bounded in
//! both count and age; percentiles are exact over what it holds.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;

/// Events kept per version at most.
const MAX_EVENTS: usize = 200_000;
/// Events older than this are dropped.
const MAX_AGE: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Clone, Copy)]
struct Outcome {
    at: SystemTime,
    ok: bool,
    latency_us: u32,
}

/// Recent outcomes and feedback of one version.
#[derive(Debug, Default)]
pub struct Window {
    outcomes: Mutex<VecDeque<Outcome>>,
    feedback: Mutex<VecDeque<(SystemTime, f64)>>,
}

/// What a window says about a period.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub error_rate: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub feedback_count: u64,
    pub feedback_mean: f64,
    #[serde(skip)]
    pub feedback: Vec<f64>,
}

fn push_bounded<T>(q: &mut VecDeque<T>, item: T, at: impl Fn(&T) -> SystemTime, now: SystemTime) {
    if q.len() == MAX_EVENTS {
        q.pop_front();
    }
    while q
        .front()
        .is_some_and(|e| now.duration_since(at(e)).is_ok_and(|age| age > MAX_AGE))
    {
        q.pop_front();
    }
    q.push_back(item);
}

impl Window {
    /// Records one request: `ok` is false for server-side failures (5xx).
    pub fn record(&self, ok: bool, latency: Duration) {
        let now = SystemTime::now();
        let outcome = Outcome {
            at: now,
            ok,
            latency_us: latency.as_micros().min(u32::MAX as u128) as u32,
        };
        push_bounded(&mut self.outcomes.lock(), outcome, |o| o.at, now);
    }

    /// Records one feedback value.
    pub fn record_feedback(&self, value: f64) {
        let now = SystemTime::now();
        push_bounded(&mut self.feedback.lock(), (now, value), |f| f.0, now);
    }

    /// Summarises everything recorded at or after `since`.
    pub fn summary(&self, since: SystemTime) -> Summary {
        let mut latencies: Vec<u32> = Vec::new();
        let mut errors = 0u64;
        for o in self.outcomes.lock().iter().filter(|o| o.at >= since) {
            latencies.push(o.latency_us);
            if !o.ok {
                errors += 1;
            }
        }
        latencies.sort_unstable();
        let pct = |p: f64| -> f64 {
            if latencies.is_empty() {
                return 0.0;
            }
            let i = ((p * latencies.len() as f64).ceil() as usize).clamp(1, latencies.len()) - 1;
            latencies[i] as f64 / 1000.0
        };
        let feedback: Vec<f64> = self
            .feedback
            .lock()
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, v)| *v)
            .collect();
        let requests = latencies.len() as u64;
        Summary {
            requests,
            errors,
            error_rate: if requests == 0 {
                0.0
            } else {
                errors as f64 / requests as f64
            },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            feedback_count: feedback.len() as u64,
            feedback_mean: if feedback.is_empty() {
                0.0
            } else {
                feedback.iter().sum::<f64>() / feedback.len() as f64
            },
            feedback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_period() {
        let w = Window::default();
        let before = SystemTime::now();
        for i in 1..=100u64 {
            w.record(i % 10 != 0, Duration::from_millis(i));
        }
        w.record_feedback(1.0);
        w.record_feedback(0.0);
        let s = w.summary(before);
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 10);
        assert!((s.error_rate - 0.1).abs() < 1e-12);
        assert_eq!(s.p50_ms, 50.0);
        assert_eq!(s.p95_ms, 95.0);
        assert_eq!(s.p99_ms, 99.0);
        assert_eq!(s.feedback_count, 2);
        assert_eq!(s.feedback_mean, 0.5);
        let later = w.summary(SystemTime::now() + Duration::from_secs(1));
        assert_eq!(later.requests, 0);
    }
}
