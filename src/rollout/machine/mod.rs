//! The rollout state machine: a pure function of (rollout, observation,
//! now) → next rollout + the event that explains it. Timers are derived
//! from stored timestamps (step started at, inconclusive since), never from
//! in-memory countdowns, so a restarted server (or another pod) resumes
//! exactly.

mod act;
mod decide;
mod state;

pub use act::{abort, act, Refused};
pub use decide::decide;
pub use state::{analysis_due, Action, Event, Kept, Observation, Phase, Rollout, Stage};

#[cfg(test)]
mod tests;
