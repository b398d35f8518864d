//! Readiness: "every version that traffic can reach is READY, warmed up
//! and has all its workers", never with zero routable versions, and not
//! ready as soon as shutdown begins.

use super::state::AppState;
use crate::repository::{Snapshot, VersionState};

/// Why the server is not ready, or `Ok` when it is.
pub fn readiness(state: &AppState) -> Result<(), String> {
    if state.is_shutting_down() {
        return Err("shutting down".into());
    }
    routable_ready(&state.repo.snapshot())?;
    // in a fleet: ready only once this replica serves the fleet's current
    // policy revisions
    state.rollouts_in_place()
}

/// Readiness of a snapshot: each model's routed version must be READY.
pub fn routable_ready(snapshot: &Snapshot) -> Result<(), String> {
    if !snapshot.initial_load_done {
        return Err("loading the model repository".into());
    }
    let mut routable = 0;
    for m in snapshot.models.values() {
        if m.error.is_some() {
            continue;
        }
        // A model nothing routes to yet (all versions loading or failed)
        // neither blocks readiness nor counts as servable.
        let routed = m.required();
        if routed.is_empty() {
            continue;
        }
        for v in routed {
            let entry = m.versions.get(&v);
            if entry
                .and_then(|e| e.runtime.as_ref())
                .is_some_and(|rt| !rt.is_healthy())
            {
                return Err(format!(
                    "model '{}' version {v} is routed but a worker is being replaced",
                    m.name
                ));
            }
            match entry.map(|e| &e.state) {
                Some(VersionState::Ready) => {}
                Some(state) => {
                    return Err(format!(
                        "model '{}' version {v} is routed but {}",
                        m.name,
                        state.name()
                    ))
                }
                None => return Err(format!("model '{}' version {v} is routed but not loaded", m.name)),
            }
        }
        routable += 1;
    }
    if routable == 0 {
        return Err("no model version is ready to serve".into());
    }
    Ok(())
}
