//! The traffic *policy* of a model: where requests without an explicit
//! version go. [`spec`] is the plain data the admin API reads and writes;
//! [`validated`] is a spec checked against the loaded versions, with the
//! routing decision it makes; [`weight`] is the share of traffic, held in
//! basis points and spoken in percent.

pub mod spec;
pub mod validated;
pub mod weight;

pub use spec::{CandidateSpec, PinMode, PolicySpec, ShadowSpec, POLICY_LABELS};
pub use validated::{bucket, InvalidPolicy, Policy, Route};
pub use weight::{Weight, WeightError, FULL_WEIGHT};
