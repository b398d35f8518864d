//! The *history* behind the live page's charts: one *sample* per second for
//! each model version (requests/s, error ratio, p50/p95 latency, shadow
//! agreement) over the last 15 minutes.
//!
//! A sampler task calls [`History::sample`] once a second; it reads totals
//! the request path keeps anyway (the version's window totals, the shadow
//! hub's counters) and stores the difference to the previous reading, so
//! the request path does no extra work for the page. Memory is bounded:
//! [`SPAN`] samples per *series* (one model version), at most
//! [`MAX_SERIES`] series; a version that left the repository keeps its
//! series until its samples are older than the span.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::ser::{SerializeTuple, Serializer};
use serde::Serialize;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::repository::Snapshot;
use crate::runtime::window::Totals;
use crate::traffic::shadow::ShadowHub;

/// Samples kept per series: 15 minutes at one a second.
pub const SPAN: usize = 900;
/// Series kept at most (model versions seen in the last 15 minutes).
pub const MAX_SERIES: usize = 256;
/// Live viewers (pushed streams) at once; beyond: refused.
pub const MAX_VIEWERS: usize = 16;

/// One second of one version. Serialised as the array
/// `[at_ms, requests_per_sec, error_ratio, p50_ms, p95_ms, agreement]`
/// (`null` where there was nothing to measure) to keep the page's payload
/// small.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: u64,
    pub requests_per_sec: f64,
    /// Failed requests (server errors, refusals) over requests.
    pub error_ratio: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    /// Shadow comparisons of this version (as the shadow) that agreed with
    /// the primary, over those compared in the period.
    pub agreement: Option<f64>,
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

impl Serialize for Sample {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(6)?;
        t.serialize_element(&self.at_ms)?;
        t.serialize_element(&round(self.requests_per_sec, 3))?;
        t.serialize_element(&self.error_ratio.map(|x| round(x, 5)))?;
        t.serialize_element(&self.p50_ms.map(|x| round(x, 3)))?;
        t.serialize_element(&self.p95_ms.map(|x| round(x, 3)))?;
        t.serialize_element(&self.agreement.map(|x| round(x, 5)))?;
        t.end()
    }
}

/// The samples of one model version, oldest first.
#[derive(Debug, Clone, Serialize)]
pub struct SeriesView {
    pub model: String,
    pub version: u64,
    pub samples: Vec<Sample>,
}

/// One series and the readings its next sample is taken against.
struct Series {
    samples: VecDeque<Sample>,
    /// The runtime the totals came from (a reload starts a new baseline)
    /// and the totals at the previous sample.
    last: Option<(usize, Totals)>,
    /// Shadow (compared, agreed) at the previous sample.
    shadow_last: Option<(u64, u64)>,
    /// When the version was last in the repository (ms since the epoch).
    seen_ms: u64,
}

#[derive(Default)]
struct Inner {
    series: BTreeMap<(String, u64), Series>,
    last_sample: Option<Instant>,
}

/// The per-second history of every loaded version, and the signal that a
/// new sample was taken.
pub struct History {
    inner: Mutex<Inner>,
    ticks: watch::Sender<u64>,
    viewers: Arc<Semaphore>,
}

impl Default for History {
    fn default() -> Self {
        History {
            inner: Mutex::new(Inner::default()),
            ticks: watch::channel(0).0,
            viewers: Arc::new(Semaphore::new(MAX_VIEWERS)),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl History {
    /// Takes one sample of every READY version of `snapshot`, forgets what
    /// is older than the span, and wakes the subscribers.
    pub fn sample(&self, snapshot: &Snapshot, shadow: &ShadowHub) {
        self.sample_at(snapshot, shadow, now_ms(), Instant::now());
        self.ticks.send_modify(|n| *n += 1);
    }

    fn sample_at(&self, snapshot: &Snapshot, shadow: &ShadowHub, at_ms: u64, now: Instant) {
        let mut inner = self.inner.lock();
        let secs = inner
            .last_sample
            .map(|t| now.duration_since(t).as_secs_f64())
            .unwrap_or(1.0)
            .max(0.001);
        inner.last_sample = Some(now);
        for (name, m) in &snapshot.models {
            // (compared, agreed) of each version as a shadow
            let mut shadows: HashMap<u64, (u64, u64)> = HashMap::new();
            for pair in shadow.counters(name) {
                let e = shadows.entry(pair.shadow_version).or_default();
                e.0 += pair.compared;
                e.1 += pair.agreed;
            }
            for (&v, entry) in &m.versions {
                let Some(runtime) = &entry.runtime else { continue };
                let key = (name.clone(), v);
                if !inner.series.contains_key(&key) && inner.series.len() >= MAX_SERIES {
                    continue;
                }
                let series = inner.series.entry(key).or_insert_with(|| Series {
                    samples: VecDeque::with_capacity(SPAN),
                    last: None,
                    shadow_last: None,
                    seen_ms: at_ms,
                });
                series.seen_ms = at_ms;
                let id = Arc::as_ptr(runtime) as usize;
                let totals = runtime.window().totals();
                let shadow_now = shadows.get(&v).copied();
                // a runtime's totals start at zero when it is loaded: a new
                // (or reloaded) version is measured from there
                let zero = Totals::default();
                let last = match &series.last {
                    Some((last_id, last)) if *last_id == id => last,
                    _ => &zero,
                };
                let sample = measure(at_ms, secs, &totals, last, shadow_now, series.shadow_last);
                series.last = Some((id, totals));
                series.shadow_last = shadow_now;
                if series.samples.len() == SPAN {
                    series.samples.pop_front();
                }
                series.samples.push_back(sample);
            }
        }
        let oldest = at_ms.saturating_sub(SPAN as u64 * 1000);
        inner.series.retain(|_, s| {
            while s.samples.front().is_some_and(|x| x.at_ms < oldest) {
                s.samples.pop_front();
            }
            s.seen_ms >= oldest || !s.samples.is_empty()
        });
    }

    /// Every series with its samples taken after `after_ms` (0: all).
    pub fn since(&self, after_ms: u64) -> Vec<SeriesView> {
        let inner = self.inner.lock();
        inner
            .series
            .iter()
            .map(|((model, version), s)| {
                let start = s.samples.partition_point(|x| x.at_ms <= after_ms);
                SeriesView {
                    model: model.clone(),
                    version: *version,
                    samples: s.samples.range(start..).copied().collect(),
                }
            })
            .filter(|s| after_ms == 0 || !s.samples.is_empty())
            .collect()
    }

    /// A receiver that changes after every sample.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.ticks.subscribe()
    }

    /// A place for one live viewer, or `None` when [`MAX_VIEWERS`] are
    /// watching; the place is freed when the permit is dropped.
    pub fn viewer(&self) -> Option<OwnedSemaphorePermit> {
        self.viewers.clone().try_acquire_owned().ok()
    }
}

/// The sample of the period between two readings `secs` apart.
fn measure(
    at_ms: u64,
    secs: f64,
    totals: &Totals,
    last: &Totals,
    shadow_now: Option<(u64, u64)>,
    shadow_last: Option<(u64, u64)>,
) -> Sample {
    let (requests, errors, latency) = totals.since(last);
    let pct = |q: f64| (!latency.is_empty()).then(|| latency.value_at_quantile(q) as f64 / 1000.0);
    let agreement = match (shadow_now, shadow_last.unwrap_or((0, 0))) {
        (Some((c, a)), (c0, a0)) if c > c0 => Some(a.saturating_sub(a0) as f64 / (c - c0) as f64),
        _ => None,
    };
    Sample {
        at_ms,
        requests_per_sec: requests as f64 / secs,
        error_ratio: (requests > 0).then(|| errors as f64 / requests as f64),
        p50_ms: pct(0.5),
        p95_ms: pct(0.95),
        agreement,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_sample_is_the_difference_of_two_readings() {
        let mut last = Totals::default();
        for _ in 0..10 {
            last.requests += 1;
            last.latency_us.record(1_000).unwrap();
        }
        let mut now = last.clone();
        for i in 0..40u64 {
            now.requests += 1;
            now.errors += u64::from(i < 4);
            now.latency_us
                .record(if i < 36 { 10_000 } else { 50_000 })
                .unwrap();
        }
        let s = measure(7, 2.0, &now, &last, Some((30, 27)), Some((10, 10)));
        assert_eq!(s.at_ms, 7);
        assert_eq!(s.requests_per_sec, 20.0);
        assert_eq!(s.error_ratio, Some(0.1));
        let p50 = s.p50_ms.unwrap();
        assert!((p50 - 10.0).abs() < 0.1, "{p50}");
        let p95 = s.p95_ms.unwrap();
        assert!((p95 - 50.0).abs() < 0.5, "{p95}");
        assert_eq!(s.agreement, Some(17.0 / 20.0));
        // a quiet second: a zero rate and nothing else measured
        let quiet = measure(8, 1.0, &now, &now, Some((30, 27)), Some((30, 27)));
        assert_eq!(quiet.requests_per_sec, 0.0);
        assert_eq!(
            (quiet.error_ratio, quiet.p50_ms, quiet.p95_ms, quiet.agreement),
            (None, None, None, None)
        );
        let json = serde_json::to_value(quiet).unwrap();
        assert_eq!(json, serde_json::json!([8, 0.0, null, null, null, null]));
    }

    #[tokio::test]
    async fn series_are_bounded_and_old_samples_are_forgotten() {
        let history = History::default();
        let shadow = ShadowHub::start(1);
        let snapshot = Snapshot::default();
        let start = Instant::now();
        // series of versions that are gone: samples older than the span go
        let mut inner = history.inner.lock();
        for v in 0..3u64 {
            let mut samples = VecDeque::new();
            for t in 0..SPAN as u64 {
                samples.push_back(Sample {
                    at_ms: t * 1000,
                    requests_per_sec: 1.0,
                    error_ratio: None,
                    p50_ms: None,
                    p95_ms: None,
                    agreement: None,
                });
            }
            inner.series.insert(
                ("m".into(), v),
                Series {
                    samples,
                    last: None,
                    shadow_last: None,
                    seen_ms: 0,
                },
            );
        }
        drop(inner);
        history.sample_at(&snapshot, &shadow, 1_000_000, start);
        let left = history.since(0);
        assert_eq!(left.len(), 3);
        // samples at or after 1_000_000 - 900_000 ms remain
        assert_eq!(left[0].samples.len(), 800);
        assert_eq!(left[0].samples[0].at_ms, 100_000);
        assert_eq!(history.since(898_000)[0].samples.len(), 1);
        history.sample_at(&snapshot, &shadow, 2_000_000, start + Duration::from_secs(1));
        assert!(history.since(0).is_empty(), "gone versions' series are dropped");
    }

    #[test]
    fn viewers_are_capped() {
        let history = History::default();
        let permits: Vec<_> = (0..MAX_VIEWERS).map(|_| history.viewer().unwrap()).collect();
        assert!(history.viewer().is_none());
        drop(permits);
        assert!(history.viewer().is_some());
    }
}
