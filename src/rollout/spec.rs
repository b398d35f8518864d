//! A rollout *spec*: the candidate, the strategy with its own fields
//! (canary steps, blue-green observation, shadow agreement, A/B split) and
//! the analysis thresholds, as the admin API and spec files give them.

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

/// Thresholds of the analysis, with their defaults.
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
    /// Analyses in a row whose metrics cannot be read (the metrics source
    /// is down) before the rollout aborts; until then the step holds.
    pub error_limit: u32,
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
            error_limit: 4,
        }
    }
}

/// What kind of rollout, with its own fields.
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

/// Why a rollout spec was refused; names the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidSpec {
    #[error("analysis.interval must be positive")]
    ZeroInterval,
    #[error("analysis.failure_limit must be at least 1")]
    ZeroFailureLimit,
    #[error("analysis.error_limit must be at least 1")]
    ZeroErrorLimit,
    #[error("shadow rate {0} must be in (0, 1]")]
    ShadowRate(f64),
    #[error("min_agreement {0} must be in [0, 1]")]
    MinAgreement(f64),
    #[error("split {0} must be between 1 and 9999 basis points")]
    Split(u32),
    #[error("alpha {0} must be in (0, 1)")]
    Alpha(f64),
    #[error("steps must not be empty")]
    NoSteps,
    #[error("step weight {0} must be in 1..=10000")]
    StepWeight(u32),
    #[error("step weights must not decrease")]
    DecreasingSteps,
}

impl RolloutSpec {
    /// Checks what serde cannot.
    pub fn check(&self) -> Result<(), InvalidSpec> {
        let a = &self.analysis;
        if a.interval.is_zero() {
            return Err(InvalidSpec::ZeroInterval);
        }
        if a.failure_limit == 0 {
            return Err(InvalidSpec::ZeroFailureLimit);
        }
        if a.error_limit == 0 {
            return Err(InvalidSpec::ZeroErrorLimit);
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
                    return Err(InvalidSpec::ShadowRate(*rate));
                }
                if !(0.0..=1.0).contains(min_agreement) {
                    return Err(InvalidSpec::MinAgreement(*min_agreement));
                }
                if then_canary.is_empty() {
                    Ok(())
                } else {
                    check_steps(then_canary)
                }
            }
            Strategy::AbTest { split, alpha, .. } => {
                if *split == 0 || *split >= 10_000 {
                    return Err(InvalidSpec::Split(*split));
                }
                if !(*alpha > 0.0 && *alpha < 1.0) {
                    return Err(InvalidSpec::Alpha(*alpha));
                }
                Ok(())
            }
            Strategy::BlueGreen { .. } => Ok(()),
        }
    }
}

fn check_steps(steps: &[Step]) -> Result<(), InvalidSpec> {
    if steps.is_empty() {
        return Err(InvalidSpec::NoSteps);
    }
    let mut last = 0;
    for s in steps {
        if s.weight == 0 || s.weight > 10_000 {
            return Err(InvalidSpec::StepWeight(s.weight));
        }
        if s.weight < last {
            return Err(InvalidSpec::DecreasingSteps);
        }
        last = s.weight;
    }
    Ok(())
}
