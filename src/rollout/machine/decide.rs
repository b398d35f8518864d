//! The controller's decision at an analysis tick, one function per stage:
//! validation, blue-green's preview, shadow, A/B split, and the weighted
//! stages (canary steps, blue-green after the switch) that compare C with S.
//! Before any stage: an open breaker aborts, unreadable metrics hold (then
//! abort after `error_limit` in a row), and a step whose policy revision the
//! fleet has not converged on yet waits (its bake has not started).

use serde_json::{json, Value};

use super::state::{settle, Event, Observation, Phase, Rollout, Stage};
use crate::rollout::analysis::Verdict;
use crate::rollout::spec::Strategy;
use crate::rollout::statistics::TestResult;

/// What a stage decides: the next state and the event that explains it,
/// when something changed.
type Decision = (Rollout, Option<Event>);

/// The controller's decision at an analysis tick: the next state (always;
/// it records the analysis time) and the event, when something changed.
pub fn decide(r: &Rollout, obs: &Observation, now: f64) -> Decision {
    let (n, e) = decide_stage(r, obs, now);
    (settle(r, n), e)
}

fn decide_stage(r: &Rollout, obs: &Observation, now: f64) -> Decision {
    let mut n = r.clone();
    n.last_analysis_at = Some(now);
    let metrics = json!({
        "verdict": obs.verdict,
        "measures": obs.measures,
        "shadow": obs.shadow.map(|(c, a, e)| json!({"compared": c, "agreement": a, "errors": e})),
        "ab": obs.ab,
    });
    n.last_analysis = Some(metrics.clone());
    match r.phase {
        Phase::Promoted | Phase::Aborted | Phase::Paused => return (r.clone(), None),
        Phase::Validating => return validating(n, obs, now, metrics),
        Phase::Progressing => {}
    }
    if obs.breaker_open {
        let e = n.abort_event(
            format!("circuit breaker open on candidate version {}", r.candidate),
            now,
            metrics,
        );
        return (n, Some(e));
    }
    if let Some(error) = &obs.metrics_error {
        return metrics_unavailable(n, r, now, metrics, error);
    }
    n.metric_errors = 0;
    if r.revision_converged_at.is_none() {
        match obs.converged_at {
            Some(t) => n.revision_converged_at = Some(t),
            None => return wait_for_convergence(n, r, now, metrics),
        }
    }
    let steps = r.steps();
    let (stage, bake) = steps[r.step.min(steps.len() - 1)];
    let baked = now - n.window_start() >= bake.map(|b| b.as_secs_f64()).unwrap_or(0.0);
    match stage {
        Stage::Preview => preview(n, r, obs, now),
        Stage::Shadow => shadow(n, r, obs, now, metrics),
        Stage::Split(_) => split(n, r, obs.ab.as_ref(), baked, now, metrics),
        Stage::Weight(_) | Stage::Switched => compare(n, r, stage, obs.verdict.clone(), baked, now, metrics),
    }
}

/// The metrics could not be read: hold the step (never promote on missing
/// data); abort once `error_limit` analyses in a row failed this way.
fn metrics_unavailable(mut n: Rollout, r: &Rollout, now: f64, metrics: Value, error: &str) -> Decision {
    n.metric_errors = r.metric_errors + 1;
    let limit = r.spec.analysis.error_limit;
    if n.metric_errors >= limit {
        let e = n.abort_event(
            format!("metrics unavailable {} times in a row: {error}", n.metric_errors),
            now,
            metrics,
        );
        return (n, Some(e));
    }
    let decision = format!(
        "metrics unavailable ({}/{limit}), holding the step: {error}",
        n.metric_errors
    );
    let e = n.event(now, decision, metrics, "controller");
    (n, Some(e))
}

/// The fleet has not converged on the step's policy revision yet: the bake
/// has not started. Abort if that lasts past `progress_deadline`.
fn wait_for_convergence(mut n: Rollout, r: &Rollout, now: f64, metrics: Value) -> Decision {
    let deadline = r.spec.analysis.progress_deadline.as_secs_f64();
    if now - r.step_started_at >= deadline {
        let e = n.abort_event(
            format!(
                "the serving replicas did not converge on policy revision {} within the progress deadline of {}s",
                r.revision, deadline as u64
            ),
            now,
            metrics,
        );
        return (n, Some(e));
    }
    (n, None)
}

/// Validating: wait for the validation report; pass → the first step.
fn validating(mut n: Rollout, obs: &Observation, now: f64, metrics: Value) -> Decision {
    let Some(v) = obs.validation.as_ref() else {
        return (n, None);
    };
    match v {
        Ok(report) => {
            n.phase = Phase::Progressing;
            n.enter_step(0, now);
            let e = n.event(now, "validation passed".into(), report.clone(), "controller");
            (n, Some(e))
        }
        Err(report) => {
            let e = n.abort_event(format!("validation failed: {report}"), now, metrics);
            (n, Some(e))
        }
    }
}

/// Blue-green preview: the smoke test is the validation that already ran on
/// samples.json; record S's baseline and switch in one swap.
fn preview(mut n: Rollout, r: &Rollout, obs: &Observation, now: f64) -> Decision {
    n.baseline = obs.stable_summary.clone();
    n.enter_step(r.step + 1, now);
    let e = n.event(
        now,
        format!("switched: all traffic on version {} (one swap)", r.candidate),
        json!({"baseline": obs.stable_summary}),
        "controller",
    );
    (n, Some(e))
}

/// Shadow: pass on `min_agreement` over `min_samples` comparisons with a
/// shadow error rate within the analysis delta; then the next step.
fn shadow(mut n: Rollout, r: &Rollout, obs: &Observation, now: f64, metrics: Value) -> Decision {
    let (min_agreement, min_samples) = match &r.spec.strategy {
        Strategy::Shadow {
            min_agreement,
            min_samples,
            ..
        } => (*min_agreement, *min_samples),
        _ => (0.0, 0),
    };
    let (compared, agreement, errors) = obs.shadow.unwrap_or((0, 1.0, 0));
    if compared < min_samples {
        let why = format!("{compared} of {min_samples} shadow comparisons");
        return hold_inconclusive(n, r, now, metrics, why);
    }
    let error_rate = errors as f64 / (compared + errors).max(1) as f64;
    let limit = r.spec.analysis.max_error_rate_delta;
    if agreement < min_agreement || error_rate > limit {
        let reason = format!(
            "shadow verdict failed: agreement {agreement:.4} (min {min_agreement}), shadow error rate {error_rate:.4} (max {limit})"
        );
        let e = n.abort_event(reason, now, metrics);
        return (n, Some(e));
    }
    let decision = n.advance(now);
    let e = n.event(
        now,
        format!("shadow verdict passed: agreement {agreement:.4} over {compared}; {decision}"),
        metrics,
        "controller",
    );
    (n, Some(e))
}

/// A/B split: collect `min_samples` per arm for at least the duration, then
/// conclude: promote a significant winner (with `auto_promote`), else end
/// the test with the recommendation.
fn split(
    mut n: Rollout,
    r: &Rollout,
    ab: Option<&TestResult>,
    baked: bool,
    now: f64,
    metrics: Value,
) -> Decision {
    let (min_samples, alpha, auto_promote) = match &r.spec.strategy {
        Strategy::AbTest {
            min_samples,
            alpha,
            auto_promote,
            ..
        } => (*min_samples, *alpha, *auto_promote),
        _ => (0, 0.05, false),
    };
    let Some(ab) = ab else {
        return hold_inconclusive(n, r, now, metrics, "no feedback yet".into());
    };
    let enough = ab.n_stable as u64 >= min_samples && ab.n_candidate as u64 >= min_samples;
    if !enough || !baked {
        n.ab_result = Some(json!({"result": ab, "status": "collecting samples"}));
        return (n, None);
    }
    let significant = ab.p_value < alpha;
    let winner = if !significant {
        "no significant difference".to_string()
    } else if ab.difference > 0.0 {
        format!("version {} (candidate)", r.candidate)
    } else {
        format!("version {} (stable)", r.stable)
    };
    let recommendation = if significant && ab.difference > 0.0 {
        "promote the candidate"
    } else if significant {
        "keep the stable version"
    } else {
        "keep the stable version; collect more data for a smaller effect"
    };
    let result = json!({
        "result": ab, "alpha": alpha, "significant": significant,
        "winner": winner, "recommendation": recommendation,
    });
    n.ab_result = Some(result.clone());
    if significant && ab.difference > 0.0 && auto_promote {
        n.phase = Phase::Promoted;
        n.reason = Some(format!("a/b test: {winner} won (p = {:.4})", ab.p_value));
    } else {
        n.phase = Phase::Aborted;
        n.reason = Some(format!("a/b test concluded: {winner}; {recommendation}"));
    }
    let e = n.event(now, n.reason.clone().unwrap_or_default(), result, "controller");
    (n, Some(e))
}

/// A weighted stage (a canary step, or blue-green after the switch): the
/// analysis verdict passes (advance once baked), fails (abort after
/// `failure_limit` in a row) or is inconclusive (hold until the deadline).
fn compare(
    mut n: Rollout,
    r: &Rollout,
    stage: Stage,
    verdict: Option<Verdict>,
    baked: bool,
    now: f64,
    metrics: Value,
) -> Decision {
    let Some(verdict) = verdict else {
        return (n, None);
    };
    match verdict {
        Verdict::Inconclusive(why) => hold_inconclusive(n, r, now, metrics, why),
        Verdict::Fail(why) => {
            n.failures += 1;
            n.inconclusive_since = None;
            let limit = r.spec.analysis.failure_limit;
            if n.failures < limit {
                let decision = format!("analysis failed ({}/{limit}): {why}", n.failures);
                let e = n.event(now, decision, metrics, "controller");
                return (n, Some(e));
            }
            let reason = if stage == Stage::Switched {
                format!(
                    "post-switch check failed: {why}; switched back to version {}",
                    r.stable
                )
            } else {
                format!("analysis failed {} times: {why}", n.failures)
            };
            let e = n.abort_event(reason, now, metrics);
            (n, Some(e))
        }
        Verdict::Pass(summary) => {
            n.failures = 0;
            n.inconclusive_since = None;
            if !baked {
                return (n, None);
            }
            let decision = n.advance(now);
            let e = n.event(
                now,
                format!("analysis passed ({summary}); {decision}"),
                metrics,
                "controller",
            );
            (n, Some(e))
        }
    }
}

/// Holds the step while the data is inconclusive; aborts once
/// `progress_deadline` passed since it first was.
fn hold_inconclusive(mut n: Rollout, r: &Rollout, now: f64, metrics: Value, why: String) -> Decision {
    let since = r.inconclusive_since.unwrap_or(now);
    n.inconclusive_since = Some(since);
    let deadline = r.spec.analysis.progress_deadline.as_secs_f64();
    if now - since >= deadline {
        let e = n.abort_event(
            format!(
                "progress deadline of {}s passed while inconclusive: {why}",
                deadline as u64
            ),
            now,
            metrics,
        );
        return (n, Some(e));
    }
    if r.inconclusive_since.is_none() {
        let e = n.event(
            now,
            format!("inconclusive, holding the step: {why}"),
            metrics,
            "controller",
        );
        return (n, Some(e));
    }
    (n, None)
}
