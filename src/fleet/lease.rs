//! Leader election over a `coordination.k8s.io/v1` Lease, the protocol of
//! client-go's `leaderelection`, as a pure [`Elector`]: each round a
//! candidate reads the Lease and asks the elector what to write; the write
//! is a compare-and-swap on the resourceVersion it read, so of two
//! candidates at most one wins.
//!
//! Expiry is judged by the *local* clock: a Lease held by someone else is
//! valid until `lease_duration` has passed since this candidate last saw
//! the record change (so clock skew between machines does not matter, only
//! their rates). A holder leads while its last successful renew is younger
//! than `renew_deadline`; it stops acting the moment that passes, or as soon
//! as it reads someone else's name in the Lease. Releasing writes an empty
//! holder, which any candidate may take at once.

use std::time::{Duration, Instant, SystemTime};

/// The fields of a Lease the protocol reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    /// The holder; `None` or empty when released.
    pub holder: Option<String>,
    pub lease_duration_secs: i32,
    pub acquire_time: Option<SystemTime>,
    pub renew_time: Option<SystemTime>,
    pub transitions: i32,
}

impl LeaseRecord {
    /// The holder's name, if any.
    pub fn holder(&self) -> Option<&str> {
        self.holder.as_deref().filter(|h| !h.is_empty())
    }
}

/// The three durations of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timings {
    /// How long a non-holder waits after the last change it saw.
    pub lease_duration: Duration,
    /// How long a holder keeps acting without a successful renew.
    pub renew_deadline: Duration,
    /// How often candidates try (and the holder renews).
    pub retry_period: Duration,
}

impl Timings {
    /// client-go's defaults, also Argo Rollouts': 15 s, 10 s, 2 s.
    pub const PRODUCTION: Timings = Timings {
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    };

    /// Checks `lease_duration > renew_deadline > 1.2 × retry_period`.
    pub fn check(&self) -> Result<(), String> {
        if self.lease_duration <= self.renew_deadline {
            return Err(format!(
                "the lease duration {:?} must be longer than the renew deadline {:?}",
                self.lease_duration, self.renew_deadline
            ));
        }
        if self.renew_deadline.as_secs_f64() <= 1.2 * self.retry_period.as_secs_f64() {
            return Err(format!(
                "the renew deadline {:?} must be longer than 1.2 × the retry period {:?}",
                self.renew_deadline, self.retry_period
            ));
        }
        Ok(())
    }
}

/// What a candidate does this round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Write this record, with the resourceVersion just read.
    Write(LeaseRecord),
    /// Someone else holds a valid Lease.
    Wait { holder: String },
}

/// One candidate's side of the protocol.
#[derive(Debug, Clone)]
pub struct Elector {
    identity: String,
    timings: Timings,
    /// The record last read (or written), and when it last changed by the
    /// local clock.
    observed: Option<LeaseRecord>,
    observed_at: Option<Instant>,
    /// When this candidate last wrote the Lease as its holder.
    renewed_at: Option<Instant>,
}

impl Elector {
    /// A candidate called `identity` (the pod name).
    pub fn new(identity: impl Into<String>, timings: Timings) -> Elector {
        Elector {
            identity: identity.into(),
            timings,
            observed: None,
            observed_at: None,
            renewed_at: None,
        }
    }

    /// This candidate's name.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The timings.
    pub fn timings(&self) -> Timings {
        self.timings
    }

    fn observe(&mut self, current: Option<&LeaseRecord>, now: Instant) {
        if current != self.observed.as_ref() {
            self.observed = current.cloned();
            self.observed_at = Some(now);
        }
    }

    /// Decides what to do with the Lease as read now (`None`: it does not
    /// exist). `wall` is the time written into the record.
    pub fn attempt(&mut self, current: Option<&LeaseRecord>, now: Instant, wall: SystemTime) -> Attempt {
        self.observe(current, now);
        if let Some(holder) = current.and_then(|r| r.holder()).filter(|h| *h != self.identity) {
            // someone else's lease stays valid for lease_duration after
            // the last change this candidate saw
            let fresh = self
                .observed_at
                .is_some_and(|t| now.duration_since(t) < self.timings.lease_duration);
            if fresh {
                self.renewed_at = None;
                return Attempt::Wait {
                    holder: holder.to_string(),
                };
            }
        }
        let ours = current.and_then(|r| r.holder()) == Some(self.identity.as_str());
        let transitions = current.map_or(0, |r| r.transitions);
        Attempt::Write(LeaseRecord {
            holder: Some(self.identity.clone()),
            lease_duration_secs: self.timings.lease_duration.as_secs_f64().ceil() as i32,
            acquire_time: if ours {
                current.and_then(|r| r.acquire_time).or(Some(wall))
            } else {
                Some(wall)
            },
            renew_time: Some(wall),
            transitions: if ours || current.is_none() {
                transitions
            } else {
                transitions + 1
            },
        })
    }

    /// The write of `record` succeeded.
    pub fn written(&mut self, record: LeaseRecord, now: Instant) {
        self.observed = Some(record);
        self.observed_at = Some(now);
        self.renewed_at = Some(now);
    }

    /// True while this candidate may act as the leader: it holds the Lease
    /// as last read and renewed it within the renew deadline.
    pub fn is_leading(&self, now: Instant) -> bool {
        let holds = self.observed.as_ref().and_then(|r| r.holder()) == Some(self.identity.as_str());
        holds
            && self
                .renewed_at
                .is_some_and(|t| now.duration_since(t) < self.timings.renew_deadline)
    }

    /// The leader as this candidate sees it: the holder of the last record
    /// read, while that is valid.
    pub fn leader(&self, now: Instant) -> Option<String> {
        if self.is_leading(now) {
            return Some(self.identity.clone());
        }
        let holder = self.observed.as_ref()?.holder()?;
        if holder == self.identity {
            return None;
        }
        let valid = self
            .observed_at
            .is_some_and(|t| now.duration_since(t) < self.timings.lease_duration);
        valid.then(|| holder.to_string())
    }

    /// The record that releases the Lease, when this candidate holds it
    /// (so the next leader need not wait for it to expire).
    pub fn release(&mut self, current: &LeaseRecord, wall: SystemTime) -> Option<LeaseRecord> {
        if current.holder() != Some(self.identity.as_str()) {
            return None;
        }
        self.renewed_at = None;
        Some(LeaseRecord {
            holder: None,
            lease_duration_secs: 1,
            acquire_time: Some(wall),
            renew_time: Some(wall),
            transitions: current.transitions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timings = Timings {
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(500),
    };

    /// A Lease in memory with compare-and-swap on a version counter.
    #[derive(Default)]
    struct MemoryLease {
        record: Option<LeaseRecord>,
        version: u64,
    }

    impl MemoryLease {
        fn read(&self) -> (Option<LeaseRecord>, u64) {
            (self.record.clone(), self.version)
        }
        fn write(&mut self, read_version: u64, record: LeaseRecord) -> bool {
            if read_version != self.version {
                return false;
            }
            self.record = Some(record);
            self.version += 1;
            true
        }
    }

    /// One round of candidate `e` at `now`: read, decide, CAS. True when it wrote.
    fn round(e: &mut Elector, lease: &mut MemoryLease, now: Instant) -> bool {
        let (current, version) = lease.read();
        match e.attempt(current.as_ref(), now, SystemTime::now()) {
            Attempt::Write(rec) => {
                let ok = lease.write(version, rec.clone());
                if ok {
                    e.written(rec, now);
                }
                ok
            }
            Attempt::Wait { .. } => false,
        }
    }

    #[test]
    fn the_first_candidate_acquires_and_the_other_waits_while_it_renews() {
        let t0 = Instant::now();
        let mut lease = MemoryLease::default();
        let (mut a, mut b) = (Elector::new("a", T), Elector::new("b", T));
        assert!(round(&mut a, &mut lease, t0));
        assert!(a.is_leading(t0));
        assert!(!round(&mut b, &mut lease, t0));
        assert_eq!(b.leader(t0).as_deref(), Some("a"));
        // a renews every retry period; b never gets it
        for i in 1..20 {
            let now = t0 + T.retry_period * i;
            assert!(round(&mut a, &mut lease, now));
            assert!(!round(&mut b, &mut lease, now), "round {i}");
            assert!(a.is_leading(now) && !b.is_leading(now));
        }
        assert_eq!(lease.record.as_ref().unwrap().transitions, 0);
    }

    #[test]
    fn an_expired_lease_is_taken_over_after_the_lease_duration_by_the_local_clock() {
        let t0 = Instant::now();
        let mut lease = MemoryLease::default();
        let (mut a, mut b) = (Elector::new("a", T), Elector::new("b", T));
        assert!(round(&mut a, &mut lease, t0));
        assert!(!round(&mut b, &mut lease, t0 + Duration::from_millis(100)));
        // a dies (kill -9): no more renews. b waits lease_duration from the
        // last change it saw, not from the record's renewTime.
        assert!(!round(&mut b, &mut lease, t0 + Duration::from_millis(3000)));
        assert!(round(&mut b, &mut lease, t0 + Duration::from_millis(3200)));
        assert!(b.is_leading(t0 + Duration::from_millis(3200)));
        assert_eq!(lease.record.as_ref().unwrap().transitions, 1);
        // a comes back: it reads b's name, waits, and does not lead
        let later = t0 + Duration::from_millis(3300);
        assert!(!round(&mut a, &mut lease, later));
        assert!(!a.is_leading(later));
        assert_eq!(a.leader(later).as_deref(), Some("b"));
    }

    #[test]
    fn a_holder_that_cannot_renew_stops_leading_at_the_renew_deadline() {
        let t0 = Instant::now();
        let mut lease = MemoryLease::default();
        let mut a = Elector::new("a", T);
        assert!(round(&mut a, &mut lease, t0));
        // the API is down: no round succeeds
        assert!(a.is_leading(t0 + Duration::from_millis(1999)));
        assert!(!a.is_leading(t0 + Duration::from_millis(2000)));
        // back: a renews its own lease at once (no wait for itself)
        assert!(round(&mut a, &mut lease, t0 + Duration::from_secs(5)));
        assert!(a.is_leading(t0 + Duration::from_secs(5)));
    }

    #[test]
    fn of_two_candidates_racing_for_an_expired_lease_exactly_one_wins() {
        let t0 = Instant::now();
        let mut lease = MemoryLease::default();
        let mut dead = Elector::new("dead", T);
        assert!(round(&mut dead, &mut lease, t0));
        let (mut a, mut b) = (Elector::new("a", T), Elector::new("b", T));
        let _ = (
            a.attempt(lease.read().0.as_ref(), t0, SystemTime::now()),
            b.attempt(lease.read().0.as_ref(), t0, SystemTime::now()),
        );
        let later = t0 + Duration::from_secs(4);
        // both read the same version, both decide to write; the CAS lets one through
        let (current, version) = lease.read();
        let wa = a.attempt(current.as_ref(), later, SystemTime::now());
        let wb = b.attempt(current.as_ref(), later, SystemTime::now());
        let (Attempt::Write(ra), Attempt::Write(rb)) = (wa, wb) else {
            panic!("both should try")
        };
        assert!(lease.write(version, ra.clone()));
        a.written(ra, later);
        assert!(
            !lease.write(version, rb),
            "the second write names a stale version"
        );
        assert!(a.is_leading(later) && !b.is_leading(later));
        // next round b reads a's fresh record and waits
        assert!(!round(&mut b, &mut lease, later + T.retry_period));
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let mut lease = MemoryLease::default();
        let (mut a, mut b) = (Elector::new("a", T), Elector::new("b", T));
        assert!(round(&mut a, &mut lease, t0));
        assert!(!round(&mut b, &mut lease, t0));
        let (current, version) = lease.read();
        let released = a.release(current.as_ref().unwrap(), SystemTime::now()).unwrap();
        assert!(lease.write(version, released));
        assert!(!a.is_leading(t0));
        // b takes it in its next round, well within the lease duration
        assert!(round(&mut b, &mut lease, t0 + T.retry_period));
        assert!(b.is_leading(t0 + T.retry_period));
        // only the holder can release
        let (current, _) = lease.read();
        assert_eq!(a.release(current.as_ref().unwrap(), SystemTime::now()), None);
    }

    #[test]
    fn timings_are_checked() {
        assert!(Timings::PRODUCTION.check().is_ok());
        assert!(T.check().is_ok());
        let bad = Timings {
            renew_deadline: Duration::from_secs(3),
            ..T
        };
        assert!(bad.check().is_err());
        let bad = Timings {
            retry_period: Duration::from_secs(2),
            ..T
        };
        assert!(bad.check().is_err());
    }
}
