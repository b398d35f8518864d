//! V2: the Open Inference Protocol (KServe V2 / Triton) over HTTP/JSON,
//! with Triton's binary tensor data extension.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::health;
use super::request::{self, Peer};
use super::respond::{body_bytes, json, json_object, json_response};
use crate::api::error::{ApiError, PredictError};
use crate::runtime::{Signature, TensorSpec};
use crate::serving::describe::describe;
use crate::serving::infer::{self, Outcome, Protocol, RunOptions};
use crate::serving::limits::client_string;
use crate::serving::AppState;
use crate::tensor::binary;
use crate::tensor::json::{decode, DataSeed, FlatJson};
use crate::tensor::{DataType, Tensor, TensorData};
use crate::traffic::{self, Target, VersionSelector};

/// Extensions of the Triton/KServe protocol this server implements
/// (`model_repository` only while `--repository-api` turns it on).
pub const EXTENSIONS: &[&str] = &["binary_tensor_data", "model_repository", "statistics"];

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

/// The extensions a server lists: `model_repository` only when the
/// repository API is on.
pub fn extensions(repository_api: bool) -> Vec<&'static str> {
    EXTENSIONS
        .iter()
        .copied()
        .filter(|e| *e != "model_repository" || repository_api)
        .collect()
}

async fn server_metadata(State(state): State<Arc<AppState>>) -> Response {
    json(&serde_json::json!({
        "name": "switchyard",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": extensions(state.settings.repository_api),
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
    let d = describe(&state.repo.snapshot(), model, selector)?;
    Ok(json(&ModelMetadata {
        name: model,
        versions: d.versions,
        platform: d.platform,
        inputs: &d.signature.inputs,
        outputs: &d.signature.outputs,
    }))
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
    let target = traffic::resolve(&snapshot, model, selector)?;
    if !target.runtime.is_healthy() {
        return Err(traffic::RouteError::NotReady(
            model.to_string(),
            target.version,
            "a worker is being replaced".into(),
        )
        .into());
    }
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

/// An inference request as it arrives. `I` is how its inputs are read:
/// [`FastInput`] first, [`InputTensor`] when that fails (see
/// [`parse_request`]).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferRequest<I> {
    #[serde(default)]
    id: Option<String>,
    /// Sent by some clients (KServe's SDK, Triton's examples); the path
    /// names the model, so these are accepted and ignored.
    #[serde(default, rename = "model_name")]
    _model_name: Option<String>,
    #[serde(default, rename = "model_version")]
    _model_version: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    inputs: Vec<I>,
    #[serde(default)]
    outputs: Option<Vec<RequestedOutput>>,
}

impl<I> InferRequest<I> {
    fn map_inputs<J>(self, f: impl FnMut(I) -> J) -> InferRequest<J> {
        InferRequest {
            id: self.id,
            _model_name: self._model_name,
            _model_version: self._model_version,
            parameters: self.parameters,
            inputs: self.inputs.into_iter().map(f).collect(),
            outputs: self.outputs,
        }
    }
}

/// One input tensor of a request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputTensor<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow, default, deserialize_with = "raw_data")]
    data: Option<Data<'a>>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// An input's JSON `data`: decoded while the request was read, or raw until
/// its datatype is checked.
enum Data<'a> {
    Raw(&'a RawValue),
    Decoded(TensorData),
}

fn raw_data<'de: 'a, 'a, D: Deserializer<'de>>(d: D) -> Result<Option<Data<'a>>, D::Error> {
    Ok(Option::<&'a RawValue>::deserialize(d)?.map(Data::Raw))
}

/// An input read in one pass over the request: when its `datatype` and
/// `shape` come before its `data` (as clients write them), the data is
/// decoded as it is read ([`DataSeed`]) instead of being kept raw and read
/// again. It refuses every document [`InputTensor`] refuses, and then some
/// (data that does not decode): [`parse_request`] reads those again as
/// [`InputTensor`]s, which give the error its exact text.
struct FastInput<'a>(InputTensor<'a>);

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum InputField {
    Name,
    Shape,
    Datatype,
    Data,
    Parameters,
}

impl<'de: 'a, 'a> Deserialize<'de> for FastInput<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const FIELDS: &[&str] = &["name", "shape", "datatype", "data", "parameters"];
        d.deserialize_struct("InputTensor", FIELDS, FastInputVisitor(std::marker::PhantomData))
    }
}

struct FastInputVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for FastInputVisitor<'a> {
    type Value = FastInput<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an input tensor")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FastInput<'a>, A::Error> {
        let mut name = None;
        let mut shape: Option<Vec<i64>> = None;
        let mut datatype: Option<String> = None;
        let mut data = None;
        let mut parameters = None;
        while let Some(field) = map.next_key::<InputField>()? {
            match field {
                InputField::Name => set(&mut name, "name", map.next_value()?)?,
                InputField::Shape => set(&mut shape, "shape", map.next_value()?)?,
                InputField::Datatype => set(&mut datatype, "datatype", map.next_value()?)?,
                InputField::Parameters => set(&mut parameters, "parameters", map.next_value()?)?,
                InputField::Data => {
                    let known = datatype.as_deref().and_then(DataType::from_name);
                    let value = match (known, shape.as_deref()) {
                        (Some(dtype), Some(shape)) => {
                            Some(Data::Decoded(map.next_value_seed(DataSeed { dtype, shape })?))
                        }
                        _ => map.next_value::<Option<&'de RawValue>>()?.map(Data::Raw),
                    };
                    set(&mut data, "data", value)?;
                }
            }
        }
        Ok(FastInput(InputTensor {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            data: data.flatten(),
            parameters: parameters.flatten(),
        }))
    }
}

/// Stores a field's value; a second one is an error, as for derived types.
fn set<T, E: de::Error>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

/// Reads an inference request, in one pass when it can: as [`FastInput`]s
/// first, and when that fails in two passes, whose errors are the ones to
/// report.
fn parse_request(body: &[u8]) -> Result<InferRequest<InputTensor<'_>>, ApiError> {
    if let Ok(request) = serde_json::from_slice::<InferRequest<FastInput<'_>>>(body) {
        return Ok(request.map_inputs(|input| input.0));
    }
    parse_request_in_two_passes(body)
}

/// Reads an inference request with every input's data kept raw, for
/// [`decode_input`] to decode.
fn parse_request_in_two_passes(body: &[u8]) -> Result<InferRequest<InputTensor<'_>>, ApiError> {
    json_object(body, "a JSON object with \"inputs\"")
        .map_err(|e| ApiError::BadRequest(format!("invalid inference request: {e}")))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestedOutput {
    name: String,
    #[serde(default)]
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

/// One output in the response: JSON `data`, or `binary_data_size` with the
/// bytes in the binary section.
#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<OutputParameters>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<FlatJson<'a>>,
}

#[derive(Serialize)]
struct OutputParameters {
    binary_data_size: usize,
}

/// Length of the JSON header when a body carries binary tensor data.
pub const INFERENCE_HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

async fn infer(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(&state, peer, &model, VersionSelector::Default, &headers, body).await
}

async fn infer_versioned(
    State(state): State<Arc<AppState>>,
    peer: Peer,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    run_infer(
        &state,
        peer,
        &model,
        VersionSelector::from_path(&version),
        &headers,
        body,
    )
    .await
}

async fn run_infer(
    state: &AppState,
    peer: Peer,
    model: &str,
    selector: VersionSelector<'_>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let started = std::time::Instant::now();
    let body = match body_bytes(body, state.settings.body_limit) {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let mut caller = match request::caller(state, headers) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    // Without a user header, V2 clients may name the user in
    // `parameters.user_id`; only bodies that mention it are parsed twice.
    let body_user = match caller.user {
        None => body_user_id(headers, &body),
        Some(_) => None,
    };
    if let Some(user) = &body_user {
        if let Err(e) = client_string("parameters.user_id", user) {
            return ApiError::BadRequest(e.to_string()).into_response();
        }
        caller.user = Some(user);
    }
    let pin = caller.pin;
    let target = match infer::admit(state, model, selector, caller, peer.0) {
        Ok(t) => t,
        Err(e) => return ApiError::from(e).into_response(),
    };
    let (mut resp, outcome) = match infer_body(state, &target, &body, headers).await {
        Ok(resp) => (resp, Outcome::Served),
        Err(e) => (e.error.into_response(), e.outcome),
    };
    request::route_headers(&mut resp, &target, pin);
    infer::observe(state, &target, Protocol::V2, outcome, started.elapsed());
    resp
}

/// `parameters.user_id` of a request, when the JSON header mentions it.
fn body_user_id(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Params {
        #[serde(default)]
        user_id: Option<Value>,
    }
    #[derive(Deserialize)]
    struct Head {
        #[serde(default)]
        parameters: Option<Params>,
    }
    let (json, _) = split_body(headers, body).ok()?;
    let needle = b"\"user_id\"";
    // most bodies have no user id: skip the parse
    memchr::memmem::find(json, needle)?;
    let head: Head = serde_json::from_slice(json).ok()?;
    match head.parameters?.user_id? {
        Value::String(s) if !s.is_empty() => Some(s),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Splits the body into its JSON header and binary section, then infers.
async fn infer_body(
    state: &AppState,
    target: &Target,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Response, PredictError> {
    let (json, binary) = split_body(headers, body)?;
    infer_json(state, target, json, binary, headers).await
}

/// The JSON header and, when `Inference-Header-Content-Length` is present,
/// the binary section of a request body.
fn split_body<'b>(headers: &HeaderMap, body: &'b [u8]) -> Result<(&'b [u8], Option<&'b [u8]>), ApiError> {
    let Some(value) = headers.get(INFERENCE_HEADER_CONTENT_LENGTH) else {
        return Ok((body, None));
    };
    let len = value
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "Inference-Header-Content-Length must be a byte count, got {:?}",
                String::from_utf8_lossy(value.as_bytes())
            ))
        })?;
    if len == 0 {
        return Err(ApiError::NotImplemented(
            "raw binary requests (Inference-Header-Content-Length: 0) are not supported; \
             send a JSON inference header before the binary data"
                .into(),
        ));
    }
    let (json, rest) = binary::split(body, len).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    Ok((json, Some(rest)))
}

/// Decodes an inference request (JSON header plus optional binary section),
/// runs it on `target`, encodes the answer.
async fn infer_json(
    state: &AppState,
    target: &Target,
    body: &[u8],
    binary: Option<&[u8]>,
    headers: &HeaderMap,
) -> Result<Response, PredictError> {
    let model = target.model.name.as_str();
    let mut request = parse_request(body)?;
    if let Some(id) = &request.id {
        client_string("id", id).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let signature = target.runtime.signature();
    let selected = select_outputs(signature, &request, model)?;
    let tensors = decode_inputs(std::mem::take(&mut request.inputs), binary)?;
    let inputs = signature
        .order_inputs(tensors)
        .map_err(|e| ApiError::BadRequest(format!("model '{model}': {e}")))?;
    let reject_nonfinite = request::reject_nonfinite(headers)
        || bool_param(request.parameters.as_ref(), "reject_nonfinite", "the request")?.unwrap_or(false);
    let options = RunOptions {
        client_timeout: request::client_timeout(headers)?,
        reject_nonfinite,
    };
    let mirror = target.shadow.as_ref().map(|_| inputs.clone());
    let outputs = infer::run(target, inputs, options).await?;
    let header_id = request::request_id(headers);
    infer::remember(state, request.id.as_deref().or(header_id.as_deref()), target);
    if let Some(inputs) = mirror {
        let request_id = request.id.clone().or(header_id);
        infer::mirror(state, target, inputs, &outputs, request_id);
    }
    let response = InferResponse {
        model_name: model,
        model_version: target.version.to_string(),
        id: request.id.as_deref(),
        outputs: Vec::with_capacity(selected.len()),
    };
    Ok(encode_response(response, &outputs, &selected)?)
}

/// An output to return, and whether its data goes in the binary section.
#[derive(Debug, Clone, Copy)]
struct Selected {
    index: usize,
    binary: bool,
}

/// The outputs to return (those requested, else all) and how: an output's
/// `binary_data` wins over the request's `binary_data_output`.
fn select_outputs(
    signature: &Signature,
    request: &InferRequest<InputTensor<'_>>,
    model: &str,
) -> Result<Vec<Selected>, ApiError> {
    let all_binary =
        bool_param(request.parameters.as_ref(), "binary_data_output", "the request")?.unwrap_or(false);
    match request.outputs.as_deref() {
        None => Ok((0..signature.outputs.len())
            .map(|index| Selected {
                index,
                binary: all_binary,
            })
            .collect()),
        Some(list) => list
            .iter()
            .map(|o| {
                let index = signature.output_index(&o.name).ok_or_else(|| {
                    let known: Vec<&str> = signature.outputs.iter().map(|t| t.name.as_str()).collect();
                    ApiError::BadRequest(format!(
                        "model '{model}' has no output '{}' (it has {})",
                        o.name,
                        known.join(", ")
                    ))
                })?;
                let what = format!("output '{}'", o.name);
                let binary = bool_param(o.parameters.as_ref(), "binary_data", &what)?.unwrap_or(all_binary);
                Ok(Selected { index, binary })
            })
            .collect(),
    }
}

/// A boolean parameter, `None` when absent; 400 when it is not a boolean.
fn bool_param(params: Option<&Map<String, Value>>, key: &str, what: &str) -> Result<Option<bool>, ApiError> {
    match params.and_then(|p| p.get(key)) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ApiError::BadRequest(format!(
            "{what}: parameter \"{key}\" must be a boolean, got {other}"
        ))),
    }
}

/// `parameters.binary_data_size` of an input, `None` when absent; 400 when
/// it is not a non-negative integer.
fn binary_size(input: &InputTensor<'_>) -> Result<Option<usize>, ApiError> {
    match input.parameters.as_ref().and_then(|p| p.get("binary_data_size")) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "input '{}': parameter \"binary_data_size\" must be a non-negative integer, got {v}",
                    input.name
                ))
            }),
    }
}

/// Decodes every input: from JSON `data`, or from the next
/// `binary_data_size` bytes of the binary section, in request order.
fn decode_inputs(inputs: Vec<InputTensor<'_>>, binary: Option<&[u8]>) -> Result<Vec<Tensor>, ApiError> {
    let sizes = inputs.iter().map(binary_size).collect::<Result<Vec<_>, _>>()?;
    let declared = sizes
        .iter()
        .flatten()
        .try_fold(0usize, |acc, &n| acc.checked_add(n));
    let section = binary.unwrap_or_default();
    if let (None, Some(i)) = (binary, sizes.iter().position(Option::is_some)) {
        return Err(ApiError::BadRequest(format!(
            "input '{}' has parameter \"binary_data_size\" but the request has no \
             Inference-Header-Content-Length header to separate the JSON from the binary data",
            inputs[i].name
        )));
    }
    if declared != Some(section.len()) {
        return Err(ApiError::BadRequest(format!(
            "the inputs' binary_data_size add up to {} bytes but {} bytes follow the JSON header \
             (Inference-Header-Content-Length)",
            declared.map_or_else(|| "more than usize::MAX".to_string(), |n| n.to_string()),
            section.len(),
        )));
    }
    let mut offset = 0;
    let mut tensors = Vec::with_capacity(inputs.len());
    for (input, size) in inputs.into_iter().zip(sizes) {
        let bytes = size.map(|n| {
            let bytes = &section[offset..offset + n];
            offset += n;
            bytes
        });
        tensors.push(decode_input(input, bytes)?);
    }
    Ok(tensors)
}

/// Decodes one input from JSON `data`, or from `binary` when it has a
/// `binary_data_size`.
fn decode_input(input: InputTensor<'_>, binary: Option<&[u8]>) -> Result<Tensor, ApiError> {
    let name = &input.name;
    let dtype = DataType::from_name(&input.datatype).ok_or_else(|| {
        ApiError::BadRequest(format!("input '{name}': unknown datatype '{}'", input.datatype))
    })?;
    let data = match (input.data, binary) {
        (Some(_), Some(_)) => {
            return Err(ApiError::BadRequest(format!(
                "input '{name}' has both \"data\" and parameter \"binary_data_size\"; send one"
            )))
        }
        (Some(Data::Decoded(data)), None) => data,
        (Some(Data::Raw(raw)), None) => decode(raw.get(), dtype, &input.shape)
            .map_err(|e| ApiError::BadRequest(format!("input '{name}': {e}")))?,
        (None, Some(bytes)) => binary::decode(bytes, dtype, &input.shape)
            .map_err(|e| ApiError::BadRequest(format!("input '{name}': {e}")))?,
        (None, None) => {
            return Err(ApiError::BadRequest(format!(
                "input '{name}': missing \"data\" (or parameter \"binary_data_size\")"
            )))
        }
    };
    Ok(Tensor {
        name: input.name,
        shape: input.shape,
        data,
    })
}

/// Encodes the answer: JSON alone, or the JSON header followed by the binary
/// outputs in response order (`Inference-Header-Content-Length` gives the
/// header's length, `Content-Type` is `application/octet-stream`).
fn encode_response<'a>(
    mut response: InferResponse<'a>,
    outputs: &'a [Tensor],
    selected: &[Selected],
) -> Result<Response, ApiError> {
    let mut binary_outputs = Vec::new();
    for s in selected {
        let t = &outputs[s.index];
        let (parameters, data) = if s.binary {
            binary_outputs.push(&t.data);
            let size = binary::encoded_len(&t.data);
            (
                Some(OutputParameters {
                    binary_data_size: size,
                }),
                None,
            )
        } else {
            (None, Some(FlatJson(&t.data)))
        };
        response.outputs.push(OutputTensor {
            name: &t.name,
            datatype: t.dtype().name(),
            shape: &t.shape,
            parameters,
            data,
        });
    }
    let mut body = serde_json::to_vec(&response)
        .map_err(|e| ApiError::Internal(format!("could not encode the response: {e}")))?;
    if binary_outputs.is_empty() {
        return Ok(json_response(body));
    }
    let header_len = body.len();
    for data in binary_outputs {
        binary::encode(data, &mut body);
    }
    let mut resp = body.into_response();
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(INFERENCE_HEADER_CONTENT_LENGTH, HeaderValue::from(header_len));
    Ok(resp)
}

#[cfg(test)]
#[path = "v2_tests.rs"]
mod tests;
