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
pub mod spec;
pub mod spec_file;
pub mod statistics;
pub mod store;
pub mod validation;

pub use spec::{AnalysisSpec, RolloutSpec, Step, Strategy};
