//! A policy *spec* is the traffic policy as the admin API reads and writes
//! it: the stable version, optionally a candidate with its weight, sticky
//! hashing, an allow-list, version pins, a shadow, labels, a blue-green
//! preview. It is plain data; [`Policy`](super::validated::Policy) is a spec
//! that passed validation.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::weight::Weight;

/// Which callers may pin a version with the `x-model-version` header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PinMode {
    /// The header is ignored.
    #[default]
    Off,
    /// Honoured for users in the allow-list.
    AllowListed,
    /// Honoured for everyone.
    All,
}

/// A candidate version and its share of traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "CandidateInput")]
pub struct CandidateSpec {
    pub version: u64,
    /// Written `"10%"`; read from `weight` (percent) or `weight_bp`.
    pub weight: Weight,
}

/// A candidate as it may be written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CandidateInput {
    version: u64,
    #[serde(default)]
    weight: Option<Weight>,
    #[serde(default)]
    weight_bp: Option<u64>,
}

impl TryFrom<CandidateInput> for CandidateSpec {
    type Error = String;
    fn try_from(c: CandidateInput) -> Result<CandidateSpec, String> {
        Ok(CandidateSpec {
            version: c.version,
            weight: super::weight::one_of(c.weight, c.weight_bp, "weight")?,
        })
    }
}

/// A shadow version and the share of requests mirrored to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowSpec {
    pub version: u64,
    /// 0.0..=1.0.
    pub rate: f64,
}

fn default_true() -> bool {
    true
}

/// A traffic policy as the admin API reads and writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    pub stable: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<CandidateSpec>,
    /// Hash the user key (true) or pick uniformly at random (false).
    #[serde(default = "default_true")]
    pub sticky: bool,
    #[serde(default)]
    pub salt: String,
    #[serde(default)]
    pub allow_list: Vec<String>,
    #[serde(default)]
    pub pins: PinMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Extra names for versions (besides `stable`, `candidate`, `preview`).
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    /// Blue-green preview: loaded and reachable by label, no traffic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<u64>,
}

impl PolicySpec {
    /// All traffic on `version`.
    pub fn pinned(version: u64) -> PolicySpec {
        PolicySpec {
            stable: version,
            candidate: None,
            sticky: true,
            salt: String::new(),
            allow_list: Vec::new(),
            pins: PinMode::Off,
            shadow: None,
            labels: BTreeMap::new(),
            preview: None,
        }
    }
}

/// Labels the policy maintains itself.
pub const POLICY_LABELS: [&str; 3] = ["stable", "candidate", "preview"];
