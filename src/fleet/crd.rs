//! The `ModelRollout` custom resource (`switchyard.dev/v1alpha1`), one per
//! model and namespace: its *spec* is what a user (or the admin API on any
//! replica) asks for — the rollout, `paused`, and one-shot commands — and
//! its *status*, written only by the leader through the status subresource,
//! is everything the rollout's timers and counters derive from plus the
//! effective traffic policy with its monotonic revision, which every
//! replica applies. The CRD is generated from these types
//! ([`crd_yaml`]) and shipped in `deploy/k8s/base/`.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What to roll out and how: the rollout spec of the admin API, with
/// Kubernetes-style (camelCase) field names.
// clippy reads each printcolumn's `type_ = "string"` as a repeated attribute
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "ModelRollout",
    plural = "modelrollouts",
    shortname = "mro",
    category = "switchyard",
    namespaced,
    status = "ModelRolloutStatus",
    derive = "PartialEq",
    doc = "A model rollout across every switchyard replica of the namespace: one per model.",
    printcolumn(name = "Model", type_ = "string", json_path = ".spec.model"),
    printcolumn(name = "Strategy", type_ = "string", json_path = ".spec.strategy"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Step", type_ = "integer", json_path = ".status.step"),
    printcolumn(name = "Weight", type_ = "string", json_path = ".status.weight"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutSpec {
    /// The model: a directory of every replica's model repository.
    pub model: String,
    /// The rollout to run.
    #[serde(flatten)]
    pub rollout: RolloutFields,
    /// Hold the rollout at its step while true (pause / resume).
    #[serde(default)]
    pub paused: bool,
    /// One-shot commands: setting a field to a new value asks for that
    /// action once (the leader records the values it handled in
    /// `status.handledCommands`).
    #[serde(default, skip_serializing_if = "Commands::is_empty")]
    pub commands: Commands,
}

/// The strategies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    Canary,
    BlueGreen,
    Shadow,
    AbTest,
}

/// A rollout: the candidate, the strategy with its own fields, the analysis.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutFields {
    /// The candidate version.
    pub candidate: u64,
    /// canary, blue-green, shadow or ab-test.
    pub strategy: StrategyName,
    /// canary: the steps; shadow: the canary that follows a passed shadow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<StepFields>,
    /// blue-green: how long the candidate is watched after the switch ("60s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observe: Option<String>,
    /// shadow: the mirrored share and the verdict's thresholds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowFields>,
    /// ab-test: the split and the statistics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ab_test: Option<AbTestFields>,
    /// Analysis thresholds (defaults apply to every field left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisFields>,
    /// Skip pre-deployment validation (not recommended).
    #[serde(default, skip_serializing_if = "is_false")]
    pub skip_validation: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// One canary step: a weight held for `bake`. Give the weight as a
/// percentage (`weight: "10%"`) or in basis points (`weightBasisPoints: 1000`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StepFields {
    /// The candidate's share as a percentage, "10%" or "2.5%".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    /// The candidate's share in basis points (10000 = all traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_basis_points: Option<u32>,
    /// How long the step is held once every replica applied it ("1m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<String>,
}

/// A shadow rollout's fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowFields {
    /// Share of requests mirrored, 0..=1 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Argmax or label agreement needed to pass (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// Comparisons needed before a verdict (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
}

/// An A/B test's fields.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AbTestFields {
    /// The candidate's share in basis points (default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_basis_points: Option<u32>,
    /// Least time the test runs ("1h").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Feedback values needed per arm (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<u64>,
    /// Significance level (default 0.05).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    /// Promote a significantly better candidate by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_promote: Option<bool>,
}

/// Analysis thresholds; each one left out takes its default.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisFields {
    /// How often the analysis runs ("10s").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Requests each version needs in the window before a verdict (100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_requests: Option<u64>,
    /// Candidate error rate allowed, relative to stable's (1.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_ratio: Option<f64>,
    /// Candidate error rate allowed, absolute margin over stable's (0.005).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate_delta: Option<f64>,
    /// Candidate p95 latency allowed, relative to stable's (1.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_p95_ratio: Option<f64>,
    /// Candidate mean feedback allowed, relative to stable's (-0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_feedback_delta: Option<f64>,
    /// Failed analyses in a row that abort (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_limit: Option<u32>,
    /// How long a step may stay inconclusive or unconverged ("10m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline: Option<String>,
    /// Analyses in a row without readable metrics that abort (4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_limit: Option<u32>,
}

/// One-shot commands. Any new value (a counter, a timestamp) asks for the
/// action once; the CLI and the admin API write a fresh value each time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Commands {
    /// Go to the next step now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote: Option<String>,
    /// Make the candidate stable now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promote_full: Option<String>,
    /// Abort: all traffic back on stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort: Option<String>,
    /// Start an aborted rollout again from its first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<String>,
    /// Put all traffic back on the version stable before the last promotion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// The command names, in the order the leader handles them.
pub const COMMANDS: [&str; 5] = ["abort", "retry", "rollback", "promoteFull", "promote"];

impl Commands {
    /// True when no command was ever set.
    pub fn is_empty(&self) -> bool {
        *self == Commands::default()
    }

    /// The value of command `name` (one of [`COMMANDS`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "promote" => self.promote.as_deref(),
            "promoteFull" => self.promote_full.as_deref(),
            "abort" => self.abort.as_deref(),
            "retry" => self.retry.as_deref(),
            "rollback" => self.rollback.as_deref(),
            _ => None,
        }
    }

    /// Sets command `name` to `value`.
    pub fn set(&mut self, name: &str, value: String) {
        let slot = match name {
            "promote" => &mut self.promote,
            "promoteFull" => &mut self.promote_full,
            "abort" => &mut self.abort,
            "retry" => &mut self.retry,
            "rollback" => &mut self.rollback,
            _ => return,
        };
        *slot = Some(value);
    }
}

/// What the leader decided. Times are RFC 3339 with milliseconds.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModelRolloutStatus {
    /// The `metadata.generation` of the spec the leader last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The leader that wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// Counts the rollouts of this object; 0 before the first.
    #[serde(default)]
    pub rollout_id: i64,
    /// Validating, Progressing, Paused, Promoted or Aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The current step, from 0.
    #[serde(default)]
    pub step: u32,
    /// The candidate's share now, as a percentage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u64>,
    /// Why the rollout ended, was refused or waits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The rollout being run: the spec it started from (a spec changed
    /// while it runs waits until it has finished).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutFields>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<String>,
    /// When every ready replica was first seen holding the step's policy
    /// revision: the bake and the analysis window start here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_converged_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inconclusive_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_analysis_at: Option<String>,
    /// Failed analyses in a row.
    #[serde(default)]
    pub consecutive_failures: u32,
    /// Analyses in a row without readable metrics.
    #[serde(default)]
    pub consecutive_metric_errors: u32,
    /// The last analysis: verdict, shadow and A/B figures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub last_analysis: Option<Value>,
    /// Blue-green: the stable version's metrics before the switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub baseline: Option<Value>,
    /// A/B: the result of the test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub ab_result: Option<Value>,
    /// The traffic policy every replica applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyStatus>,
    /// The version that was stable before the last promotion (rollback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_stable: Option<u64>,
    /// The command values handled, by command name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub handled_commands: BTreeMap<String, HandledCommand>,
    /// The newest transitions, oldest first (at most [`HISTORY`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// Transitions kept in `status.history`; the full audit log is each
/// replica's SQLite store.
pub const HISTORY: usize = 20;

/// A command value the leader handled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HandledCommand {
    pub value: String,
    /// Why it was refused; absent when it was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// The effective traffic policy and its revision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// Goes up with every change; replicas apply a higher one only.
    pub revision: u64,
    pub stable: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<u64>,
    /// The candidate's share of users, in basis points (10000 = all).
    #[serde(default)]
    pub candidate_weight_basis_points: u32,
    /// Sticky hashing of the user key (else a random bucket per request).
    #[serde(default)]
    pub sticky: bool,
    /// The hash salt: the same on every replica, new for every rollout.
    #[serde(default)]
    pub salt: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_list: Vec<String>,
    /// off, allow-listed or all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pins: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<u64>,
    /// Share of requests mirrored to the shadow, 0..=1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow_rate: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, u64>,
    /// Blue-green: the candidate reachable by the label `preview`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<u64>,
}

/// One transition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    pub at: String,
    pub rollout_id: i64,
    pub phase: String,
    pub step: u32,
    pub weight_basis_points: u32,
    pub decision: String,
    /// controller, admin or the pod that acted.
    pub actor: String,
}

/// The schema of a free-form JSON object.
fn any_object(_: &mut schemars::generate::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "nullable": true,
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// The CustomResourceDefinition as YAML, as `deploy/k8s/base/` ships it.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    let crd = ModelRollout::crd();
    let body = serde_yaml_ng::to_string(&crd).expect("a CRD serializes");
    format!(
        "# Generated from src/fleet/crd.rs by `switchyard crd`; do not edit.\n\
         # tests/fleet_manifests.rs fails when it differs from what the code generates.\n{body}"
    )
}
