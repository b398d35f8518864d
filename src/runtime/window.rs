//! A *window* holds a version's recent outcomes as clients saw them (whether
//! each request succeeded and how long it took) and the feedback values
//! posted for it, so rollout analysis can compare two versions over the same
//! period.
//!
//! Outcomes go into time *buckets*: 5 s each for the last 30 minutes, merged
//! into 5-minute buckets up to 6 hours. A bucket holds counts, a latency
//! histogram (hdrhistogram, 1% precision) and the moments of the feedback
//! values, all mergeable, so memory is bounded by the number of buckets
//! whatever the request rate, and a summary of any period (a whole canary
//! step) merges the buckets it covers. Periods are resolved to 5 s.
//!
//! The window also keeps *totals* since the version was loaded (counts and a
//! latency histogram, under the same lock), so a sampler can take the
//! difference of two totals for any finer period (the live page's
//! per-second history) without a second pass on the request path.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use parking_lot::Mutex;

/// Width of a recent bucket.
const FINE: u64 = 5;
/// Recent buckets are kept this long before they are merged.
const FINE_SPAN: u64 = 30 * 60;
/// Width of an older bucket.
const COARSE: u64 = 5 * 60;
/// Buckets older than this are dropped.
const MAX_AGE: u64 = 6 * 60 * 60;
/// Latencies are recorded in microseconds up to a minute (longer ones count
/// as a minute).
const MAX_LATENCY_US: u64 = 60_000_000;

/// The count, mean and sum of squared deviations of a set of values, and
/// how many of them were neither 0 nor 1. Merged with Chan's formula.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Moments {
    pub count: u64,
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
    /// Values other than 0 and 1 (when 0, the values are proportions).
    pub non_binary: u64,
}

impl Moments {
    /// Adds one value.
    pub fn push(&mut self, x: f64) {
        self.merge(&Moments {
            count: 1,
            mean: x,
            m2: 0.0,
            non_binary: u64::from(x != 0.0 && x != 1.0),
        });
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &Moments) {
        if other.count == 0 {
            return;
        }
        let (n1, n2) = (self.count as f64, other.count as f64);
        let n = n1 + n2;
        let delta = other.mean - self.mean;
        self.mean += delta * n2 / n;
        self.m2 += other.m2 + delta * delta * n1 * n2 / n;
        self.count += other.count;
        self.non_binary += other.non_binary;
    }

    /// The sample variance (n − 1 denominator); 0 below two values.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.m2 / (self.count - 1) as f64
        }
    }

    /// The number of ones, when the values are proportions.
    pub fn successes(&self) -> u64 {
        (self.mean * self.count as f64).round() as u64
    }
}

/// One period of outcomes.
struct Bucket {
    /// Seconds since the Unix epoch, aligned to the bucket's width.
    start: u64,
    /// `FINE` or `COARSE` seconds.
    width: u64,
    requests: u64,
    errors: u64,
    latency_us: Histogram<u32>,
    feedback: Moments,
}

impl Bucket {
    fn new(start: u64) -> Bucket {
        Bucket {
            start,
            width: FINE,
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds"),
            feedback: Moments::default(),
        }
    }

    fn absorb(&mut self, other: &Bucket) {
        self.requests += other.requests;
        self.errors += other.errors;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.latency_us.add(&other.latency_us);
        self.feedback.merge(&other.feedback);
    }
}

/// Everything a version recorded since it was loaded: request and error
/// counts and the latency histogram (microseconds). Two totals subtract to
/// the outcomes of the period between them.
#[derive(Debug, Clone)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub latency_us: Histogram<u64>,
}

impl Default for Totals {
    fn default() -> Self {
        Totals {
            requests: 0,
            errors: 0,
            latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("valid histogram bounds"),
        }
    }
}

impl Totals {
    /// The outcomes recorded after `earlier` (a total of the same window):
    /// (requests, errors, latency histogram). A histogram that cannot be
    /// subtracted (not an earlier total) yields an empty one.
    pub fn since(&self, earlier: &Totals) -> (u64, u64, Histogram<u64>) {
        let mut latency = self.latency_us.clone();
        if latency.subtract(&earlier.latency_us).is_err() {
            latency.reset();
        }
        (
            self.requests.saturating_sub(earlier.requests),
            self.errors.saturating_sub(earlier.errors),
            latency,
        )
    }
}

/// The buckets and the totals, under one lock.
#[derive(Default)]
struct Recorded {
    buckets: VecDeque<Bucket>,
    totals: Totals,
}

/// Recent outcomes and feedback of one version.
#[derive(Default)]
pub struct Window {
    recorded: Mutex<Recorded>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("buckets", &self.recorded.lock().buckets.len())
            .finish()
    }
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
    /// The feedback values' moments, for the A/B statistics.
    #[serde(default)]
    pub feedback: Moments,
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Window {
    /// Records one request: `ok` is false for server-side failures.
    pub fn record(&self, ok: bool, latency: Duration) {
        let us = (latency.as_micros() as u64).clamp(1, MAX_LATENCY_US);
        self.with_current(SystemTime::now(), |b, totals| {
            b.requests += 1;
            b.errors += u64::from(!ok);
            b.latency_us.saturating_record(us);
            totals.requests += 1;
            totals.errors += u64::from(!ok);
            totals.latency_us.saturating_record(us);
        });
    }

    /// Records one feedback value.
    pub fn record_feedback(&self, value: f64) {
        self.with_current(SystemTime::now(), |b, _| b.feedback.push(value));
    }

    /// Everything recorded since the version was loaded (a copy).
    pub fn totals(&self) -> Totals {
        self.recorded.lock().totals.clone()
    }

    /// Applies `f` to the bucket of `now` (opening it, and compacting old
    /// buckets, when it is new) and to the totals.
    fn with_current(&self, now: SystemTime, f: impl FnOnce(&mut Bucket, &mut Totals)) {
        let secs = unix_secs(now);
        let start = secs - secs % FINE;
        let mut guard = self.recorded.lock();
        let recorded = &mut *guard;
        let buckets = &mut recorded.buckets;
        if buckets.back().is_none_or(|b| b.start < start) {
            compact(buckets, secs);
            buckets.push_back(Bucket::new(start));
        }
        // A clock that stepped back records into the newest bucket.
        if let Some(b) = buckets.back_mut() {
            f(b, &mut recorded.totals);
        }
    }

    /// Summarises everything recorded at or after `since` (to 5 s).
    pub fn summary(&self, since: SystemTime) -> Summary {
        let since = unix_secs(since);
        let mut total = Bucket::new(0);
        for b in self.recorded.lock().buckets.iter() {
            if b.start + b.width > since {
                total.absorb(b);
            }
        }
        let pct = |q: f64| -> f64 {
            if total.latency_us.is_empty() {
                0.0
            } else {
                total.latency_us.value_at_quantile(q) as f64 / 1000.0
            }
        };
        Summary {
            requests: total.requests,
            errors: total.errors,
            error_rate: if total.requests == 0 {
                0.0
            } else {
                total.errors as f64 / total.requests as f64
            },
            p50_ms: pct(0.50),
            p95_ms: pct(0.95),
            p99_ms: pct(0.99),
            feedback_count: total.feedback.count,
            feedback_mean: total.feedback.mean,
            feedback: total.feedback,
        }
    }
}

/// Merges fine buckets older than `FINE_SPAN` into coarse ones and drops
/// buckets older than `MAX_AGE` (`now` in Unix seconds).
fn compact(buckets: &mut VecDeque<Bucket>, now: u64) {
    while buckets.front().is_some_and(|b| b.start + MAX_AGE < now) {
        buckets.pop_front();
    }
    let fine_from = now.saturating_sub(FINE_SPAN);
    let mut i = 0;
    while i < buckets.len() && buckets[i].start < fine_from {
        if buckets[i].width == FINE {
            let coarse = buckets[i].start - buckets[i].start % COARSE;
            if i > 0 && buckets[i - 1].start == coarse {
                let b = buckets.remove(i).expect("index in range");
                buckets[i - 1].absorb(&b);
                continue;
            }
            buckets[i].start = coarse;
            buckets[i].width = COARSE;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summarises_a_period() {
        let w = Window::default();
        let before = SystemTime::now() - Duration::from_secs(FINE);
        for i in 1..=100u64 {
            w.record(i % 10 != 0, Duration::from_millis(i));
        }
        w.record_feedback(1.0);
        w.record_feedback(0.0);
        let s = w.summary(before);
        assert_eq!(s.requests, 100);
        assert_eq!(s.errors, 10);
        assert!((s.error_rate - 0.1).abs() < 1e-12);
        // hdrhistogram keeps 2 significant digits
        assert!((s.p50_ms - 50.0).abs() <= 0.5, "{}", s.p50_ms);
        assert!((s.p95_ms - 95.0).abs() <= 1.0, "{}", s.p95_ms);
        assert!((s.p99_ms - 99.0).abs() <= 1.0, "{}", s.p99_ms);
        assert_eq!(s.feedback_count, 2);
        assert_eq!(s.feedback_mean, 0.5);
        assert_eq!(s.feedback.non_binary, 0);
        let later = w.summary(SystemTime::now() + Duration::from_secs(2 * FINE));
        assert_eq!(later.requests, 0);
    }

    #[test]
    fn totals_subtract_to_the_period_between_them() {
        let w = Window::default();
        for i in 1..=10u64 {
            w.record(true, Duration::from_millis(i));
        }
        let earlier = w.totals();
        for _ in 0..20 {
            w.record(true, Duration::from_millis(100));
        }
        w.record(false, Duration::from_millis(100));
        let (requests, errors, latency) = w.totals().since(&earlier);
        assert_eq!((requests, errors), (21, 1));
        assert_eq!(latency.len(), 21);
        // only the later requests (100 ms each) are in the difference
        let p50 = latency.value_at_quantile(0.5) as f64 / 1000.0;
        assert!((p50 - 100.0).abs() <= 1.0, "{p50}");
        assert_eq!(w.totals().requests, 31);
        // a total that is not earlier gives an empty histogram, not a panic
        let (_, _, none) = earlier.since(&w.totals());
        assert!(none.is_empty());
    }

    #[test]
    fn memory_is_bounded_by_buckets_not_requests() {
        let mut buckets = VecDeque::new();
        // two days of one bucket every 5 s, compacted as they come
        let start = 1_000_000_000 - 1_000_000_000 % COARSE;
        for k in 0..(2 * 24 * 3600 / FINE) {
            let t = start + k * FINE;
            compact(&mut buckets, t);
            let mut b = Bucket::new(t);
            b.requests = 1;
            buckets.push_back(b);
        }
        let expected = FINE_SPAN / FINE + (MAX_AGE - FINE_SPAN) / COARSE + 2;
        assert!(buckets.len() as u64 <= expected, "{} buckets", buckets.len());
        let kept: u64 = buckets.iter().map(|b| b.requests).sum();
        // six hours of one request per bucket are still counted
        assert!(kept >= MAX_AGE / FINE, "{kept}");
        assert!(kept <= MAX_AGE / FINE + COARSE / FINE, "{kept}");
    }

    #[test]
    fn moments_merge_like_the_whole() {
        let xs = [1.0, 2.0, 4.0, 7.0, 0.5, 3.25];
        let mut whole = Moments::default();
        xs.iter().for_each(|&x| whole.push(x));
        let (mut a, mut b) = (Moments::default(), Moments::default());
        xs[..2].iter().for_each(|&x| a.push(x));
        xs[2..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        assert_eq!(a.count, 6);
        assert!((a.mean - whole.mean).abs() < 1e-12);
        assert!((a.variance() - whole.variance()).abs() < 1e-12);
        let mean = xs.iter().sum::<f64>() / 6.0;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 5.0;
        assert!((whole.variance() - var).abs() < 1e-12);
        assert_eq!(whole.non_binary, 5);
    }
}
