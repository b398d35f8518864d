//! The *leadership*: this replica's candidacy for the fleet's Lease, run
//! against the Kubernetes API. Every retry period it GETs the Lease, asks
//! the pure [`Elector`] what to write, and writes it with the
//! resourceVersion it read (a create when there is none); a 409 means
//! another replica wrote first. On shutdown the holder releases the Lease
//! so the next leader takes over within one retry period.

use std::time::{Instant, SystemTime};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::lease::{Attempt, Elector, LeaseRecord, Timings};

/// This replica's side of leader election.
pub(crate) struct Leadership {
    elector: Mutex<Elector>,
    api: Api<Lease>,
    name: String,
}

fn micro(t: SystemTime) -> Option<MicroTime> {
    Timestamp::try_from(t).ok().map(MicroTime)
}

fn system(t: &MicroTime) -> SystemTime {
    SystemTime::from(t.0)
}

fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.clone().unwrap_or_default();
    LeaseRecord {
        holder: spec.holder_identity,
        lease_duration_secs: spec.lease_duration_seconds.unwrap_or(0),
        acquire_time: spec.acquire_time.as_ref().map(system),
        renew_time: spec.renew_time.as_ref().map(system),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn lease_of(name: &str, resource_version: Option<String>, r: &LeaseRecord) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            resource_version,
            ..ObjectMeta::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: r.holder.clone(),
            lease_duration_seconds: Some(r.lease_duration_secs),
            acquire_time: r.acquire_time.and_then(micro),
            renew_time: r.renew_time.and_then(micro),
            lease_transitions: Some(r.transitions),
            ..LeaseSpec::default()
        }),
    }
}

impl Leadership {
    /// A candidate called `identity` for Lease `name` in `api`'s namespace.
    pub(crate) fn new(api: Api<Lease>, name: &str, identity: &str, timings: Timings) -> Leadership {
        Leadership {
            elector: Mutex::new(Elector::new(identity, timings)),
            api,
            name: name.to_string(),
        }
    }

    /// This replica's name.
    pub(crate) fn identity(&self) -> String {
        self.elector.lock().identity().to_string()
    }

    /// True while this replica may act as the leader.
    pub(crate) fn is_leading(&self) -> bool {
        self.elector.lock().is_leading(Instant::now())
    }

    /// The leader as this replica last saw it.
    pub(crate) fn leader(&self) -> Option<String> {
        self.elector.lock().leader(Instant::now())
    }

    /// Tries every retry period until `stop`, then releases the Lease.
    pub(crate) async fn run(&self, stop: CancellationToken) {
        let timings = self.elector.lock().timings();
        let mut tick = tokio::time::interval(timings.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_leading = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            // a round never outlives the renew deadline
            let _ = tokio::time::timeout(timings.renew_deadline, self.round()).await;
            let leading = self.is_leading();
            if leading != was_leading {
                if leading {
                    tracing::info!(lease = %self.name, "this replica leads the fleet");
                } else {
                    tracing::warn!(lease = %self.name, leader = ?self.leader(), "this replica stopped leading");
                }
                crate::telemetry::set_fleet_leader(leading);
                was_leading = leading;
            }
        }
        self.release().await;
        crate::telemetry::set_fleet_leader(false);
    }

    /// One round: read, decide, compare-and-swap.
    async fn round(&self) {
        let current = match self.api.get_opt(&self.name).await {
            Ok(current) => current,
            Err(e) => {
                tracing::debug!(lease = %self.name, error = %e, "lease not readable");
                return;
            }
        };
        let record = current.as_ref().map(record_of);
        let rv = current.as_ref().and_then(|l| l.metadata.resource_version.clone());
        let attempt = self
            .elector
            .lock()
            .attempt(record.as_ref(), Instant::now(), SystemTime::now());
        let Attempt::Write(next) = attempt else {
            return;
        };
        let lease = lease_of(&self.name, rv, &next);
        let written = match &current {
            Some(_) => self.api.replace(&self.name, &PostParams::default(), &lease).await,
            None => self.api.create(&PostParams::default(), &lease).await,
        };
        match written {
            Ok(_) => self.elector.lock().written(next, Instant::now()),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                tracing::debug!(lease = %self.name, "another replica wrote the lease first")
            }
            Err(e) => tracing::debug!(lease = %self.name, error = %e, "lease not written"),
        }
    }

    /// Releases the Lease if this replica holds it (best effort).
    pub(crate) async fn release(&self) {
        if !self.is_leading() {
            return;
        }
        let current = match self.api.get_opt(&self.name).await {
            Ok(Some(current)) => current,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "leadership not released; it expires");
                return;
            }
        };
        let record = record_of(&current);
        let Some(released) = self.elector.lock().release(&record, SystemTime::now()) else {
            return;
        };
        let lease = lease_of(&self.name, current.metadata.resource_version.clone(), &released);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => tracing::info!(lease = %self.name, "leadership released"),
            Err(e) => tracing::warn!(lease = %self.name, error = %e, "leadership not released; it expires"),
        }
    }
}
