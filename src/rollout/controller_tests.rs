//! The controller over an in-memory [`MemoryStore`] with real
//! compare-and-swap, a fake [`MetricsSource`] and a fake clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use futures::FutureExt;
use parking_lot::Mutex;

use super::*;
use crate::rollout::analysis::{BoxFuture, MetricsError, ShadowSummary};
use crate::rollout::policy_store::MemoryStore;
use crate::rollout::spec::{AnalysisSpec, Step, Strategy};
use crate::runtime::window::Summary;

/// Metrics that say what the test sets.
#[derive(Default)]
struct FakeMetrics {
    /// (stable, candidate) summaries; `None`: no data.
    summaries: Mutex<Option<(Summary, Summary)>>,
    converged_at: Mutex<Option<f64>>,
    down: AtomicBool,
    /// Runs once, in the middle of the next observation (a concurrent writer).
    meanwhile: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

fn summary(requests: u64, errors: u64) -> Summary {
    Summary {
        requests,
        errors,
        error_rate: errors as f64 / requests.max(1) as f64,
        p50_ms: 1.0,
        p95_ms: 2.0,
        p99_ms: 3.0,
        ..Summary::default()
    }
}

impl FakeMetrics {
    fn check(&self) -> Result<(), MetricsError> {
        if self.down.load(Ordering::SeqCst) {
            Err(MetricsError("connection refused".into()))
        } else {
            Ok(())
        }
    }
}

impl MetricsSource for FakeMetrics {
    fn summary<'a>(
        &'a self,
        _model: &'a str,
        version: u64,
        _since: SystemTime,
    ) -> BoxFuture<'a, Result<Option<Summary>, MetricsError>> {
        let r = self.check().map(|()| {
            self.summaries
                .lock()
                .clone()
                .map(|(s, c)| if version == 1 { s } else { c })
        });
        Box::pin(std::future::ready(r))
    }
    fn shadow<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: u64,
        _: SystemTime,
    ) -> BoxFuture<'a, Result<Option<ShadowSummary>, MetricsError>> {
        Box::pin(std::future::ready(Ok(None)))
    }
    fn breaker_open<'a>(
        &'a self,
        _: &'a str,
        _: u64,
        _: SystemTime,
    ) -> BoxFuture<'a, Result<bool, MetricsError>> {
        let r = self.check().map(|()| false);
        Box::pin(std::future::ready(r))
    }
    fn converged<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<Option<f64>, MetricsError>> {
        if let Some(f) = self.meanwhile.lock().take() {
            f();
        }
        let r = self.check().map(|()| *self.converged_at.lock());
        Box::pin(std::future::ready(r))
    }
}

struct Rig {
    store: Arc<MemoryStore>,
    metrics: Arc<FakeMetrics>,
    now: Arc<Mutex<f64>>,
    controller: Controller,
}

fn rig() -> Rig {
    let store = Arc::new(MemoryStore::default());
    let metrics = Arc::new(FakeMetrics::default());
    let now = Arc::new(Mutex::new(1000.0));
    let clock_now = now.clone();
    let controller = Controller::with_clock(
        Arc::new(Repository::new("/nonexistent")),
        store.clone(),
        metrics.clone(),
        Arc::new(move || *clock_now.lock()),
    );
    Rig {
        store,
        metrics,
        now,
        controller,
    }
}

/// A canary already past validation, stored at version 1.
async fn seeded(rig: &Rig) -> Rollout {
    let spec = RolloutSpec {
        candidate: 2,
        strategy: Strategy::Canary {
            steps: vec![
                Step {
                    weight: crate::policy::Weight::from_bp(1000).unwrap(),
                    bake: Some(Duration::from_secs(5)),
                },
                Step {
                    weight: crate::policy::Weight::FULL,
                    bake: None,
                },
            ],
        },
        analysis: AnalysisSpec {
            interval: Duration::from_secs(1),
            min_requests: 10,
            error_limit: 2,
            ..AnalysisSpec::default()
        },
        skip_validation: true,
    };
    let r = Rollout::new(1, "digits", 1, spec, 1000.0);
    rig.store.save(None, &r, None).await.unwrap();
    r
}

impl Rig {
    fn at(&self, t: f64) {
        *self.now.lock() = t;
    }
    async fn rollout(&self) -> Rollout {
        self.controller.get("digits").await.unwrap().unwrap()
    }
}

#[tokio::test]
async fn a_canary_waits_for_convergence_bakes_and_promotes_on_good_metrics() {
    let rig = rig();
    seeded(&rig).await;
    rig.at(1001.0);
    rig.controller.tick().await;
    let r = rig.rollout().await;
    assert_eq!((r.step, r.revision_converged_at), (0, None), "not converged yet");
    *rig.metrics.converged_at.lock() = Some(1002.0);
    *rig.metrics.summaries.lock() = Some((summary(100, 0), summary(20, 0)));
    rig.at(1002.5);
    rig.controller.tick().await;
    assert_eq!(rig.rollout().await.revision_converged_at, Some(1002.0));
    rig.at(1006.0);
    rig.controller.tick().await;
    assert_eq!(rig.rollout().await.step, 0, "the bake runs 5 s from convergence");
    rig.at(1007.5);
    rig.controller.tick().await;
    let r = rig.rollout().await;
    assert_eq!(r.phase, Phase::Promoted, "{r:?}");
    let events = rig.controller.events("digits").await.unwrap();
    assert!(events.last().unwrap().1.decision.contains("promoted"));
}

#[tokio::test]
async fn a_tick_that_loses_the_compare_and_swap_drops_its_decision() {
    let rig = rig();
    seeded(&rig).await;
    *rig.metrics.converged_at.lock() = Some(1000.5);
    *rig.metrics.summaries.lock() = Some((summary(100, 0), summary(100, 60)));
    // while the tick observes, an operator aborts the rollout elsewhere
    let store = rig.store.clone();
    *rig.metrics.meanwhile.lock() = Some(Box::new(move || {
        let v = store.load("digits").now_or_never().unwrap().unwrap().unwrap();
        let (n, e) = machine::act(&v.rollout, Action::Abort, 1001.0).unwrap();
        store
            .save(Some(&v.version), &n, Some(&e))
            .now_or_never()
            .unwrap()
            .unwrap();
    }));
    rig.at(1001.0);
    let writes = rig.store.writes();
    rig.controller.tick().await;
    assert_eq!(rig.store.writes(), writes + 1, "only the operator's write landed");
    let r = rig.rollout().await;
    assert_eq!(r.phase, Phase::Aborted);
    assert_eq!(r.reason.as_deref(), Some("aborted by an admin"));
    assert_eq!(r.failures, 0, "the tick's failed analysis was not stored over it");
}

#[tokio::test]
async fn unreadable_metrics_hold_the_step_then_abort_and_never_promote() {
    let rig = rig();
    seeded(&rig).await;
    *rig.metrics.converged_at.lock() = Some(1000.0);
    rig.metrics.down.store(true, Ordering::SeqCst);
    rig.at(1010.0);
    rig.controller.tick().await;
    let r = rig.rollout().await;
    assert_eq!((r.phase, r.step, r.metric_errors), (Phase::Progressing, 0, 1));
    rig.at(1011.0);
    rig.controller.tick().await;
    let r = rig.rollout().await;
    assert_eq!(r.phase, Phase::Aborted);
    assert!(r.reason.unwrap().contains("metrics unavailable"));
}

#[tokio::test]
async fn commands_are_compare_and_swap_writes_too() {
    let rig = rig();
    seeded(&rig).await;
    rig.at(1001.0);
    let r = rig.controller.act("digits", Action::Pause).await.unwrap();
    assert_eq!(r.phase, Phase::Paused);
    let stored = rig.store.load("digits").await.unwrap().unwrap();
    assert_eq!(stored.rollout, r);
    assert_eq!(stored.version, "2");
    // a stale writer is refused
    let mut stale = r.clone();
    stale.phase = Phase::Progressing;
    let err = rig.store.save(Some("1"), &stale, None).await.unwrap_err();
    assert!(matches!(err, PolicyStoreError::Conflict(_)));
    assert!(matches!(
        rig.controller.act("digits", Action::Pause).await,
        Err(RolloutError::Conflict(_))
    ));
}
