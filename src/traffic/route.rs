//! The routing decision: which loaded version answers a request.
//!
//! A *target* is the version chosen for one request together with the
//! reason (`x-route`). An explicit version or label wins; otherwise the
//! model's traffic policy decides (pin → allow-list → sticky hash or
//! random bucket → stable), or, without a policy, the default version.

use std::sync::Arc;

use crate::policy::Route;
use crate::repository::{ModelEntry, Snapshot, VersionState};
use crate::runtime::{Arrival, VersionRuntime};

/// What the request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionSelector<'a> {
    /// No version in the path: traffic decides.
    Default,
    /// `/versions/{n}`.
    Number(u64),
    /// `/labels/{l}` (V1) or a non-numeric `/versions/{l}` (V2).
    Label(&'a str),
}

impl<'a> VersionSelector<'a> {
    /// Parses a V2 path version: a number, else a label.
    pub fn from_path(segment: &'a str) -> VersionSelector<'a> {
        match segment.parse::<u64>() {
            Ok(n) => VersionSelector::Number(n),
            Err(_) => VersionSelector::Label(segment),
        }
    }
}

/// What routing may know about the caller.
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    /// The user key (header or V2 `parameters.user_id`).
    pub user: Option<&'a str>,
    /// The `x-model-version` pin header, if it parsed as a version.
    pub pin: Option<u64>,
}

/// The version that will answer a request.
pub struct Target {
    pub model: Arc<ModelEntry>,
    pub version: u64,
    pub runtime: Arc<VersionRuntime>,
    pub route: Route,
    /// Where a mirrored copy goes, when this request was sampled for shadowing.
    pub shadow: Option<(u64, Arc<VersionRuntime>)>,
    /// The request on its way to the version's queue (see
    /// [`VersionRuntime::arrival`]).
    pub arrival: Arrival,
    /// Nothing else is being served: a fast version runs this request at
    /// once instead of in its thread's turn batch (set by the serving
    /// layer).
    pub server_idle: bool,
}

/// Why no version could be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("unknown model '{0}'")]
    UnknownModel(String),
    #[error("unknown version {1} of model '{0}'")]
    UnknownVersion(String, u64),
    #[error("unknown version label '{1}' of model '{0}'")]
    UnknownLabel(String, String),
    /// (model, version, state)
    #[error("model '{0}' version {1} is not ready ({2})")]
    NotReady(String, u64, String),
    #[error("model '{0}' has no version ready to serve")]
    NoVersion(String),
    /// The model's own files are broken (model, reason).
    #[error("model '{0}' is unavailable: {1}")]
    Broken(String, String),
    /// The named version's circuit breaker is open (model, version, retry after seconds).
    #[error("model '{0}' version {1} is failing: its circuit breaker is open")]
    CircuitOpen(String, u64, u64),
}

/// Finds a model in the snapshot.
pub fn model<'s>(snapshot: &'s Snapshot, name: &str) -> Result<&'s Arc<ModelEntry>, RouteError> {
    let m = snapshot
        .models
        .get(name)
        .ok_or_else(|| RouteError::UnknownModel(name.to_string()))?;
    if let Some(reason) = &m.error {
        return Err(RouteError::Broken(name.to_string(), reason.clone()));
    }
    Ok(m)
}

/// The version number a selector names, without requiring it to be READY.
pub fn version_number(m: &ModelEntry, selector: VersionSelector<'_>) -> Result<(u64, Route), RouteError> {
    version_for(m, selector, Caller::default())
}

fn version_for(
    m: &ModelEntry,
    selector: VersionSelector<'_>,
    caller: Caller<'_>,
) -> Result<(u64, Route), RouteError> {
    match selector {
        VersionSelector::Number(v) => {
            if m.versions.contains_key(&v) {
                Ok((v, Route::Explicit))
            } else {
                Err(RouteError::UnknownVersion(m.name.clone(), v))
            }
        }
        VersionSelector::Label(l) => m
            .label(l)
            .map(|v| (v, Route::Label))
            .ok_or_else(|| RouteError::UnknownLabel(m.name.clone(), l.to_string())),
        VersionSelector::Default => match &m.policy {
            Some(p) => {
                let (v, route) = p.decide(caller.user, caller.pin, || fastrand::u32(..));
                if route == Route::Pin && !m.versions.contains_key(&v) {
                    return Err(RouteError::UnknownVersion(m.name.clone(), v));
                }
                Ok((v, route))
            }
            None => m
                .default_version()
                .map(|v| (v, Route::Stable))
                .ok_or_else(|| RouteError::NoVersion(m.name.clone())),
        },
    }
}

/// Chooses the READY version that answers a request (and, for versionless
/// requests, whether a copy goes to the shadow).
pub fn resolve(snapshot: &Snapshot, name: &str, selector: VersionSelector<'_>) -> Result<Target, RouteError> {
    route(snapshot, name, selector, Caller::default())
}

/// [`resolve`] with what is known about the caller.
pub fn route(
    snapshot: &Snapshot,
    name: &str,
    selector: VersionSelector<'_>,
    caller: Caller<'_>,
) -> Result<Target, RouteError> {
    route_with(snapshot, name, selector, caller, &Breakers::none())
}

/// What routing needs from the circuit breakers.
pub struct Breakers<'a> {
    /// May a request go to (model, version) now? (false while its breaker is open)
    pub permits: &'a dyn Fn(&str, u64) -> bool,
    /// `Retry-After` for a refused explicit request.
    pub retry_after_secs: u64,
}

impl Breakers<'static> {
    /// No breakers: every version is permitted.
    pub fn none() -> Breakers<'static> {
        Breakers {
            permits: &|_, _| true,
            retry_after_secs: 1,
        }
    }
}

/// [`route`] that respects circuit breakers: when the version the policy
/// chose has an open breaker, the request falls back to the stable (or
/// default) version with [`Route::Fallback`]; an explicit version or label
/// whose breaker is open is refused (503 + `Retry-After`). When the stable
/// version itself is the one failing there is nothing better, so it serves.
pub fn route_with(
    snapshot: &Snapshot,
    name: &str,
    selector: VersionSelector<'_>,
    caller: Caller<'_>,
    breakers: &Breakers<'_>,
) -> Result<Target, RouteError> {
    let m = model(snapshot, name)?;
    let (mut version, mut route) = version_for(m, selector, caller)?;
    // A version the policy chose that is not READY here (a fleet's
    // candidate this replica is still loading) serves from stable.
    let by_policy = matches!(route, Route::AllowList | Route::Sticky | Route::Weighted);
    if by_policy && !m.is_ready(version) {
        if let Some(stable) = m.policy.as_ref().map(|p| p.stable()).filter(|&s| s != version) {
            version = stable;
            route = Route::Fallback;
        }
    }
    if !(breakers.permits)(name, version) {
        match route {
            Route::Explicit | Route::Label => {
                return Err(RouteError::CircuitOpen(
                    name.to_string(),
                    version,
                    breakers.retry_after_secs,
                ))
            }
            _ => {
                let stable = m
                    .policy
                    .as_ref()
                    .map(|p| p.stable())
                    .or_else(|| m.default_version());
                if let Some(stable) = stable.filter(|&s| s != version) {
                    version = stable;
                    route = Route::Fallback;
                }
            }
        }
    }
    let runtime = ready_runtime(m, version)?;
    let shadow = match (&m.policy, selector) {
        (Some(p), VersionSelector::Default) => p
            .shadow_for(fastrand::u32(..))
            .filter(|&v| v != version)
            .and_then(|v| ready_runtime(m, v).ok().map(|r| (v, r))),
        _ => None,
    };
    Ok(Target {
        model: m.clone(),
        version,
        arrival: runtime.arrival(),
        runtime,
        route,
        shadow,
        server_idle: false,
    })
}

fn ready_runtime(m: &ModelEntry, version: u64) -> Result<Arc<VersionRuntime>, RouteError> {
    let entry = m
        .versions
        .get(&version)
        .ok_or_else(|| RouteError::NotReady(m.name.clone(), version, "not loaded".into()))?;
    match (&entry.state, &entry.runtime) {
        (VersionState::Ready, Some(runtime)) => Ok(runtime.clone()),
        (state, _) => Err(RouteError::NotReady(
            m.name.clone(),
            version,
            state.name().to_string(),
        )),
    }
}
