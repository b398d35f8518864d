//! The admin API on the admin listener: models, versions and
//! their states, traffic policies, version load/unload, shadow results,
//! rollouts and rollback, and the fleet this server belongs to. Guarded by
//! a bearer token when one is configured.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Serialize;

use super::respond::{body_bytes, json, json_object};
use crate::api::error::ApiError;
use crate::policy::{PolicySpec, Weight};
use crate::repository::{ModelEntry, VersionState};
use crate::rollout::machine::{Action, Event, Phase, Rollout};
use crate::rollout::spec_file::{self, SpecFormat};
use crate::serving::{AppState, Control};

/// The admin routes under `/admin/v1`.
pub(super) fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/admin/v1/models", get(list_models))
        .route("/admin/v1/models/{model}", get(get_model))
        .route("/admin/v1/models/{model}/policy", get(get_policy).put(put_policy))
        .route(
            "/admin/v1/models/{model}/versions/{version}/load",
            post(load_version),
        )
        .route(
            "/admin/v1/models/{model}/versions/{version}/unload",
            post(unload_version),
        )
        .route("/admin/v1/models/{model}/shadow", get(shadow))
        .route("/admin/v1/models/{model}/rollback", post(rollback))
        .route("/admin/v1/models/{model}/rollouts", post(start_rollout))
        .route("/admin/v1/models/{model}/rollout", get(get_rollout))
        .route("/admin/v1/models/{model}/rollout/{action}", post(rollout_action))
        .route("/admin/v1/models/{model}/events", get(events))
        .route("/admin/v1/fleet", get(fleet))
        .route_layer(axum::middleware::from_fn_with_state(state, require_token))
}

/// Rejects requests without the configured bearer token (constant-time
/// comparison). Without a configured token (loopback only) everything passes.
pub async fn require_token(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Err(e) = check_token(&state, request.headers()) {
        return e.into_response();
    }
    next.run(request).await
}

/// Checks the `Authorization: Bearer` header against the admin token.
pub fn check_token(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if state.authorized(given) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "missing or wrong admin token (send Authorization: Bearer <SWITCHYARD_ADMIN_TOKEN>)".into(),
        ))
    }
}

#[derive(Serialize)]
pub(super) struct VersionView {
    version: u64,
    state: &'static str,
    reason: String,
}

#[derive(Serialize)]
pub(super) struct ModelView {
    name: String,
    versions: Vec<VersionView>,
    labels: BTreeMap<String, u64>,
    /// The policy in force: set through the admin API, or the default.
    policy: Option<PolicySpec>,
    policy_source: &'static str,
    routed: Vec<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    previous_stable: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// `config.pbtxt` fields that are set but not acted on.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    config_warnings: Vec<String>,
}

/// What the admin API says about one model.
pub(super) fn view(m: &ModelEntry) -> ModelView {
    let mut labels = m.config.labels.clone();
    let (policy, source) = match &m.policy {
        Some(p) => (Some(p.spec().clone()), "admin"),
        None => (m.default_version().map(PolicySpec::pinned), "default"),
    };
    if let Some(p) = &m.policy {
        for name in ["stable", "candidate", "preview"] {
            if let Some(v) = p.label(name) {
                labels.insert(name.to_string(), v);
            }
        }
        labels.extend(p.spec().labels.clone());
    } else if let Some(v) = m.default_version() {
        labels.insert("stable".into(), v);
    }
    ModelView {
        name: m.name.clone(),
        versions: m
            .versions
            .values()
            .map(|v| VersionView {
                version: v.number,
                state: v.state.name(),
                reason: v.state.reason().to_string(),
            })
            .collect(),
        labels,
        policy,
        policy_source: source,
        routed: m.routed(),
        previous_stable: m.previous_stable.map(|p| p.version),
        error: m.error.clone(),
        config_warnings: m.config.ignored.clone(),
    }
}

fn model_entry(state: &AppState, model: &str) -> Result<Arc<ModelEntry>, ApiError> {
    state
        .repo
        .snapshot()
        .models
        .get(model)
        .cloned()
        .ok_or_else(|| ApiError::NotFound(format!("unknown model '{model}'")))
}

async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.repo.snapshot();
    let models: Vec<ModelView> = snapshot.models.values().map(|m| view(m)).collect();
    json(&serde_json::json!({ "models": models }))
}

async fn get_model(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match model_entry(&state, &model) {
        Ok(m) => json(&view(&m)),
        Err(e) => e.into_response(),
    }
}

async fn get_policy(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match model_entry(&state, &model) {
        Ok(m) => {
            let v = view(&m);
            json(&serde_json::json!({"policy": v.policy, "source": v.policy_source}))
        }
        Err(e) => e.into_response(),
    }
}

/// `?force=true` on a policy PUT.
#[derive(Debug, Default, serde::Deserialize)]
struct PolicyQuery {
    #[serde(default)]
    force: bool,
}

/// `PUT .../policy`: refused (409) while a rollout is active, unless
/// `?force=true`, which aborts the rollout first; every change is an event
/// of the model's audit log.
async fn put_policy(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    query: Result<Query<PolicyQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let Control::Local { store, .. } = &state.control else {
            return Err(ApiError::Conflict(format!(
                "fleet mode: the traffic policy of model '{model}' comes from its ModelRollout; \
                 start a rollout or roll back instead"
            )));
        };
        let force = query
            .map_err(|e| ApiError::BadRequest(format!("invalid query: {e}")))?
            .force;
        let body = body_bytes(body, state.settings.body_limit)?;
        let spec: PolicySpec = json_object(&body, "a JSON object")
            .map_err(|e| ApiError::BadRequest(format!("invalid policy for model '{model}': {e}")))?;
        model_entry(&state, &model)?;
        let active = store
            .newest(&model)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .filter(|r| !r.phase.is_final());
        if let Some(r) = &active {
            if !force {
                return Err(ApiError::Conflict(format!(
                    "model '{model}' has an active rollout (id {}, {} → {}, {}): its policy belongs to the \
                     rollout; pause, promote or abort it, or add ?force=true to abort it and set this policy",
                    r.id,
                    r.stable,
                    r.candidate,
                    r.phase.name()
                )));
            }
            // the rollout ends first, so its abort policy cannot undo this one
            state.rollouts.act(&model, Action::Abort).await?;
        }
        let policy = state.repo.set_policy(&model, spec)?;
        let decision = match &active {
            Some(r) => format!(
                "traffic policy set by hand with force, aborting rollout {}: stable {}",
                r.id,
                policy.stable()
            ),
            None => format!("traffic policy set by hand: stable {}", policy.stable()),
        };
        let event = Event {
            at: crate::rollout::controller::now_secs(),
            phase: active.as_ref().map_or(Phase::Promoted, |_| Phase::Aborted),
            step: active.as_ref().map_or(0, |r| r.step),
            weight: policy
                .spec()
                .candidate
                .as_ref()
                .map_or(Weight::ZERO, |c| c.weight),
            decision,
            metrics: serde_json::json!({"policy": policy.spec()}),
            actor: "admin".into(),
        };
        if let Err(e) = store.record(&model, &event) {
            tracing::warn!(model = %model, error = %e, "policy change not recorded in the audit log");
        }
        Ok::<_, ApiError>(json(
            &serde_json::json!({"policy": policy.spec(), "source": "admin"}),
        ))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

fn parse_version(model: &str, version: &str) -> Result<u64, ApiError> {
    crate::repository::parse_version_dir(version).ok_or_else(|| {
        ApiError::BadRequest(format!(
            "version '{version}' of model '{model}' is not a positive integer"
        ))
    })
}

async fn load_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    let v = match parse_version(&model, &version) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    // a name that is no directory of the repository never reaches the disk
    if let Err(e) = crate::repository::check_model_name(&model) {
        return ApiError::from(e).into_response();
    }
    let repo = state.repo.clone();
    let name = model.clone();
    let result = tokio::task::spawn_blocking(move || repo.load_specific(&name, v)).await;
    match result {
        Ok(Ok(VersionState::Unavailable(reason))) => {
            ApiError::BadRequest(format!("version {v} of model '{model}' failed to load: {reason}"))
                .into_response()
        }
        Ok(Ok(st)) => json(&serde_json::json!({"model": model, "version": v, "state": st.name()})),
        Ok(Err(e)) => ApiError::from(e).into_response(),
        Err(e) => ApiError::Internal(format!("loading failed: {e}")).into_response(),
    }
}

async fn unload_version(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    let result = parse_version(&model, &version).and_then(|v| {
        state
            .repo
            .unload_version(&model, v, state.settings.rollback_window)
            .map(|()| v)
            .map_err(ApiError::from)
    });
    match result {
        Ok(v) => {
            tracing::info!(model = %model, version = v, "version unloaded");
            json(&serde_json::json!({"model": model, "version": v, "state": "UNLOADED"}))
        }
        Err(e) => e.into_response(),
    }
}

async fn shadow(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match model_entry(&state, &model) {
        Ok(m) => {
            let current = m.policy.as_ref().and_then(|p| p.spec().shadow.clone());
            json(&serde_json::json!({
                "model": model,
                "shadow": current,
                "pairs": state.shadow.stats(&model),
            }))
        }
        Err(e) => e.into_response(),
    }
}

async fn rollback(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    match state.rollouts.rollback(&model).await {
        Ok(policy) => {
            tracing::warn!(model = %model, stable = policy.stable, "rolled back");
            json(&serde_json::json!({"policy": policy, "source": "admin"}))
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What the admin API says about one rollout.
pub(super) fn rollout_view(r: &Rollout) -> serde_json::Value {
    serde_json::json!({
        "id": r.id,
        "model": r.model,
        "strategy": r.spec.strategy,
        "stable": r.stable,
        "candidate": r.candidate,
        "phase": r.phase,
        "step": r.step,
        "steps": r.step_count(),
        "weight": r.weight(),
        "bake_left_secs": r.bake_left(crate::rollout::controller::now_secs()),
        "policy": r.policy(),
        "started_at": r.started_at,
        "step_started_at": r.step_started_at,
        "inconclusive_since": r.inconclusive_since,
        "failures": r.failures,
        "last_analysis_at": r.last_analysis_at,
        "last_analysis": r.last_analysis,
        "reason": r.reason,
        "ab_result": r.ab_result,
        "spec": r.spec,
        "revision": r.revision,
        "revision_converged_at": r.revision_converged_at,
        "metric_errors": r.metric_errors,
        "keeps": r.kept,
    })
}

async fn start_rollout(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let body = body_bytes(body, state.settings.body_limit)?;
        let text = std::str::from_utf8(&body)
            .map_err(|_| ApiError::BadRequest("rollout spec is not UTF-8".into()))?;
        let format = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(SpecFormat::from_content_type);
        let spec = spec_file::parse(text, format)
            .map_err(|e| ApiError::BadRequest(format!("invalid rollout spec: {e}")))?;
        let r = state.rollouts.start(&model, spec).await?;
        Ok::<_, ApiError>(json(&rollout_view(&r)))
    }
    .await;
    result.unwrap_or_else(|e| e.into_response())
}

async fn get_rollout(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    if let Err(e) = model_entry(&state, &model) {
        return e.into_response();
    }
    match state.rollouts.get(&model).await {
        Ok(Some(r)) => json(&rollout_view(&r)),
        Ok(None) => ApiError::NotFound(format!(
            "model '{model}' has no rollout yet (start one with POST /admin/v1/models/{model}/rollouts)"
        ))
        .into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn rollout_action(
    State(state): State<Arc<AppState>>,
    Path((model, action)): Path<(String, String)>,
) -> Response {
    let Some(a) = Action::parse(&action) else {
        return ApiError::NotFound(format!(
            "unknown rollout action '{action}' (promote, promote-full, pause, resume, abort, retry)"
        ))
        .into_response();
    };
    if let Err(e) = model_entry(&state, &model) {
        return e.into_response();
    }
    match state.rollouts.act(&model, a).await {
        Ok(r) => json(&rollout_view(&r)),
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn events(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    if let Err(e) = model_entry(&state, &model) {
        return e.into_response();
    }
    match state.rollouts.events(&model).await {
        Ok(events) => json(&serde_json::json!({
            "model": model,
            "events": events
                .into_iter()
                .map(|(id, e)| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["rollout"] = id.into();
                    v
                })
                .collect::<Vec<_>>(),
        })),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// `GET /admin/v1/fleet`: this server's identity, the leader, and the
/// policy revision it holds per model.
async fn fleet(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.repo.snapshot();
    let revisions: BTreeMap<&str, u64> = snapshot
        .models
        .iter()
        .filter(|(_, m)| m.policy.is_some())
        .map(|(name, m)| (name.as_str(), m.policy_revision))
        .collect();
    let body = match state.fleet() {
        Some(f) => {
            let v = f.view();
            serde_json::json!({
                "mode": "kubernetes",
                "pod": v.pod,
                "namespace": v.namespace,
                "leader": v.leader,
                "leading": v.leading,
                "synced": v.unsynced.is_none(),
                "unsynced": v.unsynced,
                "revisions": revisions,
            })
        }
        None => serde_json::json!({
            "mode": "local",
            "pod": state.settings.pod_name,
            "leader": null,
            "revisions": revisions,
        }),
    };
    json(&body)
}
