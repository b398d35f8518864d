//! Rollouts: the in-process controller that takes a model from its stable
//! version S to a candidate C.
//!
//! A *rollout* is a stored record (spec, phase, step, timestamps). Its phase
//! moves `Validating → Progressing(step i) ⇄ Paused → Promoted | Aborted`;
//! each move is an *event*, stored before the policy it implies is applied.
//! The state machine ([`machine`]) is a pure function of (rollout,
//! observation, now); the controller only gathers observations through
//! [`analysis::MetricsSource`] and writes policies through
//! [`controller::PolicySink`], so neither where metrics come from nor where
//! policies go leaks into the decisions.

pub mod analysis;
pub mod controller;
pub mod machine;
pub mod statistics;
pub mod store;
pub mod validation;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One canary step: a weight in basis points held for `bake`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub weight: u32,
    #[serde(default, with = "humantime_serde")]
    pub bake: Option<Duration>,
}

fn d(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Thresholds of the analysis (SPEC §5.1); defaults as the SPEC says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnalysisSpec {
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    pub min_requests: u64,
    pub max_error_rate_ratio: f64,
    pub max_error_rate_delta: f64,
    pub max_p95_ratio: f64,
    /// Compared only when both versions have feedback.
    pub min_feedback_delta: f64,
    pub failure_limit: u32,
    #[serde(with = "humantime_serde")]
    pub progress_deadline: Duration,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        AnalysisSpec {
            interval: d(10),
            min_requests: 100,
            max_error_rate_ratio: 1.1,
            max_error_rate_delta: 0.005,
            max_p95_ratio: 1.2,
            min_feedback_delta: -0.1,
            failure_limit: 2,
            progress_deadline: d(600),
        }
    }
}

/// What kind of rollout, with its own fields (SPEC §5.2–5.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Strategy {
    Canary {
        steps: Vec<Step>,
    },
    BlueGreen {
        /// How long C is watched after the switch.
        #[serde(default = "default_observe", with = "humantime_serde")]
        observe: Duration,
    },
    Shadow {
        #[serde(default = "one")]
        rate: f64,
        #[serde(default = "default_agreement")]
        min_agreement: f64,
        #[serde(default = "default_samples")]
        min_samples: u64,
        /// Continue into a canary with these steps once the shadow passes.
        #[serde(default)]
        then_canary: Vec<Step>,
    },
    AbTest {
        /// Candidate share in basis points.
        #[serde(default = "half")]
        split: u32,
        #[serde(default, with = "humantime_serde")]
        duration: Option<Duration>,
        #[serde(default = "default_samples")]
        min_samples: u64,
        #[serde(default = "default_alpha")]
        alpha: f64,
        #[serde(default)]
        auto_promote: bool,
    },
}

fn default_observe() -> Duration {
    d(60)
}
fn one() -> f64 {
    1.0
}
fn half() -> u32 {
    5000
}
fn default_agreement() -> f64 {
    0.95
}
fn default_samples() -> u64 {
    100
}
fn default_alpha() -> f64 {
    0.05
}

/// A rollout as the admin API starts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSpec {
    pub candidate: u64,
    #[serde(flatten)]
    pub strategy: Strategy,
    #[serde(default)]
    pub analysis: AnalysisSpec,
    /// Skip pre-deployment validation (not recommended).
    #[serde(default)]
    pub skip_validation: bool,
}

impl RolloutSpec {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), String> {
        let a = &self.analysis;
        if a.interval.is_zero() {
            return Err("analysis.interval must be positive".into());
        }
        if a.failure_limit == 0 {
            return Err("analysis.failure_limit must be at least 1".into());
        }
        match &self.strategy {
            Strategy::Canary { steps } => check_steps(steps),
            Strategy::Shadow {
                rate,
                min_agreement,
                then_canary,
                ..
            } => {
                if !(0.0..=1.0).contains(rate) || *rate == 0.0 {
                    return Err(format!("shadow rate {rate} must be in (0, 1]"));
                }
                if !(0.0..=1.0).contains(min_agreement) {
                    return Err(format!("min_agreement {min_agreement} must be in [0, 1]"));
                }
                if then_canary.is_empty() {
                    Ok(())
                } else {
                    check_steps(then_canary)
                }
            }
            Strategy::AbTest { split, alpha, .. } => {
                if *split == 0 || *split >= 10_000 {
                    return Err(format!("split {split} must be between 1 and 9999 basis points"));
                }
                if !(*alpha > 0.0 && *alpha < 1.0) {
                    return Err(format!("alpha {alpha} must be in (0, 1)"));
                }
                Ok(())
            }
            Strategy::BlueGreen { .. } => Ok(()),
        }
    }
}

fn check_steps(steps: &[Step]) -> Result<(), String> {
    if steps.is_empty() {
        return Err("steps must not be empty".into());
    }
    let mut last = 0;
    for s in steps {
        if s.weight == 0 || s.weight > 10_000 {
            return Err(format!("step weight {} must be in 1..=10000", s.weight));
        }
        if s.weight < last {
            return Err("step weights must not decrease".into());
        }
        last = s.weight;
    }
    Ok(())
}
