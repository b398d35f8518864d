//! The *catalog*: what Triton's model-repository extension lists and does
//! (index, load, unload), independent of the wire. HTTP
//! (`/v2/repository/...`) and gRPC (`RepositoryIndex`, `RepositoryModelLoad`,
//! `RepositoryModelUnload`) both call it; each checks the admin token first.

use serde::Serialize;

use super::state::AppState;
use crate::repository::{NameError, PolicyError};

/// One row of the repository index: a version, or a model that has none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    pub name: String,
    /// Empty for a model without loaded versions.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// `READY`, `LOADING`, `UNLOADING` or `UNAVAILABLE`.
    pub state: String,
    pub reason: String,
}

/// Why a repository operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The name is not a model name (empty, a path, too long...).
    #[error(transparent)]
    BadName(#[from] NameError),
    /// The model has an active rollout: unloading it would strand it.
    #[error("model '{0}' has an active rollout; abort it before unloading the model")]
    RolloutActive(String),
    /// The repository has no directory for the model.
    #[error("failed to load '{0}': no such model directory in the repository")]
    NoSuchModel(String),
    /// The model's files are broken or no version became READY.
    #[error("failed to load '{model}': {reason}")]
    LoadFailed { model: String, reason: String },
    /// Unloading failed (unknown model).
    #[error(transparent)]
    Unload(#[from] PolicyError),
}

/// Every model directory in the repository with its versions' states;
/// `ready_only` keeps the READY versions alone.
pub fn index(state: &AppState, ready_only: bool) -> Vec<IndexEntry> {
    let snapshot = state.repo.snapshot();
    let mut entries = Vec::new();
    let on_disk = state.repo.model_names().unwrap_or_default();
    let model_row = |name: &str, reason: String| IndexEntry {
        name: name.to_string(),
        version: String::new(),
        state: "UNAVAILABLE".into(),
        reason,
    };
    for name in &on_disk {
        match snapshot.models.get(name) {
            Some(m) if m.error.is_some() => {
                entries.push(model_row(name, m.error.clone().unwrap_or_default()))
            }
            Some(m) => entries.extend(m.versions.values().map(|v| IndexEntry {
                name: name.clone(),
                version: v.number.to_string(),
                state: v.state.name().into(),
                reason: v.state.reason().into(),
            })),
            None => entries.push(model_row(name, "unloaded".into())),
        }
    }
    if ready_only {
        entries.retain(|e| e.state == "READY");
    }
    entries
}

/// Loads (or reloads) a model directory: every version its version policy
/// selects that is not loaded yet. Succeeds when at least one is READY.
pub async fn load(state: &AppState, model: &str) -> Result<(), CatalogError> {
    crate::repository::check_model_name(model)?;
    if !state
        .repo
        .model_names()
        .unwrap_or_default()
        .iter()
        .any(|m| m == model)
    {
        return Err(CatalogError::NoSuchModel(model.to_string()));
    }
    let repo = state.repo.clone();
    let name = model.to_string();
    let ready = tokio::task::spawn_blocking(move || repo.load_model(&name))
        .await
        .unwrap_or_default();
    let failed = |reason: String| CatalogError::LoadFailed {
        model: model.to_string(),
        reason,
    };
    match state.repo.snapshot().models.get(model) {
        Some(m) if m.error.is_some() => Err(failed(m.error.clone().unwrap_or_default())),
        Some(_) if !ready.is_empty() => Ok(()),
        _ => Err(failed("no version became READY".into())),
    }
}

/// Removes a model and all its versions from serving; refused while a
/// rollout holds it or a traffic policy routes to it.
pub fn unload(state: &AppState, model: &str) -> Result<(), CatalogError> {
    if state.rollout_holds_any(model) {
        return Err(CatalogError::RolloutActive(model.to_string()));
    }
    state.repo.unload_model(model)?;
    tracing::info!(model = %model, "model unloaded");
    Ok(())
}
