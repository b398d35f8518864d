//! A validated *policy*: a spec checked against the loaded versions, with
//! its lookups precomputed (allow-list set, hash seed, shadow threshold),
//! and the routing decision it makes for a request without an explicit
//! version: pin → allow-list → sticky hash or random bucket → stable. Only a
//! `Policy` can be installed, so an invalid plan never reaches the request
//! path.

use std::collections::HashSet;

use xxhash_rust::xxh3::{xxh3_64_with_seed, Xxh3DefaultBuilder};

use super::spec::{PinMode, PolicySpec, POLICY_LABELS};
use super::weight::FULL_WEIGHT;

/// Why a version was chosen for a request (`x-route`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Explicit,
    Label,
    Pin,
    AllowList,
    Sticky,
    Weighted,
    Stable,
    Fallback,
}

impl Route {
    /// The `x-route` header value.
    pub fn name(self) -> &'static str {
        match self {
            Route::Explicit => "explicit",
            Route::Label => "label",
            Route::Pin => "pin",
            Route::AllowList => "allow-list",
            Route::Sticky => "sticky",
            Route::Weighted => "weighted",
            Route::Stable => "stable",
            Route::Fallback => "fallback",
        }
    }
}

/// Why a policy was refused; the old one stays in force.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidPolicy {
    #[error("{role} version {version} is not READY")]
    NotReady { role: String, version: u64 },
    #[error("candidate version {0} is also the stable version")]
    CandidateIsStable(u64),
    #[error("allow_list needs a candidate")]
    AllowListWithoutCandidate,
    #[error("shadow rate {0} is outside 0..=1")]
    ShadowRate(f64),
    #[error("shadow version {0} is the stable version")]
    ShadowIsStable(u64),
    #[error("label '{0}' is maintained by the policy itself")]
    ReservedLabel(String),
    #[error("label '{0}' must be a non-numeric name")]
    NumericLabel(String),
}

/// The fixed seed of the sticky hash. Changing it moves users between
/// versions on upgrade, so it never changes.
const HASH_SEED: u64 = 0x5377_6974_6368_7964; // "Switchyd"

/// A validated policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    spec: PolicySpec,
    /// xxh3 is much cheaper than SipHash for short keys; HashDoS is not a
    /// concern for a list the operator writes.
    allow: HashSet<String, Xxh3DefaultBuilder>,
    /// The hash seed of this policy's salt, computed once.
    seed: u64,
    /// Shadow sampling threshold out of u32::MAX.
    shadow_threshold: u64,
    /// Built by [`Policy::tolerant`]: only the stable version had to be READY.
    tolerant: bool,
}

impl Policy {
    /// Validates `spec`; `ready(v)` tells whether version `v` is READY.
    /// A candidate with weight 0 and no allow-list is dropped (the plan
    /// degrades to "all on stable").
    pub fn new(mut spec: PolicySpec, ready: impl Fn(u64) -> bool) -> Result<Policy, InvalidPolicy> {
        let need_ready = |role: &str, version: u64| {
            if ready(version) {
                Ok(())
            } else {
                Err(InvalidPolicy::NotReady {
                    role: role.to_string(),
                    version,
                })
            }
        };
        need_ready("stable", spec.stable)?;
        if let Some(c) = &spec.candidate {
            if c.version == spec.stable {
                return Err(InvalidPolicy::CandidateIsStable(c.version));
            }
            need_ready("candidate", c.version)?;
        } else if !spec.allow_list.is_empty() {
            return Err(InvalidPolicy::AllowListWithoutCandidate);
        }
        if let Some(s) = &spec.shadow {
            if !(0.0..=1.0).contains(&s.rate) || s.rate.is_nan() {
                return Err(InvalidPolicy::ShadowRate(s.rate));
            }
            if s.version == spec.stable {
                return Err(InvalidPolicy::ShadowIsStable(s.version));
            }
            need_ready("shadow", s.version)?;
        }
        if let Some(p) = spec.preview {
            need_ready("preview", p)?;
        }
        for (label, &v) in &spec.labels {
            if POLICY_LABELS.contains(&label.as_str()) {
                return Err(InvalidPolicy::ReservedLabel(label.clone()));
            }
            if label.is_empty() || label.parse::<u64>().is_ok() {
                return Err(InvalidPolicy::NumericLabel(label.clone()));
            }
            need_ready(&format!("label '{label}'"), v)?;
        }
        if spec
            .candidate
            .as_ref()
            .is_some_and(|c| c.weight.is_zero() && spec.allow_list.is_empty())
            && spec.pins == PinMode::Off
        {
            spec.candidate = None;
        }
        let allow = spec.allow_list.iter().cloned().collect();
        let seed = salt_seed(&spec.salt);
        let shadow_threshold = spec
            .shadow
            .as_ref()
            .map(|s| (s.rate * u32::MAX as f64) as u64)
            .unwrap_or(0);
        Ok(Policy {
            spec,
            allow,
            seed,
            shadow_threshold,
            tolerant: false,
        })
    }

    /// Validates `spec` as a replica of a fleet takes it: the cluster
    /// decided it, so only the stable version must be READY here. A
    /// candidate, shadow, preview or label version this replica has not
    /// loaded yet is tolerated: routing sends its traffic to stable
    /// (`x-route: fallback`) until it is READY, and readiness does not
    /// wait for it.
    pub fn tolerant(spec: PolicySpec, ready: impl Fn(u64) -> bool) -> Result<Policy, InvalidPolicy> {
        let stable = spec.stable;
        let mut policy = Policy::new(spec, |v| v != stable || ready(v))?;
        policy.tolerant = true;
        Ok(policy)
    }

    /// The spec this policy was built from (after degradation).
    pub fn spec(&self) -> &PolicySpec {
        &self.spec
    }

    /// The stable version.
    pub fn stable(&self) -> u64 {
        self.spec.stable
    }

    /// The version a label names under this policy.
    pub fn label(&self, label: &str) -> Option<u64> {
        match label {
            "stable" => Some(self.spec.stable),
            "candidate" => self.spec.candidate.as_ref().map(|c| c.version),
            "preview" => self.spec.preview,
            other => self.spec.labels.get(other).copied(),
        }
    }

    /// Versions that live traffic can reach (stable, candidate): these must
    /// be READY for the pod to be ready.
    pub fn routed(&self) -> Vec<u64> {
        let mut v = vec![self.spec.stable];
        if let Some(c) = &self.spec.candidate {
            if !c.weight.is_zero() || !self.allow.is_empty() || self.spec.pins != PinMode::Off {
                v.push(c.version);
            }
        }
        v
    }

    /// Versions that must be READY for the replica to be ready: the routed
    /// ones, or only the stable version for a [tolerant](Policy::tolerant)
    /// policy.
    pub fn required(&self) -> Vec<u64> {
        if self.tolerant {
            vec![self.spec.stable]
        } else {
            self.routed()
        }
    }

    /// Every version the policy names (routed, shadow, preview, labels):
    /// none of them may be unloaded.
    pub fn referenced(&self) -> Vec<u64> {
        let mut v = vec![self.spec.stable];
        v.extend(self.spec.candidate.as_ref().map(|c| c.version));
        v.extend(self.spec.shadow.as_ref().map(|s| s.version));
        v.extend(self.spec.preview);
        v.extend(self.spec.labels.values().copied());
        v.sort_unstable();
        v.dedup();
        v
    }

    /// The decision for a request without an explicit version:
    /// pin → allow-list → sticky hash or random bucket → stable.
    /// `is_ready(v)` tells whether a pinned version can serve.
    pub fn decide(
        &self,
        user: Option<&str>,
        pin: Option<u64>,
        random_bucket: impl FnOnce() -> u32,
    ) -> (u64, Route) {
        if let Some(p) = pin {
            let allowed = match self.spec.pins {
                PinMode::Off => false,
                PinMode::All => true,
                PinMode::AllowListed => user.is_some_and(|u| self.allow.contains(u)),
            };
            if allowed {
                return (p, Route::Pin);
            }
        }
        let Some(c) = &self.spec.candidate else {
            return (self.spec.stable, Route::Stable);
        };
        if let Some(u) = user {
            if self.allow.contains(u) {
                return (c.version, Route::AllowList);
            }
        }
        if c.weight.is_zero() {
            return (self.spec.stable, Route::Stable);
        }
        let (bucket, route) = match user {
            Some(u) if self.spec.sticky => (bucket_with_seed(self.seed, u), Route::Sticky),
            _ => (random_bucket() % FULL_WEIGHT, Route::Weighted),
        };
        if bucket < c.weight.bp() {
            (c.version, route)
        } else {
            (self.spec.stable, Route::Stable)
        }
    }

    /// True when this request should be mirrored to the shadow
    /// (`sample` uniform in u32).
    pub fn shadow_for(&self, sample: u32) -> Option<u64> {
        let s = self.spec.shadow.as_ref()?;
        ((sample as u64) < self.shadow_threshold || s.rate >= 1.0).then_some(s.version)
    }
}

/// The sticky bucket of a user under a salt, in 0..10000. Fixed across
/// processes, machines and releases: xxh3-64 of the user key, seeded with
/// xxh3-64 of the salt under a constant seed.
pub fn bucket(salt: &str, user: &str) -> u32 {
    bucket_with_seed(salt_seed(salt), user)
}

fn salt_seed(salt: &str) -> u64 {
    xxh3_64_with_seed(salt.as_bytes(), HASH_SEED)
}

fn bucket_with_seed(seed: u64, user: &str) -> u32 {
    (xxh3_64_with_seed(user.as_bytes(), seed) % FULL_WEIGHT as u64) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::spec::{CandidateSpec, ShadowSpec};
    use crate::policy::weight::Weight;
    use std::collections::BTreeMap;

    fn ready(_: u64) -> bool {
        true
    }

    fn w(bp: u32) -> Weight {
        Weight::from_bp(bp.into()).unwrap()
    }

    fn canary(weight: u32, salt: &str) -> Policy {
        let mut spec = PolicySpec::pinned(1);
        spec.candidate = Some(CandidateSpec {
            version: 2,
            weight: w(weight),
        });
        spec.salt = salt.into();
        Policy::new(spec, ready).unwrap()
    }

    fn users(n: usize) -> Vec<String> {
        let mut rng = fastrand::Rng::with_seed(7);
        (0..n).map(|_| format!("user-{}", rng.u64(..))).collect()
    }

    #[test]
    fn decision_order_is_pin_allow_list_hash_stable() {
        let mut spec = PolicySpec::pinned(1);
        spec.candidate = Some(CandidateSpec {
            version: 2,
            weight: w(0),
        });
        spec.allow_list = vec!["alice".into()];
        spec.pins = PinMode::AllowListed;
        let p = Policy::new(spec.clone(), ready).unwrap();
        // pin honoured for allow-listed users only
        assert_eq!(p.decide(Some("alice"), Some(3), || 0), (3, Route::Pin));
        assert_eq!(p.decide(Some("bob"), Some(3), || 0), (1, Route::Stable));
        // allow-list beats weight 0
        assert_eq!(p.decide(Some("alice"), None, || 0), (2, Route::AllowList));
        assert_eq!(p.decide(None, None, || 0), (1, Route::Stable));
        // pins = all
        spec.pins = PinMode::All;
        let p = Policy::new(spec.clone(), ready).unwrap();
        assert_eq!(p.decide(Some("bob"), Some(3), || 0), (3, Route::Pin));
        assert_eq!(p.decide(None, Some(3), || 0), (3, Route::Pin));
        // pins = off
        spec.pins = PinMode::Off;
        let p = Policy::new(spec, ready).unwrap();
        assert_eq!(p.decide(Some("alice"), Some(3), || 0), (2, Route::AllowList));
        // weight 10000: everyone sticky to the candidate; anonymous weighted
        let p = canary(FULL_WEIGHT, "s");
        assert_eq!(p.decide(Some("carol"), None, || 0), (2, Route::Sticky));
        assert_eq!(p.decide(None, None, || 9999), (2, Route::Weighted));
        // weight 1: anonymous bucket decides
        let p = canary(1, "s");
        assert_eq!(p.decide(None, None, || 0), (2, Route::Weighted));
        assert_eq!(p.decide(None, None, || 1), (1, Route::Stable));
        // sticky off: users are bucketed at random too
        let mut spec = PolicySpec::pinned(1);
        spec.candidate = Some(CandidateSpec {
            version: 2,
            weight: w(5000),
        });
        spec.sticky = false;
        let p = Policy::new(spec, ready).unwrap();
        assert_eq!(p.decide(Some("dave"), None, || 4999), (2, Route::Weighted));
        assert_eq!(p.decide(Some("dave"), None, || 5000), (1, Route::Stable));
    }

    #[test]
    fn raising_the_weight_only_moves_users_to_the_candidate() {
        let users = users(100_000);
        let weights = [0, 100, 500, 1000, 2500, 5000, 7500, 9900, 10_000];
        let mut previous: Option<Vec<bool>> = None;
        for w in weights {
            let p = canary(w, "rollout-7");
            let on_candidate: Vec<bool> = users
                .iter()
                .map(|u| p.decide(Some(u), None, || unreachable!()).0 == 2)
                .collect();
            if let Some(prev) = &previous {
                for (i, (&was, &is)) in prev.iter().zip(&on_candidate).enumerate() {
                    assert!(
                        !was || is,
                        "user {} left the candidate when the weight rose to {w}",
                        users[i]
                    );
                }
            }
            previous = Some(on_candidate);
        }
    }

    #[test]
    fn candidate_share_is_within_half_a_point_of_the_weight() {
        let users = users(100_000);
        for w in [100u32, 500, 5000, 9900] {
            let p = canary(w, "accuracy");
            let hits = users
                .iter()
                .filter(|u| p.decide(Some(u), None, || unreachable!()).0 == 2)
                .count();
            let share = hits as f64 / users.len() as f64 * 100.0;
            let want = w as f64 / 100.0;
            assert!((share - want).abs() <= 0.5, "weight {want}%: got {share:.3}%");
        }
    }

    #[test]
    fn same_salt_and_user_give_the_same_version_everywhere() {
        let a = canary(3000, "salt-a");
        let b = canary(3000, "salt-a");
        for u in users(10_000) {
            assert_eq!(a.decide(Some(&u), None, || 0), b.decide(Some(&u), None, || 0));
        }
        // fixed across releases: pinned values of the hash
        assert_eq!(bucket("salt-a", "alice"), bucket("salt-a", "alice"));
        assert_eq!(bucket("", "alice"), PINNED_ALICE);
        // a new salt reshuffles users
        let c = canary(3000, "salt-b");
        let moved = users(10_000)
            .iter()
            .filter(|u| a.decide(Some(u), None, || 0) != c.decide(Some(u), None, || 0))
            .count();
        assert!(moved > 1000, "a new salt reshuffles users ({moved} moved)");
    }

    /// xxh3-64 of "alice" seeded with xxh3-64("", seed 0x5377697463687964),
    /// mod 10000, computed
    /// independently with Python's `xxhash` package and pinned, so that a
    /// dependency upgrade that changed the hash would fail here.
    const PINNED_ALICE: u32 = 2665;

    /// (salt, user, bucket): golden vectors computed outside this crate with
    /// Python's `xxhash` 4.1.0 (the C reference libxxhash 0.8.4):
    ///
    /// ```python
    /// import xxhash
    /// SEED = 0x5377697463687964
    /// def bucket(salt, user):
    ///     s = xxhash.xxh3_64_intdigest(salt.encode(), seed=SEED)
    ///     return xxhash.xxh3_64_intdigest(user.encode(), seed=s) % 10000
    /// ```
    ///
    /// They cover every xxh3 input size class that matters here (empty,
    /// short, over 240 bytes for both the salt and the user) and UTF-8.
    /// Every replica of a fleet, whatever its CPU (the SIMD path differs),
    /// must put a user in the same bucket, and an upgrade must not move
    /// users: a change here is a breaking change.
    const GOLDEN: &[(&str, &str, u32)] = &[
        ("", "alice", 2665),
        ("rollout-7", "alice", 9748),
        ("rollout-7", "bob", 8965),
        ("rollout-1-3f9a2c1e", "user-42", 8364),
        ("salt-a", "", 8084),
        ("ünïcødé", "用户", 2874),
    ];

    #[test]
    fn buckets_match_the_reference_implementation() {
        for &(salt, user, want) in GOLDEN {
            assert_eq!(bucket(salt, user), want, "bucket({salt:?}, {user:?})");
        }
        // long inputs: 300-byte user, 241-byte salt
        assert_eq!(bucket("rollout-7", &"x".repeat(300)), 1468);
        assert_eq!(bucket(&"s".repeat(241), "user-1"), 5785);
        // the policy's decision uses the same bucket
        let p = canary(9749, "rollout-7");
        assert_eq!(p.decide(Some("alice"), None, || 0), (2, Route::Sticky));
        let p = canary(9748, "rollout-7");
        assert_eq!(p.decide(Some("alice"), None, || 0), (1, Route::Stable));
    }

    #[test]
    fn invalid_policies_are_rejected() {
        let only = |ok: &'static [u64]| move |v: u64| ok.contains(&v);
        let mut spec = PolicySpec::pinned(1);
        // a weight above 100% cannot even be written
        let over = serde_json::json!({"stable": 1, "candidate": {"version": 2, "weight": "100.01%"}});
        assert!(serde_json::from_value::<PolicySpec>(over).is_err());
        spec.candidate = Some(CandidateSpec {
            version: 2,
            weight: w(100),
        });
        assert!(Policy::new(spec.clone(), only(&[1]))
            .unwrap_err()
            .to_string()
            .contains("candidate version 2"));
        spec.candidate = Some(CandidateSpec {
            version: 1,
            weight: w(100),
        });
        assert!(Policy::new(spec.clone(), ready).is_err());
        let mut spec = PolicySpec::pinned(1);
        spec.shadow = Some(ShadowSpec {
            version: 1,
            rate: 0.5,
        });
        assert!(Policy::new(spec.clone(), ready)
            .unwrap_err()
            .to_string()
            .contains("shadow"));
        spec.shadow = Some(ShadowSpec {
            version: 2,
            rate: 1.5,
        });
        assert!(Policy::new(spec.clone(), ready)
            .unwrap_err()
            .to_string()
            .contains("rate"));
        let mut spec = PolicySpec::pinned(1);
        spec.labels.insert("gold".into(), 9);
        assert!(Policy::new(spec.clone(), only(&[1]))
            .unwrap_err()
            .to_string()
            .contains("gold"));
        spec.labels = BTreeMap::from([("stable".to_string(), 1)]);
        assert!(Policy::new(spec, ready).is_err());
        assert!(Policy::new(PolicySpec::pinned(4), only(&[1]))
            .unwrap_err()
            .to_string()
            .contains("stable version 4"));
    }

    #[test]
    fn shadow_sampling_follows_the_rate() {
        let mut spec = PolicySpec::pinned(1);
        spec.shadow = Some(ShadowSpec {
            version: 2,
            rate: 0.25,
        });
        let p = Policy::new(spec, ready).unwrap();
        let mut rng = fastrand::Rng::with_seed(3);
        let hits = (0..100_000)
            .filter(|_| p.shadow_for(rng.u32(..)).is_some())
            .count();
        assert!((hits as f64 / 100_000.0 - 0.25).abs() < 0.01, "{hits}");
        assert_eq!(p.shadow_for(u32::MAX), None);
        let mut spec = PolicySpec::pinned(1);
        spec.shadow = Some(ShadowSpec {
            version: 2,
            rate: 1.0,
        });
        let p = Policy::new(spec, ready).unwrap();
        assert_eq!(p.shadow_for(u32::MAX), Some(2));
    }
}
