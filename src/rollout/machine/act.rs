//! Manual actions from the admin API (promote, pause, resume, abort, retry)
//! as pure transitions of a rollout.

use serde_json::Value;

use super::state::{settle, Action, Event, Phase, Rollout};

/// Why a manual action does not fit the rollout's phase.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("only an aborted rollout can be retried")]
    RetryNotAborted,
    #[error("the rollout is already {}", .0.name())]
    Final(Phase),
    #[error("only a progressing rollout can be paused")]
    PauseNotProgressing,
    #[error("only a paused rollout can be resumed")]
    ResumeNotPaused,
    #[error("the rollout is still validating")]
    StillValidating,
}

/// Applies a manual action.
pub fn act(r: &Rollout, action: Action, now: f64) -> Result<(Rollout, Event), Refused> {
    let mut n = r.clone();
    let decision = match (action, r.phase) {
        (Action::Retry, Phase::Aborted) => {
            n.phase = if r.spec.skip_validation {
                Phase::Progressing
            } else {
                Phase::Validating
            };
            n.reason = None;
            n.started_at = now;
            n.last_analysis_at = None;
            n.enter_step(0, now);
            "retried from the first step".to_string()
        }
        (Action::Retry, _) => return Err(Refused::RetryNotAborted),
        (_, p) if p.is_final() => return Err(Refused::Final(p)),
        (Action::Pause, Phase::Progressing) => {
            n.phase = Phase::Paused;
            "paused".into()
        }
        (Action::Pause, _) => return Err(Refused::PauseNotProgressing),
        (Action::Resume, Phase::Paused) => {
            n.phase = Phase::Progressing;
            n.last_analysis_at = None;
            "resumed".into()
        }
        (Action::Resume, _) => return Err(Refused::ResumeNotPaused),
        (Action::Abort, _) => {
            n.abort("aborted by an admin".into());
            "aborted by an admin".into()
        }
        (Action::PromoteFull, _) => {
            n.phase = Phase::Promoted;
            n.reason = Some("promoted in full by an admin".into());
            format!("promoted in full: version {} is stable", r.candidate)
        }
        (Action::Promote, Phase::Validating) => return Err(Refused::StillValidating),
        (Action::Promote, _) => {
            n.phase = Phase::Progressing;
            n.advance(now)
        }
    };
    let e = n.event(now, decision, Value::Null, "admin");
    Ok((settle(r, n), e))
}

/// Aborts a rollout for a reason the controller found outside an analysis
/// (e.g. its policy cannot be applied after a restart).
pub fn abort(r: &Rollout, reason: String, now: f64, metrics: Value) -> (Rollout, Event) {
    let mut n = r.clone();
    let e = n.abort_event(reason, now, metrics);
    (n, e)
}
