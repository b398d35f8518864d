//! The predict pipeline every front end runs: *admit* a request (the
//! model's rate limit for the caller, then the route, respecting circuit
//! breakers), *run* its inputs on the chosen version within a deadline, and
//! *observe* the outcome (the version's analysis window, its breaker, the
//! metrics). Remembering request ids and mirroring to a shadow happen here
//! too, so HTTP and gRPC behave the same.

use std::net::IpAddr;
use std::time::Duration;

use super::error::ServeError;
use super::state::AppState;
use crate::telemetry::names;
use crate::tensor::Tensor;
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

/// How a predict request that reached a version ended, as far as that
/// version is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Served,
    /// The request was at fault (a 4xx): says nothing about the version.
    Rejected,
    /// Refused for load or lifecycle (queue full, unloading): not a fault.
    Refused,
    /// The version failed: an inference error or a missed deadline.
    Failed,
}

impl Outcome {
    /// The outcome an HTTP status stands for.
    pub fn of_status(status: u16) -> Outcome {
        match status {
            200..=399 => Outcome::Served,
            400..=499 => Outcome::Rejected,
            500 | 504 => Outcome::Failed,
            _ => Outcome::Refused,
        }
    }

    /// The outcome a pipeline error stands for (the same as the HTTP status
    /// it maps to): refusals before a version ran (rate limit, routing) and
    /// load or lifecycle refusals say nothing about the version; a missed
    /// deadline or an inference error are its failures.
    pub fn of_error(error: &ServeError) -> Outcome {
        use crate::runtime::RuntimeError;
        match error {
            ServeError::RateLimited { .. } => Outcome::Rejected,
            ServeError::Route(_) => Outcome::Refused,
            ServeError::Runtime { error, .. } => match error {
                RuntimeError::BadInput(_) => Outcome::Rejected,
                RuntimeError::QueueFull(_) | RuntimeError::Closed => Outcome::Refused,
                RuntimeError::Deadline(_) | RuntimeError::Inference(_) => Outcome::Failed,
            },
        }
    }

    /// The `status` label of the requests counter.
    pub fn status_class(self) -> &'static str {
        match self {
            Outcome::Served => "2xx",
            Outcome::Rejected => "4xx",
            Outcome::Refused | Outcome::Failed => "5xx",
        }
    }
}

/// Applies the rate limit of `model` to a caller (the user key, else the
/// client address).
pub fn check_rate(state: &AppState, model: &str, user: Option<&str>, peer: IpAddr) -> Result<(), ServeError> {
    let snapshot = state.repo.snapshot();
    // An unknown model is answered 404 by routing; it must not become a
    // metric label or a limiter.
    let Some(m) = snapshot.models.get(model) else {
        return Ok(());
    };
    state
        .guard
        .limits
        .check(model, &m.config.limits, user, peer)
        .map_err(|retry_after_secs| {
            metrics::counter!(names::RATE_LIMITED_TOTAL, "model" => model.to_string()).increment(1);
            ServeError::RateLimited {
                message: match user {
                    Some(u) => format!("user '{u}' is over the rate limit of model '{model}'"),
                    None => format!("client {peer} is over the rate limit of model '{model}'"),
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
    route(state, model, selector, caller)
}

/// Runs inputs (already checked against the signature) on the target
/// within `timeout`. An inference failure is logged here with its detail;
/// the error carries only what a client may see.
pub async fn run(target: &Target, inputs: Vec<Tensor>, timeout: Duration) -> Result<Vec<Tensor>, ServeError> {
    target.runtime.infer(inputs, Some(timeout)).await.map_err(|error| {
        if let crate::runtime::RuntimeError::Inference(detail) = &error {
            tracing::warn!(model = %target.model.name, version = target.version, error = %detail, "inference failed");
        }
        ServeError::Runtime {
            model: target.model.name.clone(),
            version: target.version,
            error,
        }
    })
}

/// Records the outcome of one predict request that reached a version: the
/// version's analysis window (what rollouts compare), its circuit breaker
/// and the metrics.
pub fn observe(state: &AppState, target: &Target, protocol: Protocol, outcome: Outcome, elapsed: Duration) {
    // Client errors say nothing about the version; refusals and failures
    // count as errors in its window.
    if outcome != Outcome::Rejected {
        target
            .runtime
            .window()
            .record(outcome == Outcome::Served, elapsed);
    }
    // The breaker counts only what the version itself did wrong; a refusal
    // (queue full, unloading) is load, not a fault.
    let breaker = match outcome {
        Outcome::Served => Some(true),
        Outcome::Failed => Some(false),
        Outcome::Rejected | Outcome::Refused => None,
    };
    let model = &target.model.name;
    state.guard.breakers.record(model, target.version, breaker);
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
    if let Some(id) = id.filter(|id| !id.is_empty()) {
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
