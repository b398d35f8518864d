//! Health over gRPC: `grpc.health.v1.Health` (tonic-health) whose status is
//! the server's readiness, for the overall server (`""`) and for
//! `inference.GRPCInferenceService` alike: SERVING only while every routed
//! version is READY and warmed up, NOT_SERVING while the repository loads
//! and from the moment shutdown begins. Kubernetes' `grpc:` probes and
//! `grpc_health_probe` call `Check`; load balancers `Watch`.
//!
//! `Check` reads readiness when it is asked. `Watch` streams come from
//! tonic-health's reporter: each starts from the readiness of the moment,
//! and a task tells them every change (at once when shutdown begins, else
//! within [`POLL`]); they end when the drain is over, so they never hold a
//! stopping server open.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_health::ServingStatus;

use super::proto::grpc_inference_service_server::SERVICE_NAME;
use crate::serving::readiness::readiness;
use crate::serving::AppState;

/// The services whose health is the server's readiness.
pub const SERVICES: [&str; 2] = ["", SERVICE_NAME];

/// How often `Watch` streams catch up with readiness (shutdown is seen at once).
pub const POLL: Duration = Duration::from_millis(100);

/// `grpc.health.v1.Health` answering from readiness.
pub struct ReadinessHealth {
    state: Arc<AppState>,
    reported: Reported,
    watches: HealthService,
    drained: CancellationToken,
}

fn status_of(state: &AppState) -> ServingStatus {
    match readiness(state) {
        Ok(()) => ServingStatus::Serving,
        Err(_) => ServingStatus::NotServing,
    }
}

/// What the reporter last told `Watch` streams, behind a lock held while
/// telling them, so updates from the task and from new watches never cross.
#[derive(Clone)]
struct Reported {
    reporter: HealthReporter,
    last: Arc<tokio::sync::Mutex<ServingStatus>>,
}

impl Reported {
    /// Tells the watchers the state's readiness if it changed.
    async fn sync(&self, state: &AppState) {
        let mut last = self.last.lock().await;
        let now = status_of(state);
        if now != *last {
            for s in SERVICES {
                self.reporter.set_service_status(s, now).await;
            }
            *last = now;
        }
    }
}

/// The health service over `state`: starts from the current readiness, is
/// kept in step with it by a task that ends with `stop`; `Watch` streams end
/// once `drained` is cancelled.
pub async fn service(
    state: &Arc<AppState>,
    drained: CancellationToken,
    stop: CancellationToken,
) -> HealthServer<ReadinessHealth> {
    let reporter = HealthReporter::new();
    let first = status_of(state);
    for s in SERVICES {
        reporter.set_service_status(s, first).await;
    }
    let reported = Reported {
        reporter: reporter.clone(),
        last: Arc::new(tokio::sync::Mutex::new(first)),
    };
    let weak: Weak<AppState> = Arc::downgrade(state);
    let shutdown = state.shutdown_token().clone();
    let sync = reported.clone();
    tokio::spawn(stop.run_until_cancelled_owned(async move {
        loop {
            if shutdown.is_cancelled() {
                tokio::time::sleep(POLL).await;
            } else {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(POLL) => {}
                }
            }
            let Some(state) = weak.upgrade() else { return };
            sync.sync(&state).await;
        }
    }));
    HealthServer::new(ReadinessHealth {
        state: state.clone(),
        reported,
        watches: HealthService::from_health_reporter(reporter),
        drained,
    })
}

#[tonic::async_trait]
impl Health for ReadinessHealth {
    async fn check(&self, req: Request<HealthCheckRequest>) -> Result<Response<HealthCheckResponse>, Status> {
        if !SERVICES.contains(&req.get_ref().service.as_str()) {
            // NOT_FOUND, as the health protocol asks for unknown services
            return self.watches.check(req).await;
        }
        let status = match status_of(&self.state) {
            ServingStatus::Serving => tonic_health::pb::health_check_response::ServingStatus::Serving,
            _ => tonic_health::pb::health_check_response::ServingStatus::NotServing,
        };
        Ok(Response::new(HealthCheckResponse {
            status: status as i32,
        }))
    }

    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn watch(&self, req: Request<HealthCheckRequest>) -> Result<Response<Self::WatchStream>, Status> {
        // a new watcher starts from the readiness of now, not of the last poll
        self.reported.sync(&self.state).await;
        let stream = self.watches.watch(req).await?.into_inner();
        let drained = self.drained.clone().cancelled_owned();
        Ok(Response::new(Box::pin(stream.take_until(drained))))
    }
}
