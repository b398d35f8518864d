//! The state machine walked with a fake clock.

use super::*;
use crate::policy::Weight;
use crate::rollout::analysis::Verdict;
use crate::rollout::spec::{AnalysisSpec, RolloutSpec, Step, Strategy};
use serde_json::Value;

fn canary(weights: &[u32], bake: u64) -> Rollout {
    let spec = RolloutSpec {
        candidate: 2,
        strategy: Strategy::Canary {
            steps: weights
                .iter()
                .map(|&w| Step {
                    weight: Weight::from_bp(w.into()).unwrap(),
                    bake: Some(std::time::Duration::from_secs(bake)),
                })
                .collect(),
        },
        analysis: AnalysisSpec {
            interval: std::time::Duration::from_secs(1),
            failure_limit: 2,
            progress_deadline: std::time::Duration::from_secs(30),
            ..AnalysisSpec::default()
        },
        skip_validation: false,
    };
    Rollout::new(1, "digits", 1, spec, 0.0)
}

fn pass() -> Observation {
    Observation {
        verdict: Some(Verdict::Pass("ok".into())),
        ..Observation::default()
    }
}

fn validated(r: &Rollout) -> Rollout {
    let obs = Observation {
        validation: Some(Ok(Value::Null)),
        ..Observation::default()
    };
    decide(r, &obs, 0.0).0
}

#[test]
fn a_good_canary_walks_its_steps_then_promotes() {
    let r = validated(&canary(&[1000, 5000, 10_000], 5));
    assert_eq!((r.phase, r.weight().bp()), (Phase::Progressing, 1000));
    // not baked yet: holds
    assert!(decide(&r, &pass(), 3.0).1.is_none());
    let (r, e) = decide(&r, &pass(), 5.0);
    let e = e.unwrap();
    assert_eq!((r.step, r.weight().bp()), (1, 5000));
    assert!(e.decision.contains("advanced"), "{}", e.decision);
    let (r, _) = decide(&r, &pass(), 10.0);
    assert_eq!(r.phase, Phase::Promoted, "the 100% step is the promotion");
    assert_eq!(r.policy().stable, 2);
}

#[test]
fn failures_abort_after_the_limit() {
    let r = validated(&canary(&[1000, 10_000], 0));
    let fail = Observation {
        verdict: Some(Verdict::Fail("error rate 0.5 > 0.01".into())),
        ..Observation::default()
    };
    let (r, e) = decide(&r, &fail, 1.0);
    let e = e.unwrap();
    assert_eq!(r.phase, Phase::Progressing);
    assert!(e.decision.contains("1/2"));
    let (r, e) = decide(&r, &fail, 2.0);
    let e = e.unwrap();
    assert_eq!(r.phase, Phase::Aborted);
    assert!(e.decision.contains("error rate"), "{}", e.decision);
    assert_eq!(r.weight().bp(), 0);
    assert!(r.policy().candidate.is_none());
}

#[test]
fn inconclusive_holds_until_the_deadline() {
    let r = validated(&canary(&[1000, 10_000], 0));
    let inc = Observation {
        verdict: Some(Verdict::Inconclusive("3 < 100 requests".into())),
        ..Observation::default()
    };
    let (r, e) = decide(&r, &inc, 1.0);
    let e = e.unwrap();
    assert_eq!((r.phase, r.inconclusive_since), (Phase::Progressing, Some(1.0)));
    assert!(e.decision.contains("inconclusive"));
    let (r, e) = decide(&r, &inc, 20.0);
    assert!(e.is_none(), "still holding, no new event");
    let (r, e) = decide(&r, &inc, 31.0);
    let e = e.unwrap();
    assert_eq!(r.phase, Phase::Aborted);
    assert!(e.decision.contains("progress deadline"), "{}", e.decision);
}

#[test]
fn an_open_breaker_aborts_at_once() {
    let r = validated(&canary(&[1000], 0));
    let obs = Observation {
        breaker_open: true,
        ..pass()
    };
    assert_eq!(decide(&r, &obs, 1.0).0.phase, Phase::Aborted);
}

#[test]
fn manual_actions() {
    let r = validated(&canary(&[1000, 5000, 10_000], 60));
    let (p, _) = act(&r, Action::Pause, 1.0).unwrap();
    assert_eq!(p.phase, Phase::Paused);
    assert!(decide(&p, &pass(), 100.0).1.is_none(), "paused rollouts hold");
    assert_eq!(p.policy(), r.policy(), "pausing keeps the weights");
    let (p, _) = act(&p, Action::Resume, 2.0).unwrap();
    let (p, _) = act(&p, Action::Promote, 3.0).unwrap();
    assert_eq!(p.weight().bp(), 5000);
    let (p, _) = act(&p, Action::Abort, 4.0).unwrap();
    assert_eq!(p.phase, Phase::Aborted);
    assert!(act(&p, Action::Pause, 5.0).is_err());
    let (p, _) = act(&p, Action::Retry, 6.0).unwrap();
    assert_eq!((p.phase, p.step), (Phase::Validating, 0));
    let (p, _) = act(&validated(&p), Action::PromoteFull, 7.0).unwrap();
    assert_eq!(p.phase, Phase::Promoted);
}

#[test]
fn validation_failure_stops_before_traffic() {
    let r = canary(&[1000], 0);
    assert_eq!(r.weight().bp(), 0);
    let obs = Observation {
        validation: Some(Err("accuracy 0.10 < 0.90".into())),
        ..Observation::default()
    };
    let (r, e) = decide(&r, &obs, 0.0);
    let e = e.unwrap();
    assert_eq!(r.phase, Phase::Aborted);
    assert!(e.decision.contains("accuracy"));
}
