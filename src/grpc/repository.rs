//! Triton's model-repository RPCs (`RepositoryIndex`,
//! `RepositoryModelLoad`, `RepositoryModelUnload`) over the shared catalog
//! (`serving::catalog`). Off unless `--repository-api` turns them on, and
//! then behind the admin token (`authorization: Bearer <token>` metadata).

use tonic::metadata::MetadataMap;

use super::proto::repository_index_response::ModelIndex;
use super::proto::{
    RepositoryIndexRequest, RepositoryIndexResponse, RepositoryModelLoadRequest, RepositoryModelLoadResponse,
    RepositoryModelUnloadRequest, RepositoryModelUnloadResponse,
};
use super::request::check_token;
use super::status::GrpcError;
use crate::serving::{catalog, AppState};

/// Refuses the call unless the repository RPCs are on and the caller has
/// the token; the server has one repository, so a repository name is
/// refused too.
fn admit(state: &AppState, metadata: &MetadataMap, repository_name: &str) -> Result<(), GrpcError> {
    if !state.settings.repository_api {
        return Err(GrpcError::Unimplemented(
            "the model-repository RPCs are off: start switchyard with --repository-api \
             (SWITCHYARD_REPOSITORY_API=true)"
                .into(),
        ));
    }
    check_token(state, metadata)?;
    if !repository_name.is_empty() {
        return Err(GrpcError::Unimplemented(format!(
            "repository_name '{repository_name}': this server has one model repository; leave it empty"
        )));
    }
    Ok(())
}

/// The model a load or unload names (required).
fn model_name<'r>(model_name: &'r str, what: &str) -> Result<&'r str, GrpcError> {
    if model_name.is_empty() {
        return Err(GrpcError::InvalidArgument(format!("{what}: model_name is empty")));
    }
    Ok(model_name)
}

/// `RepositoryIndex`: every model directory with its versions' states
/// (only READY ones when `ready` is set).
pub(super) fn index(
    state: &AppState,
    metadata: &MetadataMap,
    req: &RepositoryIndexRequest,
) -> Result<RepositoryIndexResponse, GrpcError> {
    admit(state, metadata, &req.repository_name)?;
    let models = catalog::index(state, req.ready)
        .into_iter()
        .map(|e| ModelIndex {
            name: e.name,
            version: e.version,
            state: e.state,
            reason: e.reason,
        })
        .collect();
    Ok(RepositoryIndexResponse { models })
}

/// `RepositoryModelLoad`: loads the versions the model's version policy
/// selects next to the serving ones. Load parameters (a config or files
/// sent along) are not supported.
pub(super) async fn load(
    state: &AppState,
    metadata: &MetadataMap,
    req: &RepositoryModelLoadRequest,
) -> Result<RepositoryModelLoadResponse, GrpcError> {
    admit(state, metadata, &req.repository_name)?;
    let model = model_name(&req.model_name, "RepositoryModelLoad")?;
    if let Some(key) = req.parameters.keys().next() {
        return Err(GrpcError::Unimplemented(format!(
            "load parameter '{key}' is not supported: models load from their directory as they are"
        )));
    }
    catalog::load(state, model).await?;
    Ok(RepositoryModelLoadResponse {})
}

/// `RepositoryModelUnload`: removes the model from serving (parameters
/// such as `unload_dependents` have nothing to act on and are ignored).
pub(super) fn unload(
    state: &AppState,
    metadata: &MetadataMap,
    req: &RepositoryModelUnloadRequest,
) -> Result<RepositoryModelUnloadResponse, GrpcError> {
    admit(state, metadata, &req.repository_name)?;
    let model = model_name(&req.model_name, "RepositoryModelUnload")?;
    catalog::unload(state, model)?;
    Ok(RepositoryModelUnloadResponse {})
}
