//! Model metadata, independent of the wire: a model's *description* is its
//! name, READY versions, platform and the signature of one version (the one
//! the request names, else the one versionless traffic would reach).

use std::sync::Arc;

use crate::repository::{ModelEntry, Snapshot};
use crate::runtime::Signature;
use crate::traffic::{self, RouteError, VersionSelector};

/// The platform every model reports (ONNX models run by ONNX Runtime).
pub const PLATFORM: &str = "onnx_onnxv1";

/// What model metadata answers.
#[derive(Debug, Clone)]
pub struct Description {
    pub name: String,
    /// READY versions, oldest first.
    pub versions: Vec<String>,
    pub platform: &'static str,
    /// The version described.
    pub version: u64,
    pub signature: Arc<Signature>,
}

/// Describes `model` at the version `selector` names.
pub fn describe(
    snapshot: &Snapshot,
    model: &str,
    selector: VersionSelector<'_>,
) -> Result<Description, RouteError> {
    let m = traffic::model(snapshot, model)?;
    let (version, _) = traffic::version_number(m, selector)?;
    Ok(Description {
        name: model.to_string(),
        versions: m.ready_versions().map(|v| v.number.to_string()).collect(),
        platform: PLATFORM,
        version,
        signature: signature(m, version)?,
    })
}

/// The signature of a loaded version, or `NotReady` when it is not READY.
pub fn signature(m: &ModelEntry, v: u64) -> Result<Arc<Signature>, RouteError> {
    m.versions
        .get(&v)
        .and_then(|e| e.signature().cloned())
        .ok_or_else(|| {
            let state = m.versions.get(&v).map(|e| e.state.name()).unwrap_or("not loaded");
            RouteError::NotReady(m.name.clone(), v, state.to_string())
        })
}
