//! The *follower* side, on every replica: one kube-runtime watcher on the
//! namespace's `ModelRollout` objects keeps the [`Cache`], and every object
//! seen is *synced* into this server: the versions it names are preloaded
//! (a candidate is loaded as soon as the spec names it), the status's
//! policy is applied when its revision is higher than the one held
//! (validate, build the snapshot, one atomic swap), and its history goes
//! to this replica's audit log. A policy naming a version not loaded here
//! yet is applied anyway: that version's users get stable
//! (`x-route: fallback`) until it is READY.
//!
//! The client does not retry by itself and the watch backs off at most a
//! second, so after an API outage the replicas catch up within about a
//! second. Requests never wait on any of this: they read the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::api::Api;
use kube::runtime::utils::Backoff;
use kube::runtime::{watcher, WatchStreamExt};
use kube::ResourceExt;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use super::convert::{event_of, policy_spec, rollout_of};
use super::crd::ModelRollout;
use super::store::Cache;
use crate::repository::{Repository, VersionState};
use crate::rollout::machine::Phase;
use crate::rollout::spec::Strategy;
use crate::rollout::store::Store;

/// Watch backoff from 100 ms doubling to at most 1 s (kube's default
/// backoff reaches 30 s, which would delay convergence after an outage).
pub struct CappedBackoff {
    next: Duration,
}

impl CappedBackoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    /// A fresh backoff.
    pub fn new() -> CappedBackoff {
        CappedBackoff { next: Self::MIN }
    }
}

impl Default for CappedBackoff {
    fn default() -> Self {
        CappedBackoff::new()
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(d)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Applies the cluster's objects to this server.
pub(crate) struct Follower {
    pub(super) repo: Arc<Repository>,
    pub(super) cache: Arc<Cache>,
    pub(super) audit: Arc<Store>,
    /// True once a complete list was applied.
    listed: AtomicBool,
    /// (model, version) loads started, so each is started once.
    loading: Mutex<BTreeSet<(String, u64)>>,
    /// The newest audit event mirrored per model: (rollout id, at).
    mirrored: Mutex<BTreeMap<String, (i64, f64)>>,
    /// Blue-green rollouts whose old stable was retired: (model, rollout id).
    retired: Mutex<BTreeSet<(String, i64)>>,
}

impl Follower {
    /// A follower applying to `repo`.
    pub(crate) fn new(repo: Arc<Repository>, cache: Arc<Cache>, audit: Arc<Store>) -> Follower {
        Follower {
            repo,
            cache,
            audit,
            listed: AtomicBool::new(false),
            loading: Mutex::new(BTreeSet::new()),
            mirrored: Mutex::new(BTreeMap::new()),
            retired: Mutex::new(BTreeSet::new()),
        }
    }

    /// Synced: a complete list arrived and every policy in it that names a
    /// model this server has is applied. Readiness waits for this.
    pub(crate) fn synced(&self) -> Result<(), String> {
        if !self.listed.load(Ordering::SeqCst) {
            return Err("waiting for the first sync with the Kubernetes API".into());
        }
        let snapshot = self.repo.snapshot();
        for o in self.cache.all() {
            let Some(p) = o.status.as_ref().and_then(|s| s.policy.as_ref()) else {
                continue;
            };
            let Some(m) = snapshot.models.get(&o.spec.model) else {
                continue;
            };
            if m.policy_revision < p.revision {
                return Err(format!(
                    "model '{}' holds policy revision {}, the fleet's is {}",
                    o.spec.model, m.policy_revision, p.revision
                ));
            }
        }
        Ok(())
    }

    /// Watches until `stop`, and syncs everything every second as well (a
    /// policy that could not be applied yet, a load that finished).
    pub(crate) async fn run(self: Arc<Self>, api: Api<ModelRollout>, stop: CancellationToken) {
        let mut stream = watcher(api, watcher::Config::default())
            .backoff(CappedBackoff::new())
            .boxed();
        let mut pending: Option<Vec<ModelRollout>> = None;
        let mut resync = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = resync.tick() => {
                    if self.listed.load(Ordering::SeqCst) {
                        self.sync_all();
                    }
                }
                item = stream.next() => match item {
                    None => return,
                    Some(Err(e)) => tracing::warn!(error = %e, "ModelRollout watch failed; retrying"),
                    Some(Ok(event)) => self.on_event(event, &mut pending),
                },
            }
        }
    }

    fn on_event(&self, event: watcher::Event<ModelRollout>, pending: &mut Option<Vec<ModelRollout>>) {
        match event {
            watcher::Event::Init => *pending = Some(Vec::new()),
            watcher::Event::InitApply(o) => pending.get_or_insert_with(Vec::new).push(o),
            watcher::Event::InitDone => {
                self.cache.replace_all(pending.take().unwrap_or_default());
                self.sync_all();
                if !self.listed.swap(true, Ordering::SeqCst) {
                    tracing::info!("first sync with the Kubernetes API done");
                }
            }
            watcher::Event::Apply(o) => {
                self.cache.put(o.clone());
                self.sync(&o);
            }
            watcher::Event::Delete(o) => self.cache.remove(&o.name_any()),
        }
    }

    /// Syncs every cached object.
    pub(crate) fn sync_all(&self) {
        for o in self.cache.all() {
            self.sync(&o);
        }
    }

    /// Brings this server in line with one object.
    pub(crate) fn sync(&self, o: &ModelRollout) {
        let model = o.spec.model.as_str();
        if !self.repo.snapshot().models.contains_key(model) {
            return;
        }
        let status = o.status.clone().unwrap_or_default();
        let mut wanted = vec![o.spec.rollout.candidate];
        if let Some(p) = &status.policy {
            wanted.push(p.stable);
            wanted.extend(p.candidate);
            wanted.extend(p.shadow);
            wanted.extend(p.preview);
            wanted.extend(p.labels.values());
        }
        for v in wanted {
            self.preload(model, v);
        }
        if let Some(p) = &status.policy {
            self.apply(model, p.revision, policy_spec(p));
        }
        if let Some(r) = rollout_of(model, &status) {
            crate::telemetry::set_rollout(model, r.phase.name(), r.step);
            self.retire(&r);
        }
        self.mirror(model, &status);
    }

    /// Installs the cluster's policy when it is newer than the one held.
    fn apply(&self, model: &str, revision: u64, policy: crate::policy::PolicySpec) {
        let held = self
            .repo
            .snapshot()
            .models
            .get(model)
            .map_or(0, |m| m.policy_revision);
        let has_policy = self
            .repo
            .snapshot()
            .models
            .get(model)
            .is_some_and(|m| m.policy.is_some());
        if revision <= held && has_policy {
            return;
        }
        match self.repo.install_policy(model, policy, Some(revision), true) {
            Ok(p) => {
                tracing::info!(model, revision, stable = p.stable(), candidate = ?p.spec().candidate, "fleet policy applied")
            }
            // the stable version is not READY here yet: the next sync retries
            Err(e) => tracing::warn!(model, revision, error = %e, "fleet policy not applied yet"),
        }
    }

    /// Loads `version` of `model` next to the serving ones if it is on
    /// disk and not loaded (in the background, once).
    fn preload(&self, model: &str, version: u64) {
        let snapshot = self.repo.snapshot();
        let loaded = snapshot
            .models
            .get(model)
            .and_then(|m| m.versions.get(&version))
            .is_some_and(|v| matches!(v.state, VersionState::Ready | VersionState::Loading));
        if loaded || !self.loading.lock().insert((model.to_string(), version)) {
            return;
        }
        if !self.repo.versions_on_disk(model).contains(&version) {
            tracing::warn!(
                model,
                version,
                "the fleet names a version this server does not have on disk"
            );
            return;
        }
        let (repo, name) = (self.repo.clone(), model.to_string());
        tokio::task::spawn_blocking(move || {
            tracing::info!(model = %name, version, "preloading for the fleet");
            let _ = repo.load_specific(&name, version);
        });
    }

    /// Blue-green: once promoted, the old stable is unloaded here too.
    fn retire(&self, r: &crate::rollout::machine::Rollout) {
        if r.phase != Phase::Promoted || !matches!(r.spec.strategy, Strategy::BlueGreen { .. }) {
            return;
        }
        if !self.retired.lock().insert((r.model.clone(), r.id)) {
            return;
        }
        if let Err(e) = self.repo.unload_version(&r.model, r.stable, Duration::ZERO) {
            tracing::info!(model = %r.model, version = r.stable, error = %e, "old stable kept");
        }
    }

    /// Appends the history entries this replica has not logged yet.
    fn mirror(&self, model: &str, status: &super::crd::ModelRolloutStatus) {
        let mut mirrored = self.mirrored.lock();
        let last = *mirrored.entry(model.to_string()).or_insert_with(|| {
            self.audit
                .events(model)
                .ok()
                .and_then(|e| e.last().map(|(id, e)| (*id, e.at)))
                .unwrap_or((0, f64::MIN))
        });
        let mut newest = last;
        for h in &status.history {
            let Some(e) = event_of(h) else { continue };
            let key = (h.rollout_id, e.at);
            if key.0 < last.0 || (key.0 == last.0 && key.1 <= last.1) {
                continue;
            }
            if let Err(err) = self.audit.record_event(model, h.rollout_id, &e) {
                tracing::warn!(model, error = %err, "audit log not written");
                return;
            }
            newest = key;
        }
        mirrored.insert(model.to_string(), newest);
    }
}
