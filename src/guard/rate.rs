//! Per-user rate limits (governor, GCRA).
//!
//! A *rate key* is whom a limit counts against: a user key (the user header
//! or V2 `parameters.user_id`) when the caller decided to trust it, else the
//! client's address, so a caller cannot buy a new budget by renaming itself
//! (IPv6 addresses count per /64, the block one host usually holds). User
//! keys are stored as 128-bit hashes, so every key takes the same few bytes
//! whatever the client sent: the limiters are bounded in bytes as well as in
//! keys. A model
//! with `[limits] rate_limit` in its config.toml has its own limiter;
//! every other model uses the global one (`--rate-limit`), if set.
//!
//! Memory is bounded: a sweeper drops keys whose bucket is full again
//! (governor's `retain_recent`), and while a limiter holds `max_keys` keys
//! new callers share one overflow bucket instead of adding keys.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};

/// A rate such as `100/60s`: `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RateSpec {
    pub count: u32,
    pub period: Duration,
}

impl std::str::FromStr for RateSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<RateSpec, String> {
        let bad = || format!("'{s}' is not a rate; write it as <count>/<period>, e.g. 100/60s or 10/1s");
        let (count, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        // "100/s" reads as "100/1s".
        let period = if period.starts_with(|c: char| c.is_ascii_digit()) {
            humantime::parse_duration(period).map_err(|_| bad())?
        } else {
            humantime::parse_duration(&format!("1{period}")).map_err(|_| bad())?
        };
        if count == 0 || period.is_zero() {
            return Err(format!(
                "rate '{s}' must allow at least one request in a non-zero period"
            ));
        }
        Ok(RateSpec { count, period })
    }
}

impl TryFrom<String> for RateSpec {
    type Error = String;
    fn try_from(s: String) -> Result<RateSpec, String> {
        s.parse()
    }
}

impl From<RateSpec> for String {
    fn from(r: RateSpec) -> String {
        format!("{}/{}", r.count, humantime::format_duration(r.period))
    }
}

impl RateSpec {
    /// The governor quota: one request replenished every `period / count`,
    /// up to `burst` (default `count`) at once.
    pub fn quota(&self, burst: Option<u32>) -> Quota {
        let every = (self.period / self.count).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(burst.unwrap_or(self.count)).unwrap_or(NonZeroU32::MIN);
        Quota::with_period(every)
            .expect("a non-zero period")
            .allow_burst(burst)
    }
}

/// `[limits]` in a model's config.toml.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Requests per user (or per client IP without a user key), e.g. "10/1s".
    pub rate_limit: Option<RateSpec>,
    /// Requests a user may send at once (default: the rate's count).
    pub rate_limit_burst: Option<u32>,
}

/// Whom a request's limit counts against, as the caller decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKey<'a> {
    /// A user key the caller trusts (set by a trusted hop).
    User(&'a str),
    /// The client's address.
    Address(IpAddr),
}

/// Whom a limit counts against, as stored: fixed size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    User(u128),
    Ip(IpAddr),
    /// Every new caller while the limiter is full of keys.
    Overflow,
}

impl Key {
    fn of(key: RateKey<'_>) -> Key {
        match key {
            RateKey::User(u) => Key::User(xxhash_rust::xxh3::xxh3_128(u.as_bytes())),
            RateKey::Address(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Ip(IpAddr::V4(v4)),
                None => Key::Ip(IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())),
            },
            RateKey::Address(ip) => Key::Ip(ip),
        }
    }
}

struct Limiter {
    spec: (RateSpec, Option<u32>),
    limiter: DefaultKeyedRateLimiter<Key>,
}

impl Limiter {
    fn new(spec: RateSpec, burst: Option<u32>) -> Limiter {
        Limiter {
            spec: (spec, burst),
            limiter: DefaultKeyedRateLimiter::keyed(spec.quota(burst)),
        }
    }

    /// `Err(wait)` when the key is over its limit.
    fn check(&self, key: Key, max_keys: usize) -> Result<(), Duration> {
        let key = if self.limiter.len() >= max_keys {
            Key::Overflow
        } else {
            key
        };
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

/// The global limiter and one per model with `[limits]`.
pub struct RateLimits {
    global: Option<Limiter>,
    models: RwLock<HashMap<String, Arc<Limiter>>>,
    max_keys: usize,
}

impl RateLimits {
    /// Limits with an optional global rate; at most `max_keys` keys per limiter.
    pub fn new(global: Option<RateSpec>, burst: Option<u32>, max_keys: usize) -> RateLimits {
        RateLimits {
            global: global.map(|g| Limiter::new(g, burst)),
            models: RwLock::new(HashMap::new()),
            max_keys: max_keys.max(1),
        }
    }

    /// Counts one request of `key` to `model`, whose config.toml says
    /// `limits`. `Err(seconds)` is the `Retry-After` of a refused request
    /// (at least 1).
    pub fn check(&self, model: &str, limits: &LimitsConfig, key: RateKey<'_>) -> Result<(), u64> {
        let key = Key::of(key);
        let result = match limits.rate_limit {
            Some(spec) => self
                .model_limiter(model, spec, limits.rate_limit_burst)
                .check(key, self.max_keys),
            None => match &self.global {
                Some(g) => g.check(key, self.max_keys),
                None => return Ok(()),
            },
        };
        result.map_err(|wait| wait.as_secs_f64().ceil().max(1.0) as u64)
    }

    fn model_limiter(&self, model: &str, spec: RateSpec, burst: Option<u32>) -> Arc<Limiter> {
        if let Some(l) = self.models.read().get(model) {
            if l.spec == (spec, burst) {
                return l.clone();
            }
        }
        // First request under this model's (possibly changed) limits.
        let mut models = self.models.write();
        let l = models
            .entry(model.to_string())
            .or_insert_with(|| Arc::new(Limiter::new(spec, burst)));
        if l.spec != (spec, burst) {
            *l = Arc::new(Limiter::new(spec, burst));
        }
        l.clone()
    }

    /// Drops keys whose buckets are full again and limiters of models
    /// for which `keep` is false.
    pub fn sweep(&self, mut keep: impl FnMut(&str) -> bool) {
        if let Some(g) = &self.global {
            g.sweep();
        }
        self.models.write().retain(|m, _| keep(m));
        for l in self.models.read().values() {
            l.sweep();
        }
    }

    /// Keys held by all limiters.
    pub fn keys(&self) -> usize {
        let models: usize = self.models.read().values().map(|l| l.limiter.len()).sum();
        models + self.global.as_ref().map(|g| g.limiter.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn key(user: Option<&str>, ip: IpAddr) -> RateKey<'_> {
        match user {
            Some(u) => RateKey::User(u),
            None => RateKey::Address(ip),
        }
    }

    #[test]
    fn rates_parse() {
        let r: RateSpec = "100/60s".parse().unwrap();
        assert_eq!((r.count, r.period), (100, Duration::from_secs(60)));
        let r: RateSpec = "10/s".parse().unwrap();
        assert_eq!((r.count, r.period), (10, Duration::from_secs(1)));
        let r: RateSpec = "5/1m".parse().unwrap();
        assert_eq!(r.period, Duration::from_secs(60));
        assert!("100".parse::<RateSpec>().is_err());
        assert!("0/1s".parse::<RateSpec>().is_err());
        assert!("ten/1s".parse::<RateSpec>().is_err());
    }

    #[test]
    fn users_have_their_own_buckets_and_anonymous_callers_share_their_ip() {
        let limits = RateLimits::new(Some("2/60s".parse().unwrap()), None, 100);
        let none = LimitsConfig::default();
        assert!(limits.check("m", &none, key(Some("a"), IP)).is_ok());
        assert!(limits.check("m", &none, key(Some("a"), IP)).is_ok());
        let retry = limits.check("m", &none, key(Some("a"), IP)).unwrap_err();
        assert!((1..=30).contains(&retry), "{retry}");
        assert!(limits.check("m", &none, key(Some("b"), IP)).is_ok());
        assert!(limits.check("m", &none, key(None, IP)).is_ok());
        assert!(limits.check("m", &none, key(None, IP)).is_ok());
        assert!(limits.check("m", &none, key(None, IP)).is_err());
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
        assert!(limits.check("m", &none, key(None, other)).is_ok());
    }

    #[test]
    fn a_model_limit_replaces_the_global_one() {
        let limits = RateLimits::new(None, None, 100);
        let own = LimitsConfig {
            rate_limit: Some("1/60s".parse().unwrap()),
            rate_limit_burst: Some(2),
        };
        assert!(limits
            .check("free", &LimitsConfig::default(), key(Some("a"), IP))
            .is_ok());
        assert!(limits.check("m", &own, key(Some("a"), IP)).is_ok());
        assert!(limits.check("m", &own, key(Some("a"), IP)).is_ok());
        assert!(limits.check("m", &own, key(Some("a"), IP)).is_err());
    }

    #[test]
    fn ipv6_clients_count_per_64_block() {
        let limits = RateLimits::new(Some("1/60s".parse().unwrap()), None, 100);
        let none = LimitsConfig::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(limits.check("m", &none, RateKey::Address(a)).is_ok());
        assert!(limits.check("m", &none, RateKey::Address(b)).is_err(), "same /64");
        assert!(
            limits.check("m", &none, RateKey::Address(c)).is_ok(),
            "another /64"
        );
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(limits.check("m", &none, RateKey::Address(mapped)).is_ok());
        assert!(
            limits.check("m", &none, RateKey::Address(v4)).is_err(),
            "an IPv4-mapped address is that IPv4 address"
        );
    }

    #[test]
    fn keys_are_bounded() {
        let limits = RateLimits::new(Some("1000/1s".parse().unwrap()), None, 50);
        let none = LimitsConfig::default();
        for i in 0..10_000 {
            let _ = limits.check("m", &none, key(Some(&format!("user-{i}")), IP));
        }
        assert!(limits.keys() <= 51, "{} keys", limits.keys());
        std::thread::sleep(Duration::from_millis(20));
        limits.sweep(|_| true);
        assert!(
            limits.keys() <= 1,
            "full buckets are forgotten; {} keys",
            limits.keys()
        );
    }
}
