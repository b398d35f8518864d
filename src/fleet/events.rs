//! Kubernetes Events for a rollout's phase changes (`kubectl describe
//! modelrollout` and `kubectl get events` show them). Best effort: an Event
//! that cannot be written is logged and dropped, never retried, and never
//! holds up the rollout. Events expire (an hour by default); each
//! replica's SQLite audit log keeps everything.

use std::time::SystemTime;

use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::{Resource, ResourceExt};

use super::convert::phase_name;
use super::crd::ModelRollout;
use crate::rollout::machine::Phase;

/// Writes core/v1 Events about `ModelRollout` objects.
#[derive(Clone)]
pub(crate) struct EventRecorder {
    api: Api<KubeEvent>,
    /// The replica writing (`reportingInstance`).
    instance: String,
}

impl EventRecorder {
    /// Events in `api`'s namespace, reported by `instance`.
    pub(crate) fn new(api: Api<KubeEvent>, instance: &str) -> EventRecorder {
        EventRecorder {
            api,
            instance: instance.to_string(),
        }
    }

    /// Records that `o`'s rollout entered `phase`, in the background.
    pub(crate) fn phase_changed(&self, o: &ModelRollout, phase: Phase, message: &str) {
        let now = Timestamp::try_from(SystemTime::now()).unwrap_or(Timestamp::UNIX_EPOCH);
        let name = format!("{}.{:x}", o.name_any(), now.as_nanosecond());
        let event = KubeEvent {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: o.namespace(),
                ..ObjectMeta::default()
            },
            involved_object: ObjectReference {
                api_version: Some(ModelRollout::api_version(&()).to_string()),
                kind: Some(ModelRollout::kind(&()).to_string()),
                name: Some(o.name_any()),
                namespace: o.namespace(),
                uid: o.uid(),
                resource_version: o.resource_version(),
                ..ObjectReference::default()
            },
            reason: Some(phase_name(phase).to_string()),
            // Event messages are capped at 1 KiB by the API server
            message: Some(message.chars().take(1000).collect()),
            type_: Some(
                if phase == Phase::Aborted {
                    "Warning"
                } else {
                    "Normal"
                }
                .to_string(),
            ),
            count: Some(1),
            first_timestamp: Some(Time(now)),
            last_timestamp: Some(Time(now)),
            reporting_component: Some("switchyard".into()),
            reporting_instance: Some(self.instance.clone()),
            source: Some(EventSource {
                component: Some("switchyard".into()),
                host: None,
            }),
            ..KubeEvent::default()
        };
        let api = self.api.clone();
        tokio::spawn(async move {
            if let Err(e) = api.create(&PostParams::default(), &event).await {
                tracing::debug!(error = %e, "Kubernetes Event not written");
            }
        });
    }
}
