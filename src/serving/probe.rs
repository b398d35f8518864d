//! Probing circuit breakers: an open breaker whose open period is over is
//! half-open, and a *probe* (one warm-up inference on that version, the same
//! row it warmed up on when it loaded) closes or re-opens it. Without
//! probes, a breaker of a version that no user traffic reaches (a candidate
//! whose traffic falls back to stable) would stay open forever.

use super::state::AppState;
use crate::runtime::RuntimeError;

/// Probes every version whose breaker is half-open now (or open with its
/// period over). Inferences run one after another within each version's own
/// deadline; load refusals (queue full, unloading) prove nothing and are
/// not counted.
pub async fn probe_breakers(state: &AppState) {
    let breakers = &state.guard.breakers;
    for (model, version) in breakers.not_closed() {
        // moves an open breaker whose period is over to half-open
        if !breakers.permits(&model, version) {
            continue;
        }
        let snapshot = state.repo.snapshot();
        let Some(m) = snapshot.models.get(&model) else {
            continue;
        };
        let Some(runtime) = m.versions.get(&version).and_then(|v| v.runtime.clone()) else {
            continue;
        };
        let inputs = crate::repository::warmup_inputs(runtime.signature(), m.samples.as_deref());
        let verdict = match runtime.infer(inputs, None, false).await {
            Ok(_) => Some(true),
            Err(RuntimeError::QueueFull(_) | RuntimeError::Closed) => None,
            Err(e) => {
                tracing::info!(model = %model, version, error = %e, "breaker probe failed");
                Some(false)
            }
        };
        breakers.record(&model, version, verdict);
    }
}
