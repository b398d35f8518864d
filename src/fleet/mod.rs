//! Fleet mode: N replicas behave as one server, coordinated through
//! Kubernetes. A *fleet* is the replicas of one namespace that share the
//! `ModelRollout` objects ([`crd`]) and one Lease:
//!
//! - every replica *follows*: it watches the objects and applies each
//!   status's traffic policy when its revision is higher than the one it
//!   holds, preloading the versions named (`watch`);
//! - one replica *leads*, the holder of the Lease (`lease`, `elector`): it
//!   turns specs into rollout transitions and analyses the active rollouts
//!   on fleet-wide metrics from Prometheus (`prometheus`), writing each
//!   decision as one compare-and-swap status write (`store`, `leader`);
//! - the admin API and the CLI on any replica write the spec and wait for
//!   the leader's answer (`operator`).
//!
//! The rollout layer's seams are implemented here: the Kubernetes store is
//! a [`PolicyStore`], Prometheus a [`MetricsSource`]; the state machine and
//! the controller are the same as in local mode.

pub mod convert;
pub mod crd;
mod elector;
mod events;
mod leader;
pub mod lease;
mod operator;
pub mod prometheus;
mod store;
mod watch;

use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::Client;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crd::{crd_yaml, ModelRollout, ModelRolloutSpec, ModelRolloutStatus};
pub use lease::Timings;
pub use store::object_name;
pub use watch::CappedBackoff;

use crate::repository::Repository;
use crate::rollout::controller::Controller;
use crate::rollout::operator::Operator;
use crate::rollout::store::{Store, StoreError};
use elector::Leadership;
use events::EventRecorder;
use leader::Leader;
use operator::FleetOperator;
use prometheus::PrometheusSource;
use store::{Cache, KubeStore};
use watch::Follower;

/// What fleet mode needs from the configuration, as plain values.
#[derive(Debug, Clone)]
pub struct FleetSettings {
    /// A kubeconfig file; `None`: `KUBECONFIG`, `~/.kube/config`, else the
    /// in-cluster service account.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace of the objects and the Lease; `None`: the client
    /// configuration's (in a pod: its own).
    pub namespace: Option<String>,
    /// This replica's name (the pod name).
    pub pod_name: String,
    /// The Prometheus that scrapes every replica.
    pub prometheus_url: String,
    /// Label matchers added to every query, e.g. `namespace="ml"`.
    pub prometheus_matchers: String,
    /// The Lease's name.
    pub lease_name: String,
    pub timings: Timings,
    /// This replica's audit log lives here.
    pub state_dir: PathBuf,
}

/// Why fleet mode could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No usable client configuration.
    #[error("cannot configure the Kubernetes client: {0}")]
    Client(String),
    /// Inconsistent settings.
    #[error("{0}")]
    Settings(String),
    /// The audit log could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What `GET /admin/v1/fleet` reports about the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetView {
    pub pod: String,
    pub namespace: String,
    pub leader: Option<String>,
    pub leading: bool,
    /// Why this replica is not in sync yet, if it is not.
    pub unsynced: Option<String>,
}

/// One replica's membership in the fleet.
pub struct Fleet {
    namespace: String,
    client: Client,
    leadership: Arc<Leadership>,
    follower: Arc<Follower>,
    leader: Arc<Leader>,
    operator: Arc<FleetOperator>,
    /// Stops the candidacy and the leader loop (on shutdown, first).
    lead_stop: CancellationToken,
    elector_task: Mutex<Option<JoinHandle<()>>>,
}

/// The client configuration: the kubeconfig given, else inferred.
async fn client_config(settings: &FleetSettings) -> Result<kube::Config, FleetError> {
    let client_err = |e: String| FleetError::Client(e);
    let mut config = match &settings.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).map_err(|e| client_err(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|e| client_err(format!("{}: {e}", path.display())))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| client_err(e.to_string()))?,
    };
    // kube retries 429/503/504 for minutes by default: an outage must fail
    // fast here (the Lease's renew deadline, the watch's capped backoff)
    config.default_retry = false;
    Ok(config)
}

impl Fleet {
    /// Connects to the cluster (no request is made yet) and builds the
    /// replica's parts over `repo`.
    pub async fn connect(repo: Arc<Repository>, settings: &FleetSettings) -> Result<Fleet, FleetError> {
        settings.timings.check().map_err(FleetError::Settings)?;
        if settings.prometheus_url.is_empty() {
            return Err(FleetError::Settings(
                "fleet mode analyses rollouts on Prometheus: set --prometheus-url (SWITCHYARD_PROMETHEUS_URL)".into(),
            ));
        }
        let config = client_config(settings).await?;
        let namespace = settings
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| FleetError::Client(e.to_string()))?;
        let rollouts: Api<ModelRollout> = Api::namespaced(client.clone(), &namespace);
        let leases: Api<Lease> = Api::namespaced(client.clone(), &namespace);
        let audit = Arc::new(Store::open(&settings.state_dir)?);
        let cache = Arc::new(Cache::default());
        let call_timeout = settings.timings.renew_deadline.min(Duration::from_secs(5));
        let leadership = Arc::new(Leadership::new(
            leases,
            &settings.lease_name,
            &settings.pod_name,
            settings.timings,
        ));
        let store = Arc::new(KubeStore {
            api: rollouts.clone(),
            cache: cache.clone(),
            leadership: leadership.clone(),
            events: EventRecorder::new(Api::namespaced(client.clone(), &namespace), &settings.pod_name),
            audit: audit.clone(),
            call_timeout,
        });
        let metrics = Arc::new(PrometheusSource::new(
            &settings.prometheus_url,
            &settings.prometheus_matchers,
            Duration::from_secs(2),
        ));
        let leader = Arc::new(Leader {
            controller: Controller::new(repo.clone(), store.clone(), metrics),
            store,
            repo: repo.clone(),
            leadership: leadership.clone(),
        });
        let operator = Arc::new(FleetOperator {
            api: rollouts,
            cache: cache.clone(),
            repo: repo.clone(),
            audit: audit.clone(),
            identity: settings.pod_name.clone(),
            call_timeout,
            answer_timeout: settings.timings.lease_duration + Duration::from_secs(10),
            counter: AtomicU64::new(0),
        });
        Ok(Fleet {
            namespace,
            client,
            leadership,
            follower: Arc::new(Follower::new(repo, cache, audit)),
            leader,
            operator,
            lead_stop: CancellationToken::new(),
            elector_task: Mutex::new(None),
        })
    }

    /// Starts following (until `stop`), the candidacy and the leader loop.
    pub fn spawn(&self, stop: CancellationToken) {
        let api: Api<ModelRollout> = Api::namespaced(self.client.clone(), &self.namespace);
        tokio::spawn(self.follower.clone().run(api, stop.clone()));
        // the candidacy ends on shutdown (and releases) or with the server
        let lead_stop = self.lead_stop.clone();
        let server_stop = stop.clone();
        tokio::spawn(async move {
            server_stop.cancelled().await;
            lead_stop.cancel();
        });
        let leadership = self.leadership.clone();
        let token = self.lead_stop.clone();
        *self.elector_task.lock() = Some(tokio::spawn(async move { leadership.run(token).await }));
        let leader = self.leader.clone();
        let token = self.lead_stop.clone();
        tokio::spawn(async move { leader.run(token).await });
    }

    /// Rollout commands through the cluster.
    pub fn operator(&self) -> Arc<dyn Operator> {
        self.operator.clone()
    }

    /// `Ok` once this replica applies every policy of the fleet.
    pub fn synced(&self) -> Result<(), String> {
        self.follower.synced()
    }

    /// This replica's view of the fleet.
    pub fn view(&self) -> FleetView {
        FleetView {
            pod: self.leadership.identity(),
            namespace: self.namespace.clone(),
            leader: self.leadership.leader(),
            leading: self.leadership.is_leading(),
            unsynced: self.synced().err(),
        }
    }

    /// Stops leading and releases the Lease at once, so the next leader
    /// takes over within one retry period (on SIGTERM, before the drain).
    pub async fn resign(&self) {
        self.lead_stop.cancel();
        let task = self.elector_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}
