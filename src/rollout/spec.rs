//! A rollout *spec*: the candidate, the strategy with its own fields
//! (canary steps, blue-green observation, shadow agreement, A/B split) and
//! the analysis thresholds, as the admin API and spec files give them.
//! Weights are percent (`"10%"` or `10`), basis points only under `_bp`
//! names; durations are strings such as `"30s"`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::policy::Weight;

/// One canary step: a weight held for `bake`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StepInput")]
pub struct Step {
    pub weight: Weight,
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub bake: Option<Duration>,
}

/// A step as it may be written: `weight` (percent) or `weight_bp`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepInput {
    #[serde(default)]
    weight: Option<Weight>,
    #[serde(default)]
    weight_bp: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    bake: Option<Duration>,
}

impl TryFrom<StepInput> for Step {
    type Error = String;
    fn try_from(s: StepInput) -> Result<Step, String> {
        Ok(Step {
            weight: crate::policy::weight::one_of(s.weight, s.weight_bp, "weight")?,
            bake: s.bake,
        })
    }
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
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "strategy", rename_all = "kebab-case")]
pub enum Strategy {
    Canary {
        steps: Vec<Step>,
    },
    BlueGreen {
        /// How long C is watched after the switch.
        #[serde(with = "humantime_serde")]
        observe: Duration,
    },
    Shadow {
        rate: f64,
        min_agreement: f64,
        min_samples: u64,
        /// Continue into a canary with these steps once the shadow passes.
        then_canary: Vec<Step>,
    },
    AbTest {
        /// The candidate's share (sticky per user); `split_bp` in basis points.
        split: Weight,
        #[serde(with = "humantime_serde")]
        duration: Option<Duration>,
        min_samples: u64,
        alpha: f64,
        auto_promote: bool,
    },
}

/// The fields of each strategy as they are read, with their defaults.
mod fields {
    use super::*;

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Canary {
        pub(super) steps: Vec<Step>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct BlueGreen {
        #[serde(default = "default_observe", with = "humantime_serde")]
        pub(super) observe: Duration,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Shadow {
        #[serde(default = "one")]
        pub(super) rate: f64,
        #[serde(default = "default_agreement")]
        pub(super) min_agreement: f64,
        #[serde(default = "default_samples")]
        pub(super) min_samples: u64,
        #[serde(default)]
        pub(super) then_canary: Vec<Step>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct AbTest {
        #[serde(default = "half")]
        pub(super) split: Weight,
        #[serde(default, with = "humantime_serde")]
        pub(super) duration: Option<Duration>,
        #[serde(default = "default_samples")]
        pub(super) min_samples: u64,
        #[serde(default = "default_alpha")]
        pub(super) alpha: f64,
        #[serde(default)]
        pub(super) auto_promote: bool,
    }
}

fn default_observe() -> Duration {
    d(60)
}
fn one() -> f64 {
    1.0
}
fn half() -> Weight {
    Weight::from_bp(5000).expect("50% is a weight")
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

/// A rollout as the admin API starts it. Read through
/// [`RolloutSpec::from_map`], so an unknown field or a bad value is named
/// with its path (`steps[1].weight`).
#[derive(Debug, Clone, PartialEq, Serialize)]
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

/// Fields every strategy takes.
const COMMON_FIELDS: &[&str] = &["candidate", "strategy", "analysis", "skip_validation"];

/// The strategies and the fields each adds.
const STRATEGIES: &[(&str, &[&str])] = &[
    ("canary", &["steps"]),
    ("blue-green", &["observe"]),
    ("shadow", &["rate", "min_agreement", "min_samples", "then_canary"]),
    (
        "ab-test",
        &[
            "split",
            "split_bp",
            "duration",
            "min_samples",
            "alpha",
            "auto_promote",
        ],
    ),
];

type Map = serde_json::Map<String, serde_json::Value>;

impl<'de> Deserialize<'de> for RolloutSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<RolloutSpec, D::Error> {
        let map = Map::deserialize(d)?;
        RolloutSpec::from_map(map).map_err(serde::de::Error::custom)
    }
}

/// Deserializes `value` as `T`, naming the path of a bad field under `at`.
fn typed<T: serde::de::DeserializeOwned>(at: &str, value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match (at.is_empty(), path == ".") {
            (true, true) => inner.to_string(),
            (true, false) => format!("{path}: {inner}"),
            (false, true) => format!("{at}: {inner}"),
            (false, false) => format!("{at}.{path}: {inner}"),
        }
    })
}

impl RolloutSpec {
    /// A spec from its fields as any format (JSON, TOML, YAML) reads them:
    /// the strategy first, then only the fields it takes.
    pub fn from_map(mut map: Map) -> Result<RolloutSpec, String> {
        let names: Vec<&str> = STRATEGIES.iter().map(|(n, _)| *n).collect();
        let strategy = match map.get("strategy") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => {
                return Err(format!(
                    "`strategy` must be one of {}, got {other}",
                    names.join(", ")
                ))
            }
            None => return Err(format!("missing field `strategy` (one of {})", names.join(", "))),
        };
        let (_, own) = STRATEGIES
            .iter()
            .find(|(n, _)| *n == strategy)
            .ok_or_else(|| format!("unknown strategy `{strategy}` (one of {})", names.join(", ")))?;
        if let Some(key) = map
            .keys()
            .find(|k| !COMMON_FIELDS.contains(&k.as_str()) && !own.contains(&k.as_str()))
        {
            let expected: Vec<&str> = COMMON_FIELDS.iter().chain(own.iter()).copied().collect();
            return Err(format!(
                "unknown field `{key}` in a {strategy} spec (expected one of: {})",
                expected.join(", ")
            ));
        }
        if let Some(bp) = map.remove("split_bp") {
            if map.contains_key("split") {
                return Err("give `split` (percent) or `split_bp`, not both".into());
            }
            let bp: u64 = typed("split_bp", bp)?;
            let w = Weight::from_bp(bp).map_err(|e| format!("split_bp: {e}"))?;
            map.insert("split".into(), serde_json::Value::String(w.to_string()));
        }
        let candidate = map
            .remove("candidate")
            .ok_or("missing field `candidate` (the version to roll out)")
            .map_err(str::to_string)
            .and_then(|v| typed("candidate", v))?;
        let analysis = match map.remove("analysis") {
            Some(v) => typed("analysis", v)?,
            None => AnalysisSpec::default(),
        };
        let skip_validation = match map.remove("skip_validation") {
            Some(v) => typed("skip_validation", v)?,
            None => false,
        };
        map.remove("strategy");
        let rest = serde_json::Value::Object(map);
        let strategy = match strategy.as_str() {
            "canary" => {
                let f: fields::Canary = typed("", rest)?;
                Strategy::Canary { steps: f.steps }
            }
            "blue-green" => {
                let f: fields::BlueGreen = typed("", rest)?;
                Strategy::BlueGreen { observe: f.observe }
            }
            "shadow" => {
                let f: fields::Shadow = typed("", rest)?;
                Strategy::Shadow {
                    rate: f.rate,
                    min_agreement: f.min_agreement,
                    min_samples: f.min_samples,
                    then_canary: f.then_canary,
                }
            }
            _ => {
                let f: fields::AbTest = typed("", rest)?;
                Strategy::AbTest {
                    split: f.split,
                    duration: f.duration,
                    min_samples: f.min_samples,
                    alpha: f.alpha,
                    auto_promote: f.auto_promote,
                }
            }
        };
        Ok(RolloutSpec {
            candidate,
            strategy,
            analysis,
            skip_validation,
        })
    }
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
    #[error("split {0} must be above 0% and below 100%")]
    Split(Weight),
    #[error("alpha {0} must be in (0, 1)")]
    Alpha(f64),
    #[error("steps must not be empty")]
    NoSteps,
    #[error("step weight {0} must be above 0%")]
    StepWeight(Weight),
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
                if split.is_zero() || *split == Weight::FULL {
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
    let mut last = Weight::ZERO;
    for s in steps {
        if s.weight.is_zero() {
            return Err(InvalidSpec::StepWeight(s.weight));
        }
        if s.weight < last {
            return Err(InvalidSpec::DecreasingSteps);
        }
        last = s.weight;
    }
    Ok(())
}
