//! The rollout state machine: a pure function of (rollout, observation,
//! now) → next rollout + the event that explains it. Timers are derived
//! from stored timestamps (step started at, inconclusive since), never from
//! in-memory countdowns, so a restarted server resumes exactly.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::analysis::Verdict;
use super::statistics::TestResult;
use super::{RolloutSpec, Step, Strategy};
use crate::runtime::window::Summary;
use crate::traffic::policy::{CandidateSpec, PolicySpec, ShadowSpec};

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Validating,
    Progressing,
    Paused,
    Promoted,
    Aborted,
}

impl Phase {
    /// The name used in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Validating => "validating",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::Aborted => "aborted",
        }
    }

    /// Promoted and Aborted are final.
    pub fn is_final(self) -> bool {
        matches!(self, Phase::Promoted | Phase::Aborted)
    }
}

/// A rollout and everything needed to resume it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub id: i64,
    pub model: String,
    pub stable: u64,
    pub candidate: u64,
    pub spec: RolloutSpec,
    pub phase: Phase,
    pub step: usize,
    /// Seconds since the Unix epoch.
    pub started_at: f64,
    pub step_started_at: f64,
    pub inconclusive_since: Option<f64>,
    pub failures: u32,
    pub last_analysis_at: Option<f64>,
    pub last_analysis: Option<Value>,
    /// Why it was aborted, or how it ended.
    pub reason: Option<String>,
    /// Blue-green: S's metrics before the switch.
    pub baseline: Option<Summary>,
    pub ab_result: Option<Value>,
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: f64,
    pub phase: Phase,
    pub step: usize,
    pub weight: u32,
    pub decision: String,
    pub metrics: Value,
    /// "controller" or "admin".
    pub actor: String,
}

/// What the controller saw at an analysis tick.
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// Comparison of C against S (or the blue-green baseline).
    pub verdict: Option<Verdict>,
    pub breaker_open: bool,
    /// Pre-deployment validation result, in the Validating phase.
    pub validation: Option<Result<Value, String>>,
    /// Shadow: (comparisons, agreement, shadow errors).
    pub shadow: Option<(u64, f64, u64)>,
    /// A/B: the statistical comparison of feedback, when computable.
    pub ab: Option<TestResult>,
    /// S's summary now (blue-green baseline at the switch).
    pub stable_summary: Option<Summary>,
}

/// A manual action from the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Promote,
    PromoteFull,
    Pause,
    Resume,
    Abort,
    Retry,
}

impl Action {
    /// Parses the path segment.
    pub fn parse(s: &str) -> Option<Action> {
        Some(match s {
            "promote" => Action::Promote,
            "promote-full" => Action::PromoteFull,
            "pause" => Action::Pause,
            "resume" => Action::Resume,
            "abort" => Action::Abort,
            "retry" => Action::Retry,
            _ => return None,
        })
    }
}

/// The stages of a strategy, as canary-like steps: (weight, bake, kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Candidate at a weight.
    Weight(u32),
    /// Blue-green preview: 0% traffic, reachable by the `preview` label.
    Preview,
    /// Blue-green after the switch: all traffic on C, S kept warm.
    Switched,
    /// Mirrored traffic only.
    Shadow,
    /// Fixed split.
    Split(u32),
}

impl Rollout {
    /// A new rollout of `spec` from `stable`, starting at `now`.
    pub fn new(id: i64, model: &str, stable: u64, spec: RolloutSpec, now: f64) -> Rollout {
        let phase = if spec.skip_validation {
            Phase::Progressing
        } else {
            Phase::Validating
        };
        Rollout {
            id,
            model: model.to_string(),
            stable,
            candidate: spec.candidate,
            spec,
            phase,
            step: 0,
            started_at: now,
            step_started_at: now,
            inconclusive_since: None,
            failures: 0,
            last_analysis_at: None,
            last_analysis: None,
            reason: None,
            baseline: None,
            ab_result: None,
        }
    }

    fn steps(&self) -> Vec<(Stage, Option<std::time::Duration>)> {
        match &self.spec.strategy {
            Strategy::Canary { steps } => steps.iter().map(weight_stage).collect(),
            Strategy::BlueGreen { observe } => {
                vec![(Stage::Preview, None), (Stage::Switched, Some(*observe))]
            }
            Strategy::Shadow { then_canary, .. } => std::iter::once((Stage::Shadow, None))
                .chain(then_canary.iter().map(weight_stage))
                .collect(),
            Strategy::AbTest { split, duration, .. } => vec![(Stage::Split(*split), *duration)],
        }
    }

    /// The stage of the current step.
    pub fn stage(&self) -> Stage {
        let steps = self.steps();
        steps[self.step.min(steps.len() - 1)].0
    }

    /// The candidate weight in force (basis points).
    pub fn weight(&self) -> u32 {
        match self.phase {
            Phase::Validating | Phase::Aborted => 0,
            Phase::Promoted => 10_000,
            _ => match self.stage() {
                Stage::Weight(w) | Stage::Split(w) => w,
                Stage::Switched => 10_000,
                Stage::Preview | Stage::Shadow => 0,
            },
        }
    }

    /// The traffic policy this rollout implies now.
    pub fn policy(&self) -> PolicySpec {
        let salt = format!("rollout-{}", self.id);
        let mut p = PolicySpec::pinned(self.stable);
        p.salt = salt;
        match self.phase {
            Phase::Validating | Phase::Aborted => p,
            Phase::Promoted => {
                p.stable = self.candidate;
                p
            }
            Phase::Progressing | Phase::Paused => {
                match self.stage() {
                    Stage::Weight(w) | Stage::Split(w) => {
                        p.candidate = Some(CandidateSpec {
                            version: self.candidate,
                            weight: w,
                        })
                    }
                    Stage::Preview => p.preview = Some(self.candidate),
                    Stage::Switched => p.stable = self.candidate,
                    Stage::Shadow => {
                        let rate = match &self.spec.strategy {
                            Strategy::Shadow { rate, .. } => *rate,
                            _ => 1.0,
                        };
                        p.shadow = Some(ShadowSpec {
                            version: self.candidate,
                            rate,
                        })
                    }
                }
                p
            }
        }
    }

    fn event(&self, at: f64, decision: String, metrics: Value, actor: &str) -> Event {
        Event {
            at,
            phase: self.phase,
            step: self.step,
            weight: self.weight(),
            decision,
            metrics,
            actor: actor.to_string(),
        }
    }

    fn enter_step(&mut self, step: usize, now: f64) {
        self.step = step;
        self.step_started_at = now;
        self.inconclusive_since = None;
        self.failures = 0;
    }

    fn abort(&mut self, reason: String) {
        self.phase = Phase::Aborted;
        self.reason = Some(reason);
    }

    /// Aborts with `reason` and returns the controller's event for it.
    fn abort_event(&mut self, reason: String, now: f64, metrics: Value) -> Event {
        let decision = format!("aborted: {reason}");
        self.abort(reason);
        self.event(now, decision, metrics, "controller")
    }

    /// Moves to the next step, or promotes after the last one. A step at
    /// 100% is the promotion itself.
    fn advance(&mut self, now: f64) -> String {
        let steps = self.steps();
        let next = self.step + 1;
        if next >= steps.len() || matches!(steps[next].0, Stage::Weight(10_000)) {
            self.phase = Phase::Promoted;
            self.reason = Some("all steps passed".into());
            return format!("promoted: version {} is stable", self.candidate);
        }
        self.enter_step(next, now);
        format!("advanced to step {next} ({:?})", steps[next].0)
    }
}

fn weight_stage(s: &Step) -> (Stage, Option<std::time::Duration>) {
    (Stage::Weight(s.weight), s.bake)
}

/// Whether an analysis is due at `now`.
pub fn analysis_due(r: &Rollout, now: f64) -> bool {
    !r.phase.is_final()
        && r.phase != Phase::Paused
        && (r.phase == Phase::Validating
            || r.last_analysis_at
                .is_none_or(|t| now - t >= r.spec.analysis.interval.as_secs_f64()))
}

/// The controller's decision at an analysis tick: the next state (always;
/// it records the analysis time) and the event, when something changed.
pub fn decide(r: &Rollout, obs: &Observation, now: f64) -> (Rollout, Option<Event>) {
    let mut n = r.clone();
    n.last_analysis_at = Some(now);
    let metrics = json!({
        "verdict": obs.verdict,
        "shadow": obs.shadow.map(|(c, a, e)| json!({"compared": c, "agreement": a, "errors": e})),
        "ab": obs.ab,
    });
    n.last_analysis = Some(metrics.clone());
    match r.phase {
        Phase::Promoted | Phase::Aborted | Phase::Paused => return (r.clone(), None),
        Phase::Validating => {
            let Some(v) = obs.validation.as_ref() else {
                return (n, None);
            };
            return match v {
                Ok(report) => {
                    n.phase = Phase::Progressing;
                    n.enter_step(0, now);
                    let e = n.event(now, "validation passed".into(), report.clone(), "controller");
                    (n, Some(e))
                }
                Err(report) => {
                    n.abort(format!("validation failed: {report}"));
                    let e = n.event(
                        now,
                        format!("aborted: validation failed: {report}"),
                        metrics,
                        "controller",
                    );
                    (n, Some(e))
                }
            };
        }
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
    let steps = r.steps();
    let (stage, bake) = steps[r.step.min(steps.len() - 1)];
    let baked = now - r.step_started_at >= bake.map(|b| b.as_secs_f64()).unwrap_or(0.0);
    match stage {
        Stage::Preview => {
            // smoke test = validation already ran on samples.json; switch now
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
        Stage::Shadow => {
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
                return hold_inconclusive(
                    n,
                    r,
                    now,
                    metrics,
                    format!("{compared} of {min_samples} shadow comparisons"),
                );
            }
            let error_rate = errors as f64 / (compared + errors).max(1) as f64;
            let limit = r.spec.analysis.max_error_rate_delta;
            if agreement < min_agreement || error_rate > limit {
                let e = n.abort_event(format!(
                    "shadow verdict failed: agreement {agreement:.4} (min {min_agreement}), shadow error rate {error_rate:.4} (max {limit})"
                ), now, metrics);
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
        Stage::Split(_) => {
            let (min_samples, alpha, auto_promote) = match &r.spec.strategy {
                Strategy::AbTest {
                    min_samples,
                    alpha,
                    auto_promote,
                    ..
                } => (*min_samples, *alpha, *auto_promote),
                _ => (0, 0.05, false),
            };
            let Some(ab) = &obs.ab else {
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
        Stage::Weight(_) | Stage::Switched => {
            let Some(verdict) = obs.verdict.clone() else {
                return (n, None);
            };
            match verdict {
                Verdict::Inconclusive(why) => hold_inconclusive(n, r, now, metrics, why),
                Verdict::Fail(why) => {
                    n.failures += 1;
                    n.inconclusive_since = None;
                    if n.failures >= r.spec.analysis.failure_limit {
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
                    } else {
                        let e = n.event(
                            now,
                            format!(
                                "analysis failed ({}/{}): {why}",
                                n.failures, r.spec.analysis.failure_limit
                            ),
                            metrics,
                            "controller",
                        );
                        (n, Some(e))
                    }
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
    }
}

fn hold_inconclusive(
    mut n: Rollout,
    r: &Rollout,
    now: f64,
    metrics: Value,
    why: String,
) -> (Rollout, Option<Event>) {
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

/// Applies a manual action.
pub fn act(r: &Rollout, action: Action, now: f64) -> Result<(Rollout, Event), String> {
    let mut n = r.clone();
    let decision = match (action, r.phase) {
        (Action::Retry, Phase::Aborted) => {
            n.phase = if r.spec.skip_validation {
                Phase::Progressing
            } else {
                Phase::Validating
            };
            n.reason = None;
            n.started_at = now;
            n.last_analysis_at = None;
            n.enter_step(0, now);
            "retried from the first step".to_string()
        }
        (Action::Retry, _) => return Err("only an aborted rollout can be retried".into()),
        (_, p) if p.is_final() => return Err(format!("the rollout is already {p:?}")),
        (Action::Pause, Phase::Progressing) => {
            n.phase = Phase::Paused;
            "paused".into()
        }
        (Action::Pause, _) => return Err("only a progressing rollout can be paused".into()),
        (Action::Resume, Phase::Paused) => {
            n.phase = Phase::Progressing;
            n.last_analysis_at = None;
            "resumed".into()
        }
        (Action::Resume, _) => return Err("only a paused rollout can be resumed".into()),
        (Action::Abort, _) => {
            n.abort("aborted by an admin".into());
            "aborted by an admin".into()
        }
        (Action::PromoteFull, _) => {
            n.phase = Phase::Promoted;
            n.reason = Some("promoted in full by an admin".into());
            format!("promoted in full: version {} is stable", r.candidate)
        }
        (Action::Promote, Phase::Validating) => return Err("the rollout is still validating".into()),
        (Action::Promote, _) => {
            n.phase = Phase::Progressing;
            n.advance(now)
        }
    };
    let e = n.event(now, decision, Value::Null, "admin");
    Ok((n, e))
}

#[cfg(test)]
mod tests {
    use super::super::AnalysisSpec;
    use super::*;

    fn canary(weights: &[u32], bake: u64) -> Rollout {
        let spec = RolloutSpec {
            candidate: 2,
            strategy: Strategy::Canary {
                steps: weights
                    .iter()
                    .map(|&w| Step {
                        weight: w,
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
        assert_eq!((r.phase, r.weight()), (Phase::Progressing, 1000));
        // not baked yet: holds
        assert!(decide(&r, &pass(), 3.0).1.is_none());
        let (r, e) = decide(&r, &pass(), 5.0);
        let e = e.unwrap();
        assert_eq!((r.step, r.weight()), (1, 5000));
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
        assert_eq!(r.weight(), 0);
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
        assert_eq!(p.weight(), 5000);
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
        assert_eq!(r.weight(), 0);
        let obs = Observation {
            validation: Some(Err("accuracy 0.10 < 0.90".into())),
            ..Observation::default()
        };
        let (r, e) = decide(&r, &obs, 0.0);
        let e = e.unwrap();
        assert_eq!(r.phase, Phase::Aborted);
        assert!(e.decision.contains("accuracy"));
    }
}
