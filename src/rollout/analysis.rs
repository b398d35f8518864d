//! Analysis compares the candidate C with the stable version S over the
//! same window. [`analyze`] is pure; [`MetricsSource`] is the one seam
//! through which the controller reads metrics, so where they come from (the
//! in-process windows of one server, or Prometheus across a fleet) never
//! leaks into the decisions.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

use serde::Serialize;

use super::spec::AnalysisSpec;
use crate::runtime::window::Summary;

/// The outcome of one analysis.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", content = "detail", rename_all = "kebab-case")]
pub enum Verdict {
    Pass(String),
    /// Names the failing metric and both values.
    Fail(String),
    /// Too little data to judge.
    Inconclusive(String),
}

/// A value of S and of C and the limit C is held to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Compared {
    pub stable: f64,
    pub candidate: f64,
    pub limit: f64,
}

/// The request counts of S and C and the minimum both need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Counts {
    pub stable: u64,
    pub candidate: u64,
    pub min: u64,
}

/// The numbers an analysis compares, each next to its threshold, as
/// [`analyze`] computes them (stored with every analysis so operators see
/// why a step held, passed or failed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measures {
    pub requests: Counts,
    /// Limit: the highest error rate C may have.
    pub error_rate: Compared,
    /// Limit: the highest p95 C may have (the ratio, but at least 1 ms
    /// above S's).
    pub p95_ms: Compared,
    /// p95(C) / p95(S), when S has a p95.
    pub p95_ratio: Option<f64>,
    pub max_p95_ratio: f64,
    /// Limit: the lowest feedback mean C may have; present only when both
    /// versions have feedback (the only case it is compared).
    pub feedback: Option<Compared>,
    pub min_feedback_delta: f64,
}

/// The numbers [`analyze`] compares under the thresholds of `spec`.
pub fn measure(spec: &AnalysisSpec, s: &Summary, c: &Summary) -> Measures {
    let max_err = (s.error_rate * spec.max_error_rate_ratio).max(s.error_rate + spec.max_error_rate_delta);
    // sub-millisecond p95s are dominated by scheduling noise: allow 1 ms
    let max_p95 = (s.p95_ms * spec.max_p95_ratio).max(s.p95_ms + 1.0);
    Measures {
        requests: Counts {
            stable: s.requests,
            candidate: c.requests,
            min: spec.min_requests,
        },
        error_rate: Compared {
            stable: s.error_rate,
            candidate: c.error_rate,
            limit: max_err,
        },
        p95_ms: Compared {
            stable: s.p95_ms,
            candidate: c.p95_ms,
            limit: max_p95,
        },
        p95_ratio: (s.p95_ms > 0.0).then(|| c.p95_ms / s.p95_ms),
        max_p95_ratio: spec.max_p95_ratio,
        feedback: (s.feedback_count > 0 && c.feedback_count > 0).then_some(Compared {
            stable: s.feedback_mean,
            candidate: c.feedback_mean,
            limit: s.feedback_mean + spec.min_feedback_delta,
        }),
        min_feedback_delta: spec.min_feedback_delta,
    }
}

/// Compares C with S under the thresholds of `spec`.
pub fn analyze(spec: &AnalysisSpec, s: &Summary, c: &Summary) -> Verdict {
    if s.requests < spec.min_requests || c.requests < spec.min_requests {
        return Verdict::Inconclusive(format!(
            "too few requests: stable {} and candidate {} (min_requests {})",
            s.requests, c.requests, spec.min_requests
        ));
    }
    let m = measure(spec, s, c);
    if c.error_rate > m.error_rate.limit {
        return Verdict::Fail(format!(
            "error rate: candidate {:.4} > limit {:.4} (stable {:.4})",
            c.error_rate, m.error_rate.limit, s.error_rate
        ));
    }
    if c.p95_ms > m.p95_ms.limit {
        return Verdict::Fail(format!(
            "p95 latency: candidate {:.3} ms > limit {:.3} ms (stable {:.3} ms)",
            c.p95_ms, m.p95_ms.limit, s.p95_ms
        ));
    }
    if let Some(f) = m.feedback {
        if c.feedback_mean < f.limit {
            return Verdict::Fail(format!(
                "feedback: candidate mean {:.4} < limit {:.4} (stable {:.4})",
                c.feedback_mean, f.limit, s.feedback_mean
            ));
        }
    }
    Verdict::Pass(format!(
        "error rate {:.4} vs {:.4}, p95 {:.3} ms vs {:.3} ms, feedback {:.3} vs {:.3}",
        c.error_rate, s.error_rate, c.p95_ms, s.p95_ms, c.feedback_mean, s.feedback_mean
    ))
}

/// A future the seams return (they may wait on the network).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The metrics could not be read (the source is down, timed out or
/// answered something unreadable). Never the same as "no data".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MetricsError(pub String);

/// Shadow comparisons of a candidate against the stable version.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ShadowSummary {
    pub compared: u64,
    /// agreed / compared (1.0 when nothing was compared).
    pub agreement: f64,
    /// The shadow failed while the primary succeeded.
    pub errors: u64,
}

/// Where the controller reads metrics from. `Ok(None)` is "no data" (the
/// analysis is inconclusive); `Err` is "cannot tell" (the step holds).
pub trait MetricsSource: Send + Sync {
    /// What `version` of `model` did since `since`; `None` without data.
    fn summary<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Summary>, MetricsError>>;
    /// Shadow comparisons of `shadow` against `primary` since `since`.
    fn shadow<'a>(
        &'a self,
        model: &'a str,
        primary: u64,
        shadow: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<ShadowSummary>, MetricsError>>;
    /// True when the circuit breaker of the version was open (anywhere)
    /// since `since`.
    fn breaker_open<'a>(
        &'a self,
        model: &'a str,
        version: u64,
        since: SystemTime,
    ) -> BoxFuture<'a, Result<bool, MetricsError>>;
    /// Since when (seconds since the Unix epoch) every serving replica
    /// holds policy `revision` of `model` or a later one; `None`: not yet.
    fn converged<'a>(
        &'a self,
        model: &'a str,
        revision: u64,
    ) -> BoxFuture<'a, Result<Option<f64>, MetricsError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(requests: u64, errors: u64, p95: f64, feedback: f64) -> Summary {
        Summary {
            requests,
            errors,
            error_rate: errors as f64 / requests.max(1) as f64,
            p50_ms: p95 / 2.0,
            p95_ms: p95,
            p99_ms: p95,
            feedback_count: requests,
            feedback_mean: feedback,
            feedback: Default::default(),
        }
    }

    #[test]
    fn thresholds() {
        let spec = AnalysisSpec::default();
        let s = summary(1000, 10, 10.0, 0.9);
        assert!(matches!(
            analyze(&spec, &s, &summary(1000, 12, 11.0, 0.85)),
            Verdict::Pass(_)
        ));
        let v = analyze(&spec, &s, &summary(1000, 30, 10.0, 0.9));
        assert!(
            matches!(&v, Verdict::Fail(m) if m.contains("error rate")),
            "{v:?}"
        );
        let v = analyze(&spec, &s, &summary(1000, 10, 13.0, 0.9));
        assert!(matches!(&v, Verdict::Fail(m) if m.contains("p95")), "{v:?}");
        let v = analyze(&spec, &s, &summary(1000, 10, 10.0, 0.7));
        assert!(matches!(&v, Verdict::Fail(m) if m.contains("feedback")), "{v:?}");
        let v = analyze(&spec, &s, &summary(99, 0, 10.0, 0.9));
        assert!(matches!(v, Verdict::Inconclusive(_)));
        // zero errors on S: the absolute delta applies
        let s0 = summary(1000, 0, 10.0, 0.9);
        assert!(matches!(
            analyze(&spec, &s0, &summary(1000, 4, 10.0, 0.9)),
            Verdict::Pass(_)
        ));
        assert!(matches!(
            analyze(&spec, &s0, &summary(1000, 6, 10.0, 0.9)),
            Verdict::Fail(_)
        ));
    }

    #[test]
    fn measures_carry_the_limits_analyze_applies() {
        let spec = AnalysisSpec::default();
        let s = summary(1000, 10, 10.0, 0.9);
        let m = measure(&spec, &s, &summary(500, 12, 11.0, 0.85));
        assert_eq!(
            (m.requests.stable, m.requests.candidate, m.requests.min),
            (1000, 500, 100)
        );
        assert!((m.error_rate.limit - 0.015).abs() < 1e-12, "{:?}", m.error_rate);
        assert!((m.p95_ms.limit - 12.0).abs() < 1e-9, "{:?}", m.p95_ms);
        assert!((m.p95_ratio.unwrap() - 1.1).abs() < 1e-9);
        let f = m.feedback.unwrap();
        assert!((f.limit - 0.8).abs() < 1e-12, "{f:?}");
        // a candidate just over each limit fails on it
        let just_over = summary(1000, 16, 10.0, 0.9);
        assert!(just_over.error_rate > m.error_rate.limit);
        assert!(matches!(analyze(&spec, &s, &just_over), Verdict::Fail(_)));
        // no feedback on one side: not compared, and not in the measures
        let mut quiet = summary(1000, 10, 10.0, 0.0);
        quiet.feedback_count = 0;
        assert_eq!(measure(&spec, &s, &quiet).feedback, None);
    }
}
