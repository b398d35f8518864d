//! Protection that refuses early: per-user rate limits and per-version
//! circuit breakers. Pure state, no HTTP types: the front ends ask it before
//! a request runs and report the outcome after.
//!
//! A request over a limit is answered at once (429 or 503 with
//! `Retry-After`) instead of waiting in a queue, so memory stays bounded
//! whatever the offered load.

pub mod breaker;
pub mod rate;

use std::sync::Arc;
use std::time::Duration;

pub use breaker::{BreakerConfig, Breakers, CircuitState};
pub use rate::{LimitsConfig, RateKey, RateLimits, RateSpec};

/// How the guard is set up (from the command line).
#[derive(Debug, Clone)]
pub struct GuardSettings {
    /// Peers whose user key is trusted for rate limits (proxies that set
    /// the user header themselves); from anyone else the limit counts per
    /// client address.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The global per-user rate limit (models may set their own).
    pub rate_limit: Option<RateSpec>,
    /// Requests a user may send at once under `rate_limit`.
    pub rate_limit_burst: Option<u32>,
    /// Keys (users, client addresses) remembered per limiter.
    pub rate_limit_keys: usize,
    /// When breakers open and for how long.
    pub breaker: BreakerConfig,
}

/// The protection state of one server.
pub struct Guard {
    pub limits: RateLimits,
    /// See [`GuardSettings::trusted_proxies`].
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Shared with the rollout controller, which aborts on an open breaker.
    pub breakers: Arc<Breakers>,
}

impl Guard {
    /// Limits as the settings say.
    pub fn new(settings: &GuardSettings) -> Guard {
        let breaker = BreakerConfig {
            open_for: settings.breaker.open_for.max(Duration::from_secs(1)),
            ..settings.breaker
        };
        Guard {
            trusted_proxies: settings.trusted_proxies.clone(),
            limits: RateLimits::new(
                settings.rate_limit,
                settings.rate_limit_burst,
                settings.rate_limit_keys,
            ),
            breakers: Arc::new(Breakers::new(breaker)),
        }
    }

    /// The rate key of a request from `peer` carrying `user`: the user key
    /// only when the peer is a trusted proxy, else the peer's address.
    pub fn rate_key<'a>(&self, user: Option<&'a str>, peer: std::net::IpAddr) -> RateKey<'a> {
        match user {
            Some(u) if self.trusted_proxies.iter().any(|net| net.contains(&peer)) => RateKey::User(u),
            _ => RateKey::Address(peer),
        }
    }
}
