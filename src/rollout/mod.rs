//! Rollouts: the controller that takes a model from its stable version S
//! to a candidate C.
//!
//! A *rollout* is a stored record (spec, phase, step, timestamps). Its phase
//! moves `Validating → Progressing(step i) ⇄ Paused → Promoted | Aborted`;
//! each move is an *event*, stored with the rollout before the policy it
//! implies is applied. The state machine ([`machine`]) is a pure function
//! of (rollout, observation, now); the controller only gathers observations
//! through [`analysis::MetricsSource`] and reads and writes rollouts through
//! a compare-and-swap [`policy_store::PolicyStore`], so neither where
//! metrics come from nor where policies go leaks into the decisions. Local
//! mode's seams are in [`local`]; a fleet's live in the fleet layer.

pub mod analysis;
pub mod controller;
pub mod local;
pub mod machine;
pub mod operator;
pub mod policy_store;
pub mod spec;
pub mod spec_file;
pub mod statistics;
pub mod store;
pub mod validation;

pub use spec::{AnalysisSpec, RolloutSpec, Step, Strategy};
