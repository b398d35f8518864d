//! A *rollout* is a stored record: its spec, where it is (phase, step) and
//! the timestamps every timer derives from. Its *stages* are the steps of
//! its strategy seen as canary-like steps; its *policy* is the traffic
//! policy it implies now. An *event* explains one change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::collections::BTreeMap;

use crate::policy::{CandidateSpec, PinMode, PolicySpec, ShadowSpec, Weight, POLICY_LABELS};
use crate::rollout::analysis::{Measures, Verdict};
use crate::rollout::spec::{RolloutSpec, Step, Strategy};
use crate::rollout::statistics::TestResult;
use crate::runtime::window::Summary;

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
    /// The revision of the policy this rollout implies: bumped by every
    /// transition that changes the policy, never lowered.
    #[serde(default)]
    pub revision: u64,
    /// When every serving replica was first seen holding `revision`; the
    /// bake and the analysis window of the step start here, so traffic
    /// routed by the previous policy never counts. `None` while waiting.
    #[serde(default)]
    pub revision_converged_at: Option<f64>,
    /// Analyses in a row whose metrics could not be read.
    #[serde(default)]
    pub metric_errors: u32,
    /// The sticky-hash salt of this rollout's policies (`rollout-{id}`
    /// when empty, as rollouts stored before salts were explicit).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub salt: String,
    /// What the model's policy held when the rollout started that the
    /// rollout keeps in every policy it installs.
    #[serde(default, skip_serializing_if = "Kept::is_empty")]
    pub kept: Kept,
}

/// The parts of a model's policy a rollout keeps: the allow-list (its
/// users get the rollout's candidate while one is routed) and the pin
/// mode, user labels, and a shadow of a version the rollout does not move.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kept {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_list: Vec<String>,
    #[serde(default)]
    pub pins: PinMode,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
}

impl Kept {
    /// What a rollout from `stable` to `candidate` keeps of `policy`.
    pub fn of(policy: &PolicySpec, stable: u64, candidate: u64) -> Kept {
        Kept {
            allow_list: policy.allow_list.clone(),
            pins: policy.pins,
            labels: policy
                .labels
                .iter()
                .filter(|(name, _)| !POLICY_LABELS.contains(&name.as_str()))
                .map(|(name, &v)| (name.clone(), v))
                .collect(),
            shadow: policy
                .shadow
                .clone()
                .filter(|s| s.version != stable && s.version != candidate),
        }
    }

    /// True when there is nothing to keep.
    pub fn is_empty(&self) -> bool {
        *self == Kept::default()
    }
}

/// One entry of the audit log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: f64,
    pub phase: Phase,
    pub step: usize,
    /// The candidate's share after this event.
    pub weight: Weight,
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
    /// The numbers behind the verdict, next to their thresholds.
    pub measures: Option<Measures>,
    pub breaker_open: bool,
    /// Pre-deployment validation result, in the Validating phase.
    pub validation: Option<Result<Value, String>>,
    /// Shadow: (comparisons, agreement, shadow errors).
    pub shadow: Option<(u64, f64, u64)>,
    /// A/B: the statistical comparison of feedback, when computable.
    pub ab: Option<TestResult>,
    /// S's summary now (blue-green baseline at the switch).
    pub stable_summary: Option<Summary>,
    /// Since when every serving replica holds the rollout's policy
    /// revision (seconds since the Unix epoch); `None`: not yet.
    pub converged_at: Option<f64>,
    /// The metrics could not be read (the source is down or erred).
    pub metrics_error: Option<String>,
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
    Weight(Weight),
    /// Blue-green preview: 0% traffic, reachable by the `preview` label.
    Preview,
    /// Blue-green after the switch: all traffic on C, S kept warm.
    Switched,
    /// Mirrored traffic only.
    Shadow,
    /// Fixed split.
    Split(Weight),
}

impl Stage {
    /// How the stage reads in events: `10%`, `preview`, `switched`, `shadow`,
    /// `split 50%`.
    pub fn describe(self) -> String {
        match self {
            Stage::Weight(w) => w.to_string(),
            Stage::Preview => "preview at 0%".into(),
            Stage::Switched => "switched to 100%".into(),
            Stage::Shadow => "shadow".into(),
            Stage::Split(w) => format!("split {w}"),
        }
    }
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
            revision: 1,
            revision_converged_at: None,
            metric_errors: 0,
            salt: String::new(),
            kept: Kept::default(),
        }
    }

    /// The sticky-hash salt of this rollout's policies.
    pub fn salt(&self) -> String {
        if self.salt.is_empty() {
            format!("rollout-{}", self.id)
        } else {
            self.salt.clone()
        }
    }

    /// When the current step's bake and analysis window start: when the
    /// fleet converged on its policy, never before the step began.
    pub fn window_start(&self) -> f64 {
        self.revision_converged_at
            .map_or(self.step_started_at, |t| t.max(self.step_started_at))
    }

    /// Every stage of the strategy with its bake (how long it is held).
    pub fn steps(&self) -> Vec<(Stage, Option<std::time::Duration>)> {
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

    /// How many steps the strategy has.
    pub fn step_count(&self) -> usize {
        self.steps().len()
    }

    /// Seconds left in the current step's bake at `now` (0 when baked),
    /// while progressing or paused; `None` for a step without a bake.
    pub fn bake_left(&self, now: f64) -> Option<f64> {
        if !matches!(self.phase, Phase::Progressing | Phase::Paused) {
            return None;
        }
        let steps = self.steps();
        let bake = steps[self.step.min(steps.len() - 1)].1?;
        Some((bake.as_secs_f64() - (now - self.step_started_at)).max(0.0))
    }

    /// The candidate's share of traffic in force.
    pub fn weight(&self) -> Weight {
        match self.phase {
            Phase::Validating | Phase::Aborted => Weight::ZERO,
            Phase::Promoted => Weight::FULL,
            _ => match self.stage() {
                Stage::Weight(w) | Stage::Split(w) => w,
                Stage::Switched => Weight::FULL,
                Stage::Preview | Stage::Shadow => Weight::ZERO,
            },
        }
    }

    /// The traffic policy this rollout implies now.
    pub fn policy(&self) -> PolicySpec {
        let mut p = self.own_policy();
        // the allow-list takes the candidate: only while one is routed
        if p.candidate.is_some() {
            p.allow_list = self.kept.allow_list.clone();
        }
        p.pins = self.kept.pins;
        // once promoted, a blue-green retires the old stable: its labels go
        p.labels = self
            .kept
            .labels
            .iter()
            .filter(|(_, &v)| !(self.phase == Phase::Promoted && v == self.stable))
            .map(|(name, &v)| (name.clone(), v))
            .collect();
        if p.shadow.is_none() {
            p.shadow = self.kept.shadow.clone();
        }
        p
    }

    /// The policy the rollout's phase and stage imply, before what it keeps.
    fn own_policy(&self) -> PolicySpec {
        let mut p = PolicySpec::pinned(self.stable);
        p.salt = self.salt();
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

    pub(super) fn event(&self, at: f64, decision: String, metrics: Value, actor: &str) -> Event {
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

    pub(super) fn enter_step(&mut self, step: usize, now: f64) {
        self.step = step;
        self.step_started_at = now;
        self.inconclusive_since = None;
        self.failures = 0;
        self.metric_errors = 0;
    }

    pub(super) fn abort(&mut self, reason: String) {
        self.phase = Phase::Aborted;
        self.reason = Some(reason);
    }

    /// Aborts with `reason` and returns the controller's event for it.
    pub(super) fn abort_event(&mut self, reason: String, now: f64, metrics: Value) -> Event {
        let decision = format!("aborted: {reason}");
        self.abort(reason);
        self.event(now, decision, metrics, "controller")
    }

    /// Moves to the next step, or promotes after the last one. A step at
    /// 100% is the promotion itself.
    pub(super) fn advance(&mut self, now: f64) -> String {
        let steps = self.steps();
        let next = self.step + 1;
        if next >= steps.len() || matches!(steps[next].0, Stage::Weight(Weight::FULL)) {
            self.phase = Phase::Promoted;
            self.reason = Some("all steps passed".into());
            return format!("promoted: version {} is stable", self.candidate);
        }
        self.enter_step(next, now);
        format!(
            "advanced to step {} of {} ({})",
            next + 1,
            steps.len(),
            steps[next].0.describe()
        )
    }
}

/// Finishes a transition from `before` to `n`: when the implied policy
/// changed, its revision goes up and the fleet has to converge on it again.
pub(super) fn settle(before: &Rollout, mut n: Rollout) -> Rollout {
    if n.policy() != before.policy() {
        n.revision = before.revision + 1;
        n.revision_converged_at = None;
    }
    n
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
