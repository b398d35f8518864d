//! The predict pipeline every front end runs: *admit* a request (the
//! model's rate limit for the caller, then the route, respecting circuit
//! breakers), *run* its inputs on the chosen version within a deadline, and
//! *observe* the outcome (the version's analysis window, its breaker, the
//! metrics). Remembering request ids and mirroring to a shadow happen here
//! too, so HTTP and gRPC behave the same.
//!
//! Only the version's own failures (an inference error, a miss of its own
//! configured deadline) reach its analysis window and circuit breaker (see
//! [`Outcome`]); a disconnect drops the request's future before it is
//! observed, so it never does either.

use std::net::IpAddr;
use std::time::Duration;

use super::error::ServeError;
pub use super::outcome::Outcome;
use super::state::AppState;
use crate::runtime::Budget;
use crate::telemetry::names;
use crate::tensor::{Tensor, TensorData};
use crate::traffic::shadow::ShadowJob;
use crate::traffic::{Breakers, Caller, Target, VersionSelector};

/// The protocol a request came in on (a metrics label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    V1,
    V2,
    Grpc,
}

impl Protocol {
    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "v1",
            Protocol::V2 => "v2",
            Protocol::Grpc => "grpc",
        }
    }
}

/// How one request wants its inference run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The client's deadline; it lowers (never raises) the version's own.
    pub client_timeout: Option<Duration>,
    /// Refuse (422) an answer with NaN or infinity for finite inputs
    /// instead of returning it (it is counted either way).
    pub reject_nonfinite: bool,
}

/// Applies the rate limit of `model` to a caller: its user key when the
/// peer is a trusted proxy, else the client address.
pub fn check_rate(state: &AppState, model: &str, user: Option<&str>, peer: IpAddr) -> Result<(), ServeError> {
    let snapshot = state.repo.snapshot();
    // An unknown model is answered 404 by routing; it must not become a
    // metric label or a limiter.
    let Some(m) = snapshot.models.get(model) else {
        return Ok(());
    };
    let key = state.guard.rate_key(user, peer);
    state
        .guard
        .limits
        .check(model, &m.config.limits, key)
        .map_err(|retry_after_secs| {
            metrics::counter!(names::RATE_LIMITED_TOTAL, "model" => model.to_string()).increment(1);
            ServeError::RateLimited {
                message: match key {
                    crate::guard::RateKey::User(u) => {
                        format!("user '{u}' is over the rate limit of model '{model}'")
                    }
                    crate::guard::RateKey::Address(_) => {
                        format!("client {peer} is over the rate limit of model '{model}'")
                    }
                },
                retry_after_secs,
            }
        })
}

/// Routes a predict request on the current snapshot, respecting the
/// circuit breakers (open → fallback to stable, or refused for an explicit
/// version).
pub fn route(
    state: &AppState,
    model: &str,
    selector: VersionSelector<'_>,
    caller: Caller<'_>,
) -> Result<Target, ServeError> {
    let breakers = &state.guard.breakers;
    let permits = |m: &str, v: u64| breakers.permits(m, v);
    let guard = Breakers {
        permits: &permits,
        retry_after_secs: breakers.open_for().as_secs().max(1),
    };
    Ok(crate::traffic::route_with(
        &state.repo.snapshot(),
        model,
        selector,
        caller,
        &guard,
    )?)
}

/// Admits a predict request: rate limit first, then the route.
pub fn admit(
    state: &AppState,
    model: &str,
    selector: VersionSelector<'_>,
    caller: Caller<'_>,
    peer: IpAddr,
) -> Result<Target, ServeError> {
    check_rate(state, model, caller.user, peer)?;
    let mut target = route(state, model, selector, caller)?;
    target.server_idle = state.admitted_alone();
    Ok(target)
}

/// Runs inputs (already checked against the signature) on the target
/// within the version's deadline, lowered by the client's. An inference
/// failure is logged here with its detail; the error carries only what a
/// client may see. Non-finite outputs of finite inputs are counted (and
/// refused when the request asked for it).
pub async fn run(
    target: &Target,
    inputs: Vec<Tensor>,
    options: RunOptions,
) -> Result<Vec<Tensor>, ServeError> {
    let budget = Budget::lowered(target.runtime.own_budget().after, options.client_timeout);
    let finite_inputs = inputs.iter().all(|t| all_finite(&t.data));
    target.arrival.arrived();
    let outputs = target.runtime.infer(inputs, Some(budget), target.server_idle).await.map_err(|error| {
        if let crate::runtime::RuntimeError::Inference(detail) = &error {
            tracing::warn!(model = %target.model.name, version = target.version, error = %detail, "inference failed");
        }
        ServeError::Runtime {
            model: target.model.name.clone(),
            version: target.version,
            error,
        }
    })?;
    if finite_inputs {
        if let Some(bad) = outputs.iter().find(|t| !all_finite(&t.data)) {
            metrics::counter!(
                names::NONFINITE_OUTPUTS_TOTAL,
                "model" => target.model.name.clone(),
                "version" => target.version.to_string(),
            )
            .increment(1);
            tracing::warn!(model = %target.model.name, version = target.version, output = %bad.name, "non-finite output for finite inputs");
            if options.reject_nonfinite {
                return Err(ServeError::NonFinite {
                    model: target.model.name.clone(),
                    version: target.version,
                    output: bad.name.clone(),
                });
            }
        }
    }
    Ok(outputs)
}

/// True when no element is NaN or infinite (non-float data always is).
pub fn all_finite(data: &TensorData) -> bool {
    match data {
        TensorData::Fp16(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Fp32(v) => v.iter().all(|x| x.is_finite()),
        TensorData::Fp64(v) => v.iter().all(|x| x.is_finite()),
        _ => true,
    }
}

/// Records the outcome of one predict request that reached a version: the
/// version's analysis window (what rollouts compare), its circuit breaker
/// and the metrics.
pub fn observe(state: &AppState, target: &Target, protocol: Protocol, outcome: Outcome, elapsed: Duration) {
    // Only what the version itself did (answered, or failed on its own)
    // reaches its window and its breaker.
    let verdict = outcome.verdict();
    if let Some(ok) = verdict {
        target.runtime.window().record(ok, elapsed);
    }
    let model = &target.model.name;
    state.guard.breakers.record(model, target.version, verdict);
    let version = target.version.to_string();
    metrics::counter!(
        names::REQUESTS_TOTAL,
        "model" => model.clone(),
        "version" => version.clone(),
        "route" => target.route.name(),
        "protocol" => protocol.name(),
        "status" => outcome.status_class(),
    )
    .increment(1);
    metrics::histogram!(
        names::REQUEST_DURATION_SECONDS,
        "model" => model.clone(),
        "version" => version,
        "protocol" => protocol.name(),
    )
    .record(elapsed.as_secs_f64());
}

/// Remembers which version answered a request with an id (for feedback).
pub fn remember(state: &AppState, id: Option<&str>, target: &Target) {
    // ids over the cap were refused before the request ran
    let storable = |id: &&str| !id.is_empty() && id.len() <= super::limits::MAX_CLIENT_STRING;
    if let Some(id) = id.filter(storable) {
        state.recent.remember(id, &target.model.name, target.version);
    }
}

/// Sends a copy of a served request to the shadow version, if the target
/// was sampled for it. Never blocks.
pub fn mirror(
    state: &AppState,
    target: &Target,
    inputs: Vec<Tensor>,
    outputs: &[Tensor],
    request_id: Option<String>,
) {
    if let Some((version, runtime)) = &target.shadow {
        state.shadow.mirror(ShadowJob {
            model: target.model.name.clone(),
            primary_version: target.version,
            shadow_version: *version,
            runtime: runtime.clone(),
            inputs,
            primary: outputs.to_vec(),
            request_id: request_id.unwrap_or_default(),
        });
    }
}
