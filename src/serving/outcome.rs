//! An *outcome* is what one predict request says about the version that
//! was to answer it. Only the version's own failures (an inference error, a
//! miss of its own configured deadline) reach its analysis window and its
//! circuit breaker; a client's shorter deadline, bad input and load
//! shedding never do. Front ends get it from the typed error
//! ([`ServeError::outcome`](super::ServeError::outcome)), never from a status.

/// How a predict request that reached a version ended, as far as that
/// version is concerned (see [`ServeError::outcome`](super::ServeError::outcome)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Served,
    /// The request was at fault (a 4xx): says nothing about the version.
    Rejected,
    /// Refused for load or lifecycle (queue full, unloading): not a fault.
    Refused,
    /// The client's own deadline, shorter than the version's, ran out.
    Abandoned,
    /// The version failed: an inference error or a miss of its own deadline.
    Failed,
}

impl Outcome {
    /// The `status` label of the requests counter.
    pub fn status_class(self) -> &'static str {
        match self {
            Outcome::Served => "2xx",
            Outcome::Rejected => "4xx",
            Outcome::Refused | Outcome::Abandoned | Outcome::Failed => "5xx",
        }
    }

    /// What the version's analysis window and breaker learn: `Some(true)`
    /// it answered, `Some(false)` it failed, `None` nothing about it.
    pub fn verdict(self) -> Option<bool> {
        match self {
            Outcome::Served => Some(true),
            Outcome::Failed => Some(false),
            Outcome::Rejected | Outcome::Refused | Outcome::Abandoned => None,
        }
    }
}
