//! A *policy store* holds each model's newest rollout (and so the traffic
//! policy it implies, with its revision) behind compare-and-swap: a write
//! names the version it read and fails with [`PolicyStoreError::Conflict`]
//! when anyone wrote in between, so two deciders (an admin action and a
//! tick in one process, or two leaders for a moment in a fleet) never
//! overwrite each other; the loser reads again and recomputes.
//!
//! The local store (SQLite plus the snapshot swap, [`super::local`]) and the
//! Kubernetes one (a `ModelRollout`'s status, in the fleet layer) implement
//! [`PolicyStore`]; [`MemoryStore`] is a real CAS store in memory for tests.

use std::collections::HashMap;

use parking_lot::Mutex;

use super::analysis::BoxFuture;
use super::machine::{Event, Rollout};
use super::store::StoreError;

/// A stored rollout and the version a compare-and-swap write must name.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub rollout: Rollout,
    /// Opaque; compared for equality only.
    pub version: String,
}

/// Why a policy store could not read or write.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PolicyStoreError {
    /// Someone wrote since the version named was read.
    #[error("the rollout of model '{0}' changed concurrently; read it again and retry")]
    Conflict(String),
    /// The durable store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Stored, but the implied traffic policy could not be installed here.
    #[error("the rollout's traffic policy could not be applied: {0}")]
    Apply(String),
    /// The store cannot be reached (an API outage, lost leadership).
    #[error("the rollout store is unavailable: {0}")]
    Unavailable(String),
}

/// Where rollouts live. Every write is a compare-and-swap.
pub trait PolicyStore: Send + Sync {
    /// The newest rollout of `model` (active or finished).
    fn load<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, PolicyStoreError>>;
    /// Every rollout not yet Promoted or Aborted.
    fn active(&self) -> BoxFuture<'_, Result<Vec<Versioned>, PolicyStoreError>>;
    /// The id the next rollout of `model` gets.
    fn next_id<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<i64, PolicyStoreError>>;
    /// Stores `next` (and the event that explains it) if the stored
    /// version of its model is still `expected` (`None`: nothing stored
    /// yet); returns the new version.
    fn save<'a>(
        &'a self,
        expected: Option<&'a str>,
        next: &'a Rollout,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<String, PolicyStoreError>>;
    /// The audit log of `model`: (rollout id, event), oldest first.
    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>>;
    /// The newest `limit` events of `model`'s audit log, oldest first.
    fn recent_events<'a>(
        &'a self,
        model: &'a str,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>> {
        Box::pin(async move {
            let mut all = self.events(model).await?;
            let skip = all.len().saturating_sub(limit);
            Ok(all.split_off(skip))
        })
    }
}

/// A policy store in memory with real compare-and-swap, for tests.
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    /// model → (rollout, version counter)
    rollouts: HashMap<String, (Rollout, u64)>,
    events: Vec<(String, i64, Event)>,
    ids: i64,
    /// Every write that succeeded, in order (for assertions).
    writes: u64,
}

impl MemoryStore {
    /// Successful writes so far.
    pub fn writes(&self) -> u64 {
        self.inner.lock().writes
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> BoxFuture<'a, T> {
    Box::pin(std::future::ready(v))
}

impl PolicyStore for MemoryStore {
    fn load<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Option<Versioned>, PolicyStoreError>> {
        let found = self.inner.lock().rollouts.get(model).map(|(r, v)| Versioned {
            rollout: r.clone(),
            version: v.to_string(),
        });
        ready(Ok(found))
    }

    fn active(&self) -> BoxFuture<'_, Result<Vec<Versioned>, PolicyStoreError>> {
        let inner = self.inner.lock();
        let mut all: Vec<Versioned> = inner
            .rollouts
            .values()
            .filter(|(r, _)| !r.phase.is_final())
            .map(|(r, v)| Versioned {
                rollout: r.clone(),
                version: v.to_string(),
            })
            .collect();
        all.sort_by(|a, b| a.rollout.model.cmp(&b.rollout.model));
        ready(Ok(all))
    }

    fn next_id<'a>(&'a self, _model: &'a str) -> BoxFuture<'a, Result<i64, PolicyStoreError>> {
        let mut inner = self.inner.lock();
        inner.ids += 1;
        ready(Ok(inner.ids))
    }

    fn save<'a>(
        &'a self,
        expected: Option<&'a str>,
        next: &'a Rollout,
        event: Option<&'a Event>,
    ) -> BoxFuture<'a, Result<String, PolicyStoreError>> {
        let mut inner = self.inner.lock();
        let stored = inner.rollouts.get(&next.model).map(|(_, v)| v.to_string());
        if stored.as_deref() != expected {
            return ready(Err(PolicyStoreError::Conflict(next.model.clone())));
        }
        let version = inner.rollouts.get(&next.model).map_or(1, |(_, v)| v + 1);
        inner.rollouts.insert(next.model.clone(), (next.clone(), version));
        if let Some(e) = event {
            inner.events.push((next.model.clone(), next.id, e.clone()));
        }
        inner.writes += 1;
        ready(Ok(version.to_string()))
    }

    fn events<'a>(&'a self, model: &'a str) -> BoxFuture<'a, Result<Vec<(i64, Event)>, PolicyStoreError>> {
        let events = self
            .inner
            .lock()
            .events
            .iter()
            .filter(|(m, _, _)| m == model)
            .map(|(_, id, e)| (*id, e.clone()))
            .collect();
        ready(Ok(events))
    }
}
