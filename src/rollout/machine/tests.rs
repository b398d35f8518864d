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

/// What a replica set that applied every policy at once reports.
fn converged() -> Observation {
    Observation {
        converged_at: Some(0.0),
        ..Observation::default()
    }
}

fn pass() -> Observation {
    Observation {
        verdict: Some(Verdict::Pass("ok".into())),
        ..converged()
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
        ..converged()
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
        ..converged()
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

#[test]
fn a_step_waits_for_the_fleet_to_converge_and_bakes_from_then() {
    let r = validated(&canary(&[1000, 5000, 10_000], 5));
    assert_eq!(
        r.revision, 2,
        "passing validation put the candidate in the policy"
    );
    assert_eq!(r.revision_converged_at, None);
    // not converged: a passing verdict counts for nothing, even past the bake
    let waiting = Observation {
        verdict: Some(Verdict::Pass("ok".into())),
        ..Observation::default()
    };
    let (r, e) = decide(&r, &waiting, 10.0);
    assert!(e.is_none());
    assert_eq!((r.step, r.revision_converged_at), (0, None));
    // converged at 8: the 5 s bake runs from 8, not from the step's start
    let at_8 = Observation {
        converged_at: Some(8.0),
        ..pass()
    };
    let (r, e) = decide(&r, &at_8, 8.0);
    assert!(e.is_none());
    assert_eq!(r.revision_converged_at, Some(8.0));
    let later = Observation {
        verdict: Some(Verdict::Pass("ok".into())),
        ..Observation::default()
    };
    assert!(decide(&r, &later, 12.0).1.is_none(), "baked 4 of 5 s");
    let (r, e) = decide(&r, &later, 13.0);
    assert!(e.unwrap().decision.contains("advanced"));
    assert_eq!((r.step, r.revision, r.revision_converged_at), (1, 3, None));
    // a fleet that never converges aborts at the progress deadline
    let (r, e) = decide(&r, &Observation::default(), 13.0 + 30.0);
    assert_eq!(r.phase, Phase::Aborted);
    assert!(e.unwrap().decision.contains("converge"));
}

#[test]
fn unreadable_metrics_hold_then_abort_at_the_error_limit() {
    let mut r = validated(&canary(&[1000, 10_000], 0));
    r.spec.analysis.error_limit = 3;
    let down = Observation {
        metrics_error: Some("Prometheus at http://p: connection refused".into()),
        ..Observation::default()
    };
    let (r, e) = decide(&r, &down, 1.0);
    assert_eq!((r.phase, r.metric_errors), (Phase::Progressing, 1));
    assert!(e.unwrap().decision.contains("metrics unavailable (1/3)"));
    let (r, _) = decide(&r, &down, 2.0);
    assert_eq!(r.metric_errors, 2);
    // readable again: the count starts over (and no promotion on that alone)
    let (r, _) = decide(
        &r,
        &Observation {
            verdict: Some(Verdict::Inconclusive("no data".into())),
            ..converged()
        },
        3.0,
    );
    assert_eq!((r.phase, r.metric_errors), (Phase::Progressing, 0));
    let (r, _) = decide(&r, &down, 4.0);
    let (r, _) = decide(&r, &down, 5.0);
    let (r, e) = decide(&r, &down, 6.0);
    assert_eq!(r.phase, Phase::Aborted);
    assert!(e.unwrap().decision.contains("metrics unavailable 3 times"));
}

#[test]
fn every_policy_change_raises_the_revision_and_nothing_else_does() {
    let r = canary(&[1000, 5000, 10_000], 60);
    assert_eq!(r.revision, 1);
    let r = validated(&r);
    assert_eq!(r.revision, 2);
    let (p, _) = act(&r, Action::Pause, 1.0).unwrap();
    assert_eq!(p.revision, 2, "pausing keeps the policy");
    let (p, _) = act(&p, Action::Promote, 2.0).unwrap();
    assert_eq!((p.revision, p.revision_converged_at), (3, None));
    let (p, _) = act(&p, Action::Abort, 3.0).unwrap();
    assert_eq!(p.revision, 4);
    let (p, _) = act(&p, Action::Retry, 4.0).unwrap();
    assert_eq!(
        p.revision, 4,
        "retrying keeps all traffic on stable until validation passes"
    );
}
