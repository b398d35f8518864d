//! V2: the Open Inference Protocol (KServe V2 / Triton), SPEC §3.1.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::{body_bytes, health, json, json_response, AppState};
use crate::error::ApiError;
use crate::repository::ModelEntry;
use crate::runtime::{Signature, TensorSpec};
use crate::tensor::json::{decode, FlatJson};
use crate::tensor::{DataType, Tensor};
use crate::traffic::{self, Target, VersionSelector};

/// Extensions of the Triton/KServe protocol this server implements.
pub const EXTENSIONS: &[&str] = &["model_repository", "statistics"];

/// The V2 routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/", get(server_metadata))
        .route("/v2/health/live", get(health::v2_live))
        .route("/v2/health/ready", get(health::v2_ready))
        .route("/v2/models/{model}", get(model_metadata))
        .route(
            "/v2/models/{model}/versions/{version}",
            get(model_metadata_versioned),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready_versioned),
        )
        .route("/v2/models/{model}/infer", post(infer))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_versioned),
        )
        .merge(super::stats::routes())
}

async fn server_metadata() -> Response {
    json(&serde_json::json!({
        "name": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": EXTENSIONS,
    }))
}

#[derive(Serialize)]
struct ModelMetadata<'a> {
    name: &'a str,
    versions: Vec<String>,
    platform: &'static str,
    inputs: &'a [TensorSpec],
    outputs: &'a [TensorSpec],
}

fn metadata(state: &AppState, model: &str, selector: VersionSelector<'_>) -> Result<Response, ApiError> {
    let snapshot = state.repo.snapshot();
    let m = traffic::model(&snapshot, model)?;
    let (v, _) = traffic::version_number(m, selector)?;
    let signature = signature_of(m, v)?;
    Ok(json(&ModelMetadata {
        name: model,
        versions: m.ready_versions().map(|v| v.number.to_string()).collect(),
        platform: "onnx_onnxv1",
        inputs: &signature.inputs,
        outputs: &signature.outputs,
    }))
}

/// The signature of a loaded version, or 503 when it is not READY.
fn signature_of(m: &ModelEntry, v: u64) -> Result<Arc<Signature>, ApiError> {
    m.versions
        .get(&v)
        .and_then(|e| e.signature().cloned())
        .ok_or_else(|| {
            let state = m.versions.get(&v).map(|e| e.state.name()).unwrap_or("not loaded");
            traffic::RouteError::NotReady(m.name.clone(), v, state.to_string()).into()
        })
}

async fn model_metadata(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    metadata(&state, &model, VersionSelector::Default).into_response()
}

async fn model_metadata_versioned(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    metadata(&state, &model, VersionSelector::from_path(&version)).into_response()
}

fn ready(state: &AppState, model: &str, selector: VersionSelector<'_>) -> Result<Response, ApiError> {
    let snapshot = state.repo.snapshot();
    traffic::resolve(&snapshot, model, selector)?;
    Ok(json(&serde_json::json!({"name": model, "ready": true})))
}

async fn model_ready(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    ready(&state, &model, VersionSelector::Default).into_response()
}

async fn model_ready_versioned(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    ready(&state, &model, VersionSelector::from_path(&version)).into_response()
}

/// An inference request as it arrives; tensor data stays raw JSON until the
/// model's signature is known.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<InputTensor<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTensor<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
    #[allow(dead_code)]
    parameters: Option<Map<String, Value>>,
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    data: FlatJson<'a>,
}

async fn infer(
    State(state): State<Arc<AppState>>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(&state, &model, VersionSelector::Default, &headers, body).await
}

async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(
        &state,
        &model,
        VersionSelector::from_path(&version),
        &headers,
        body,
    )
    .await
}

async fn run_infer(
    state: &AppState,
    model: &str,
    selector: VersionSelector<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = super::caller(state, headers);
    let target = match traffic::route(&state.repo.snapshot(), model, selector, caller) {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let result = match body_bytes(body, state.config.body_limit) {
        Ok(body) => infer_json(state, &target, &body, headers).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    super::route_headers(&mut resp, &target);
    resp
}

/// Decodes a JSON inference request, runs it on `target`, encodes the answer.
async fn infer_json(
    state: &AppState,
    target: &Target,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let model = target.model.name.as_str();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "request body is empty; expected a JSON inference request with \"inputs\"".into(),
        ));
    }
    let request: InferRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid inference request: {e}")))?;
    let signature = target.runtime.signature();
    let selected = select_outputs(signature, request.outputs.as_deref(), model)?;
    let mut tensors = Vec::with_capacity(request.inputs.len());
    for input in &request.inputs {
        tensors.push(decode_input(input)?);
    }
    let _ = &request.parameters;
    let inputs = signature
        .order_inputs(tensors)
        .map_err(|e| ApiError::BadRequest(format!("model '{model}': {e}")))?;
    let mirror = target.shadow.as_ref().map(|_| inputs.clone());
    let outputs = target
        .runtime
        .infer(inputs, None)
        .await
        .map_err(|e| ApiError::from_runtime(model, target.version, e))?;
    if let Some(inputs) = mirror {
        let request_id = request.id.clone().or_else(|| super::request_id(headers));
        super::mirror(state, target, inputs, &outputs, request_id);
    }
    let response = InferResponse {
        model_name: model,
        model_version: target.version.to_string(),
        id: request.id.as_deref(),
        outputs: selected
            .iter()
            .map(|&i| {
                let t = &outputs[i];
                OutputTensor {
                    name: &t.name,
                    datatype: t.dtype().name(),
                    shape: &t.shape,
                    data: FlatJson(&t.data),
                }
            })
            .collect(),
    };
    let body = serde_json::to_vec(&response)
        .map_err(|e| ApiError::Internal(format!("could not encode the response: {e}")))?;
    Ok(json_response(body))
}

/// Indices of the outputs to return: those requested, else all.
fn select_outputs(
    signature: &Signature,
    requested: Option<&[RequestedOutput]>,
    model: &str,
) -> Result<Vec<usize>, ApiError> {
    match requested {
        None => Ok((0..signature.outputs.len()).collect()),
        Some(list) => list
            .iter()
            .map(|o| {
                signature.output_index(&o.name).ok_or_else(|| {
                    let known: Vec<&str> = signature.outputs.iter().map(|t| t.name.as_str()).collect();
                    ApiError::BadRequest(format!(
                        "model '{model}' has no output '{}' (it has {})",
                        o.name,
                        known.join(", ")
                    ))
                })
            })
            .collect(),
    }
}

fn decode_input(input: &InputTensor<'_>) -> Result<Tensor, ApiError> {
    let name = &input.name;
    let dtype = DataType::from_name(&input.datatype).ok_or_else(|| {
        ApiError::BadRequest(format!("input '{name}': unknown datatype '{}'", input.datatype))
    })?;
    let raw = input
        .data
        .ok_or_else(|| ApiError::BadRequest(format!("input '{name}': missing \"data\"")))?;
    let data = decode(raw.get(), dtype, &input.shape)
        .map_err(|e| ApiError::BadRequest(format!("input '{name}': data {e}")))?;
    Ok(Tensor {
        name: name.clone(),
        shape: input.shape.clone(),
        data,
    })
}
