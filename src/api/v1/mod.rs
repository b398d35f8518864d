//! V1: the TensorFlow Serving REST API.
//!
//! A *target path* is what follows `/v1/models/`: a model, optionally
//! `/versions/{n}` or `/labels/{l}`, and for POST a `:verb` glued to the last
//! segment (`digits:predict`, `digits/labels/stable:predict`). axum cannot
//! match half a segment, so routes capture the whole last segment and
//! [`split_verb`] cuts the verb off.
//!
//! Differences from V2 that TF Serving clients rely on: `/versions/{n}` takes
//! numbers only (non-numeric → 400), an unknown label is a 400, versions are
//! reported as strings, and NaN / ±infinity travel as bare JSON tokens.

mod decode;
mod nonfinite;
mod predict;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use serde_json::json;

use crate::api::error::{error_body, ApiError, PredictError};
use crate::api::request::{self, Peer};
use crate::api::respond::{body_bytes, json, json_response};
use crate::repository::{ModelEntry, VersionEntry, VersionState};
use crate::runtime::{Signature, TensorSpec};
use crate::serving::infer::{self, Outcome, Protocol, RunOptions};
use crate::serving::{AppState, ServeError};
use crate::traffic::{self, RouteError, Target, VersionSelector};

/// The V1 routes.
pub(super) fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/v1/models", get(list_models))
        .route("/v1/models/{model}", get(status).post(post_model))
        .route("/v1/models/{model}/metadata", get(metadata))
        .route(
            "/v1/models/{model}/versions/{version}",
            get(status_versioned).post(post_versioned),
        )
        .route(
            "/v1/models/{model}/versions/{version}/metadata",
            get(metadata_versioned),
        )
        .route(
            "/v1/models/{model}/labels/{label}",
            get(status_labelled).post(post_labelled),
        )
        .route(
            "/v1/models/{model}/labels/{label}/metadata",
            get(metadata_labelled),
        )
}

/// What a POST asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb<'a> {
    Predict,
    Classify,
    Regress,
    Other(&'a str),
}

/// Splits `name:verb` into the name and the verb (`None` without a colon).
fn split_verb(segment: &str) -> (&str, Option<Verb<'_>>) {
    match segment.rsplit_once(':') {
        None => (segment, None),
        Some((name, verb)) => (
            name,
            Some(match verb {
                "predict" => Verb::Predict,
                "classify" => Verb::Classify,
                "regress" => Verb::Regress,
                other => Verb::Other(other),
            }),
        ),
    }
}

/// Parses the `{n}` of `/versions/{n}`: V1 versions are integers only.
fn parse_version<'a>(model: &str, segment: &str) -> Result<VersionSelector<'a>, ApiError> {
    segment.parse::<u64>().map(VersionSelector::Number).map_err(|_| {
        ApiError::BadRequest(format!(
            "version '{segment}' of model '{model}' is not a number; \
             /versions/{{n}} takes an integer (use /labels/{{label}} for a label)"
        ))
    })
}

/// V1's reading of a routing failure: an unknown label is the client's
/// mistake (400), as in TF Serving; everything else as everywhere.
fn route_error(e: RouteError) -> ApiError {
    match e {
        RouteError::UnknownLabel(m, l) => {
            ApiError::BadRequest(format!("unknown version label '{l}' of model '{m}'"))
        }
        other => other.into(),
    }
}

fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(IntoResponse::into_response)
}

// ---- model list -----------------------------------------------------------

/// `GET /v1/models`: `{"models": ["<name>", ...]}`, sorted (a switchyard
/// addition; TF Serving has no such route).
async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let snapshot = state.repo.snapshot();
    let names: Vec<&str> = snapshot.models.keys().map(String::as_str).collect();
    json(&json!({ "models": names }))
}

// ---- model status -----------------------------------------------------------

/// One `model_version_status` entry: TF Serving's `ModelVersionStatus` in
/// proto3 JSON (int64 version as a string), fields in proto order.
#[derive(Serialize)]
struct VersionStatus<'a> {
    version: String,
    state: &'static str,
    status: StatusProto<'a>,
}

#[derive(Serialize)]
struct StatusProto<'a> {
    error_code: &'static str,
    error_message: &'a str,
}

/// Our states in TF Serving's vocabulary; a version that failed to load
/// has reached END with an error.
fn version_status(v: &VersionEntry) -> VersionStatus<'_> {
    let (state, error_code, error_message) = match &v.state {
        VersionState::Loading => ("LOADING", "OK", ""),
        VersionState::Ready => ("AVAILABLE", "OK", ""),
        VersionState::Unloading => ("UNLOADING", "OK", ""),
        VersionState::Unavailable(reason) => ("END", "UNKNOWN", reason.as_str()),
    };
    VersionStatus {
        version: v.number.to_string(),
        state,
        status: StatusProto {
            error_code,
            error_message,
        },
    }
}

/// The status of every version of `model` (`selector` = `Default`) or of
/// the one version the selector names.
fn model_status(
    state: &AppState,
    model: &str,
    selector: Result<VersionSelector<'_>, ApiError>,
) -> Result<Response, ApiError> {
    let selector = selector?;
    let snapshot = state.repo.snapshot();
    let m = traffic::model(&snapshot, model).map_err(route_error)?;
    let entries: Vec<VersionStatus<'_>> = match selector {
        VersionSelector::Default => {
            if m.versions.is_empty() {
                return Err(ApiError::NotFound(format!("model '{model}' has no versions")));
            }
            m.versions.values().map(version_status).collect()
        }
        selector => {
            let (v, _) = traffic::version_number(m, selector).map_err(route_error)?;
            let entry = m
                .versions
                .get(&v)
                .ok_or_else(|| route_error(RouteError::UnknownVersion(model.to_string(), v)))?;
            vec![version_status(entry)]
        }
    };
    Ok(json(&json!({ "model_version_status": entries })))
}

async fn status(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    Path(model): Path<String>,
) -> Response {
    if split_verb(&model).1.is_some() {
        return verb_needs_post(&method, &uri);
    }
    respond(model_status(&state, &model, Ok(VersionSelector::Default)))
}

async fn status_versioned(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    if split_verb(&version).1.is_some() {
        return verb_needs_post(&method, &uri);
    }
    respond(model_status(&state, &model, parse_version(&model, &version)))
}

async fn status_labelled(
    State(state): State<Arc<AppState>>,
    method: Method,
    uri: Uri,
    Path((model, label)): Path<(String, String)>,
) -> Response {
    if split_verb(&label).1.is_some() {
        return verb_needs_post(&method, &uri);
    }
    respond(model_status(&state, &model, Ok(VersionSelector::Label(&label))))
}

fn verb_needs_post(method: &Method, uri: &Uri) -> Response {
    error_body(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method {method} is not allowed on {}; use POST", uri.path()),
    )
}

// ---- metadata -----------------------------------------------------------------

/// TF Serving's `GetModelMetadataResponse` in proto3 JSON, fields in proto
/// order: `metadata` holds one `signature_def` entry, itself a
/// `SignatureDefMap` (hence `signature_def.signature_def`).
#[derive(Serialize)]
struct MetadataResponse<'a> {
    model_spec: ModelSpec<'a>,
    metadata: Metadata<'a>,
}

#[derive(Serialize)]
struct ModelSpec<'a> {
    name: &'a str,
    signature_name: &'static str,
    version: String,
}

#[derive(Serialize)]
struct Metadata<'a> {
    signature_def: SignatureDefMap<'a>,
}

#[derive(Serialize)]
struct SignatureDefMap<'a> {
    signature_def: BTreeMap<&'static str, SignatureDef<'a>>,
}

#[derive(Serialize)]
struct SignatureDef<'a> {
    inputs: BTreeMap<&'a str, TensorInfo<'a>>,
    outputs: BTreeMap<&'a str, TensorInfo<'a>>,
    method_name: &'static str,
}

/// TF Serving's `TensorInfo` in proto3 JSON (int64 sizes as strings).
#[derive(Serialize)]
struct TensorInfo<'a> {
    dtype: &'static str,
    tensor_shape: TensorShape,
    name: &'a str,
}

#[derive(Serialize)]
struct TensorShape {
    dim: Vec<Dim>,
    unknown_rank: bool,
}

#[derive(Serialize)]
struct Dim {
    size: String,
    name: &'static str,
}

/// Tensor name → `TensorInfo`, as a `SignatureDef` lists them.
fn tensor_map(specs: &[TensorSpec]) -> BTreeMap<&str, TensorInfo<'_>> {
    specs
        .iter()
        .map(|spec| {
            let info = TensorInfo {
                dtype: spec.datatype.tf_name(),
                tensor_shape: TensorShape {
                    dim: spec
                        .shape
                        .iter()
                        .map(|d| Dim {
                            size: d.to_string(),
                            name: "",
                        })
                        .collect(),
                    unknown_rank: false,
                },
                name: &spec.name,
            };
            (spec.name.as_str(), info)
        })
        .collect()
}

/// The signature of a READY version, or 503 when it is not READY.
fn signature_of(m: &ModelEntry, v: u64) -> Result<Arc<Signature>, ApiError> {
    m.versions
        .get(&v)
        .and_then(|e| e.signature().cloned())
        .ok_or_else(|| {
            let state = m.versions.get(&v).map(|e| e.state.name()).unwrap_or("not loaded");
            route_error(RouteError::NotReady(m.name.clone(), v, state.to_string()))
        })
}

/// TF Serving's GetModelMetadataResponse for the one signature an ONNX
/// model has.
fn model_metadata(
    state: &AppState,
    model: &str,
    selector: Result<VersionSelector<'_>, ApiError>,
) -> Result<Response, ApiError> {
    let selector = selector?;
    let snapshot = state.repo.snapshot();
    let m = traffic::model(&snapshot, model).map_err(route_error)?;
    let (v, _) = traffic::version_number(m, selector).map_err(route_error)?;
    let signature = signature_of(m, v)?;
    let signature_def = SignatureDef {
        inputs: tensor_map(&signature.inputs),
        outputs: tensor_map(&signature.outputs),
        method_name: "tensorflow/serving/predict",
    };
    Ok(json(&MetadataResponse {
        model_spec: ModelSpec {
            name: model,
            signature_name: "",
            version: v.to_string(),
        },
        metadata: Metadata {
            signature_def: SignatureDefMap {
                signature_def: BTreeMap::from([(predict::SERVING_DEFAULT, signature_def)]),
            },
        },
    }))
}

async fn metadata(State(state): State<Arc<AppState>>, Path(model): Path<String>) -> Response {
    respond(model_metadata(&state, &model, Ok(VersionSelector::Default)))
}

async fn metadata_versioned(
    State(state): State<Arc<AppState>>,
    Path((model, version)): Path<(String, String)>,
) -> Response {
    respond(model_metadata(&state, &model, parse_version(&model, &version)))
}

async fn metadata_labelled(
    State(state): State<Arc<AppState>>,
    Path((model, label)): Path<(String, String)>,
) -> Response {
    respond(model_metadata(&state, &model, Ok(VersionSelector::Label(&label))))
}

// ---- predict ------------------------------------------------------------------

async fn post_model(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    uri: Uri,
    headers: HeaderMap,
    Path(segment): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (model, verb) = split_verb(&segment);
    post(
        &state,
        peer,
        model,
        Ok(VersionSelector::Default),
        verb,
        &uri,
        &headers,
        body,
    )
    .await
}

async fn post_versioned(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    uri: Uri,
    headers: HeaderMap,
    Path((model, segment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (version, verb) = split_verb(&segment);
    post(
        &state,
        peer,
        &model,
        parse_version(&model, version),
        verb,
        &uri,
        &headers,
        body,
    )
    .await
}

async fn post_labelled(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    uri: Uri,
    headers: HeaderMap,
    Path((model, segment)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let (label, verb) = split_verb(&segment);
    post(
        &state,
        peer,
        &model,
        Ok(VersionSelector::Label(label)),
        verb,
        &uri,
        &headers,
        body,
    )
    .await
}

/// Dispatches a POST on its verb.
#[allow(clippy::too_many_arguments)]
async fn post(
    state: &AppState,
    peer: Peer,
    model: &str,
    selector: Result<VersionSelector<'_>, ApiError>,
    verb: Option<Verb<'_>>,
    uri: &Uri,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match verb {
        None => error_body(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!(
                "method POST is not allowed on {}; POST needs a verb, e.g. {}:predict",
                uri.path(),
                uri.path()
            ),
        ),
        Some(Verb::Classify | Verb::Regress) => {
            let verb = if verb == Some(Verb::Classify) {
                "classify"
            } else {
                "regress"
            };
            ApiError::NotImplemented(format!(
                ":{verb} is not supported: ONNX models have no TF classify/regress signatures; use :predict"
            ))
            .into_response()
        }
        Some(Verb::Other(other)) => error_body(
            StatusCode::NOT_FOUND,
            &format!(
                "unknown verb ':{other}' in {}; V1 knows :predict, :classify, :regress",
                uri.path()
            ),
        ),
        Some(Verb::Predict) => match selector {
            Ok(selector) => run_predict(state, peer, model, selector, headers, body).await,
            Err(e) => e.into_response(),
        },
    }
}

async fn run_predict(
    state: &AppState,
    peer: Peer,
    model: &str,
    selector: VersionSelector<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let caller = match request::caller(state, headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let pin = caller.pin;
    let target = match infer::admit(state, model, selector, caller, peer.0) {
        Ok(t) => t,
        Err(ServeError::Route(e)) => return route_error(e).into_response(),
        Err(e) => return ApiError::from(e).into_response(),
    };
    let result = match body_bytes(body, state.settings.body_limit) {
        Ok(body) => predict_json(state, &target, body, headers).await,
        Err(e) => Err(e.into()),
    };
    let (mut resp, outcome) = match result {
        Ok(resp) => (resp, Outcome::Served),
        Err(e) => (e.error.into_response(), e.outcome),
    };
    request::route_headers(&mut resp, &target, pin);
    infer::observe(state, &target, Protocol::V1, outcome, started.elapsed());
    resp
}

/// Bodies at least this large are decoded on a blocking thread.
const DECODE_INLINE_MAX: usize = 64 << 10;

/// Decodes a predict body; a large one on a blocking thread, so that
/// decoding megabytes of JSON does not hold up the async workers that read
/// other requests' bodies and answer probes. The body is dropped once
/// decoded: only the tensors stay while the model runs.
async fn decode_off_the_workers(body: Bytes, target: &Target) -> Result<predict::Decoded, ApiError> {
    let model = target.model.name.clone();
    let signature = target.runtime.signature().clone();
    if body.len() < DECODE_INLINE_MAX {
        return decode::decode_request(&body, &signature, &model);
    }
    tokio::task::spawn_blocking(move || decode::decode_request(&body, &signature, &model))
        .await
        .map_err(|e| ApiError::Internal(format!("decoding the request failed: {e}")))?
}

/// Decodes a predict body, runs it on `target`, encodes the answer.
async fn predict_json(
    state: &AppState,
    target: &Target,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<Response, PredictError> {
    let model = target.model.name.as_str();
    let request = decode_off_the_workers(body, target).await?;
    let options = RunOptions {
        client_timeout: request::client_timeout(headers)?,
        reject_nonfinite: request::reject_nonfinite(headers),
    };
    let mirror = target.shadow.as_ref().map(|_| request.inputs.clone());
    let outputs = infer::run(target, request.inputs, options).await?;
    let request_id = request::request_id(headers);
    infer::remember(state, request_id.as_deref(), target);
    if let Some(inputs) = mirror {
        infer::mirror(state, target, inputs, &outputs, request_id);
    }
    let body = predict::encode_response(request.format, &outputs, model)?;
    Ok(json_response(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_split_off_the_last_segment() {
        assert_eq!(split_verb("digits:predict"), ("digits", Some(Verb::Predict)));
        assert_eq!(split_verb("2:classify"), ("2", Some(Verb::Classify)));
        assert_eq!(split_verb("stable:regress"), ("stable", Some(Verb::Regress)));
        assert_eq!(
            split_verb("digits:explain"),
            ("digits", Some(Verb::Other("explain")))
        );
        assert_eq!(split_verb("digits"), ("digits", None));
    }

    #[test]
    fn versions_are_numbers_only() {
        assert_eq!(parse_version("m", "3").unwrap(), VersionSelector::Number(3));
        let err = parse_version("m", "stable").unwrap_err();
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("'stable'"), "{err}");
    }

    #[test]
    fn an_unknown_label_is_a_bad_request() {
        let e = route_error(RouteError::UnknownLabel("m".into(), "gold".into()));
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let e = route_error(RouteError::UnknownVersion("m".into(), 9));
        assert_eq!(e.status(), StatusCode::NOT_FOUND);
    }
}
