//! `ModelInfer`: one inference over gRPC through the shared predict
//! pipeline (`serving::infer`), exactly as HTTP's V2 infer runs it: admit
//! (rate limit, route, breakers), decode the inputs against the chosen
//! version's signature, run within the deadline (the model's, lowered by
//! `grpc-timeout`), remember the request id, mirror to a shadow, observe
//! the outcome with `protocol="grpc"`. Answers carry `x-model-version` and
//! `x-route` in their metadata, errors included once a version was chosen.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::proto::infer_parameter::ParameterChoice;
use super::proto::{InferParameter, ModelInferRequest, ModelInferResponse};
use super::request::{self, route_metadata};
use super::status::GrpcError;
use super::tensors::{answer_raw, decode_inputs, encode_outputs};
use crate::serving::infer::{self, Outcome, Protocol, RunOptions};
use crate::serving::{AppState, ServeError};
use crate::tensor::Tensor;
use crate::traffic::Target;

/// The RPC's path, for the request log.
const PATH: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Why an admitted call did not produce outputs: the request itself, or
/// the pipeline (which knows what the outcome means for the version).
enum Failure {
    Request(GrpcError),
    Serve(ServeError),
}

impl From<GrpcError> for Failure {
    fn from(e: GrpcError) -> Failure {
        Failure::Request(e)
    }
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Failure::Request(_) => Outcome::Rejected,
            Failure::Serve(e) => e.outcome(),
        }
    }
}

impl From<Failure> for GrpcError {
    fn from(f: Failure) -> GrpcError {
        match f {
            Failure::Request(e) => e,
            Failure::Serve(e) => e.into(),
        }
    }
}

/// Serves one `ModelInfer` call.
pub(super) async fn model_infer(
    state: &AppState,
    request: Request<ModelInferRequest>,
) -> Result<Response<ModelInferResponse>, Status> {
    let started = Instant::now();
    let (metadata, extensions, req) = request.into_parts();
    let peer = request::peer(&extensions);
    let mut caller = request::caller(state, &metadata);
    // Without a user header, clients may name the user in parameters.user_id.
    let param_user = match caller.user {
        None => user_param(req.parameters.get("user_id")),
        Some(_) => None,
    };
    if param_user.is_some() {
        caller.user = param_user.as_deref();
    }
    let selector = request::selector(&req.model_version);
    let target = infer::admit(state, &req.model_name, selector, caller, peer)
        .map_err(|e| Status::from(GrpcError::from(e)))?;
    let result = run(state, &target, req, &metadata).await;
    let outcome = match &result {
        Ok(_) => Outcome::Served,
        Err(f) => f.outcome(),
    };
    let elapsed = started.elapsed();
    infer::observe(state, &target, Protocol::Grpc, outcome, elapsed);
    let mut answer = result
        .map(Response::new)
        .map_err(|f| Status::from(GrpcError::from(f)));
    let code = match &mut answer {
        Ok(resp) => {
            route_metadata(resp.metadata_mut(), &target);
            tonic::Code::Ok
        }
        Err(status) => {
            route_metadata(status.metadata_mut(), &target);
            status.code()
        }
    };
    log(&metadata, &target, code, elapsed);
    answer
}

/// Decodes, runs and encodes one admitted call.
async fn run(
    state: &AppState,
    target: &Target,
    req: ModelInferRequest,
    metadata: &MetadataMap,
) -> Result<ModelInferResponse, Failure> {
    let model = target.model.name.as_str();
    let signature = target.runtime.signature();
    let selected = select_outputs(target, &req)?;
    if let Some(o) = req
        .outputs
        .iter()
        .find(|o| o.parameters.contains_key("classification"))
    {
        return Err(GrpcError::Unimplemented(format!(
            "output '{}': the classification extension is not supported",
            o.name
        ))
        .into());
    }
    let options = RunOptions {
        client_timeout: request::client_timeout(metadata)?,
        reject_nonfinite: bool_param(req.parameters.get("reject_nonfinite")),
    };
    let raw_request = !req.raw_input_contents.is_empty();
    let tensors = decode_inputs(req.inputs, req.raw_input_contents)?;
    let inputs = signature
        .order_inputs(tensors)
        .map_err(|e| GrpcError::InvalidArgument(format!("model '{model}': {e}")))?;
    let mirror = target.shadow.as_ref().map(|_| inputs.clone());
    let outputs = infer::run(target, inputs, options)
        .await
        .map_err(Failure::Serve)?;
    let id = Some(req.id.clone())
        .filter(|id| !id.is_empty())
        .or_else(|| request::request_id(metadata));
    infer::remember(state, id.as_deref(), target);
    if let Some(inputs) = mirror {
        infer::mirror(state, target, inputs, &outputs, id);
    }
    // the selected outputs, in the order asked for (moved, not copied)
    let mut slots: Vec<Option<Tensor>> = outputs.into_iter().map(Some).collect();
    let chosen: Vec<Tensor> = selected.iter().filter_map(|&i| slots[i].take()).collect();
    let raw = answer_raw(raw_request, &chosen);
    let (outputs, raw_output_contents) = encode_outputs(chosen, raw);
    Ok(ModelInferResponse {
        model_name: model.to_string(),
        model_version: target.version.to_string(),
        id: req.id,
        parameters: Default::default(),
        outputs,
        raw_output_contents,
    })
}

/// Indices of the outputs to return: those requested, in that order (each
/// once), else all of them.
fn select_outputs(target: &Target, req: &ModelInferRequest) -> Result<Vec<usize>, GrpcError> {
    let signature = target.runtime.signature();
    if req.outputs.is_empty() {
        return Ok((0..signature.outputs.len()).collect());
    }
    let mut selected = Vec::with_capacity(req.outputs.len());
    for o in &req.outputs {
        let i = signature.output_index(&o.name).ok_or_else(|| {
            let known: Vec<&str> = signature.outputs.iter().map(|t| t.name.as_str()).collect();
            GrpcError::InvalidArgument(format!(
                "model '{}' has no output '{}' (it has {})",
                target.model.name,
                o.name,
                known.join(", ")
            ))
        })?;
        if selected.contains(&i) {
            return Err(GrpcError::InvalidArgument(format!(
                "output '{}' is requested twice",
                o.name
            )));
        }
        selected.push(i);
    }
    Ok(selected)
}

/// `parameters.user_id` as a user key: a non-empty string or an integer.
/// A boolean request parameter (`reject_nonfinite`); absent is false.
fn bool_param(p: Option<&InferParameter>) -> bool {
    matches!(
        p.and_then(|p| p.parameter_choice.as_ref()),
        Some(ParameterChoice::BoolParam(true))
    )
}

fn user_param(p: Option<&InferParameter>) -> Option<String> {
    match p?.parameter_choice.as_ref()? {
        ParameterChoice::StringParam(s) if !s.is_empty() => Some(s.clone()),
        ParameterChoice::Int64Param(n) => Some(n.to_string()),
        ParameterChoice::Uint64Param(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The request log line of one call that reached a version (the same
/// fields as HTTP's, with the gRPC code, e.g. `Ok`, as the status).
fn log(metadata: &MetadataMap, target: &Target, code: tonic::Code, elapsed: Duration) {
    let id = request::request_id(metadata);
    tracing::info!(
        request_id = %id.as_deref().unwrap_or("-"),
        model = %target.model.name,
        version = target.version,
        route = target.route.name(),
        status = ?code,
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        method = "grpc",
        path = PATH,
        "predict"
    );
}
