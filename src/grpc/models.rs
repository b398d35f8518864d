//! What the gRPC service answers about models: readiness, metadata, the
//! Triton model configuration and statistics, each built from the same
//! wire-independent answers as HTTP's (`serving::describe`,
//! `serving::stats`).

use super::proto::model_config::SchedulingChoice;
use super::proto::model_metadata_response::TensorMetadata;
use super::proto::model_version_policy::{self, PolicyChoice};
use super::proto::{
    model_instance_group, InferBatchStatistics, InferStatistics, ModelConfig, ModelConfigRequest,
    ModelConfigResponse, ModelDynamicBatching, ModelInput, ModelInstanceGroup, ModelMetadataRequest,
    ModelMetadataResponse, ModelOutput, ModelQueuePolicy, ModelReadyRequest, ModelReadyResponse,
    ModelStatistics, ModelStatisticsRequest, ModelStatisticsResponse, ModelTensorReshape, ModelVersionPolicy,
    StatisticDuration,
};
use super::request::selector;
use super::status::GrpcError;
use crate::repository::config::PolicyKind;
use crate::runtime::TensorSpec;
use crate::serving::describe::describe;
use crate::serving::stats::{self, DurationStat, ModelStat};
use crate::serving::AppState;
use crate::tensor::DataType;
use crate::traffic;

/// `ModelReady`: true when the named (or default) version can answer now;
/// false for unknown models, as Triton answers.
pub(super) fn ready(state: &AppState, req: &ModelReadyRequest) -> ModelReadyResponse {
    let snapshot = state.repo.snapshot();
    ModelReadyResponse {
        ready: traffic::resolve(&snapshot, &req.name, selector(&req.version)).is_ok(),
    }
}

/// `ModelMetadata`.
pub(super) fn metadata(
    state: &AppState,
    req: &ModelMetadataRequest,
) -> Result<ModelMetadataResponse, GrpcError> {
    let d = describe(&state.repo.snapshot(), &req.name, selector(&req.version))?;
    let tensors = |specs: &[TensorSpec]| {
        specs
            .iter()
            .map(|t| TensorMetadata {
                name: t.name.clone(),
                datatype: t.datatype.name().to_string(),
                shape: t.shape.clone(),
            })
            .collect()
    };
    Ok(ModelMetadataResponse {
        name: d.name,
        versions: d.versions,
        platform: d.platform.to_string(),
        inputs: tensors(&d.signature.inputs),
        outputs: tensors(&d.signature.outputs),
    })
}

/// `ModelConfig`: Triton's configuration of the model as it runs here,
/// what `tritonclient` and `perf_analyzer` read (batching, tensor types and
/// dims, instances, queue and version policies). With batching on
/// (`max_batch_size > 0`) dims leave out the batch dimension, as in Triton.
pub(super) fn config(state: &AppState, req: &ModelConfigRequest) -> Result<ModelConfigResponse, GrpcError> {
    let snapshot = state.repo.snapshot();
    let d = describe(&snapshot, &req.name, selector(&req.version))?;
    let m = traffic::model(&snapshot, &req.name)?;
    let execution = &m.config.execution;
    let batched = d.signature.batchable() && execution.max_batch_size > 0;
    // A [batch]-shaped tensor is dims [1] reshaped to [] in Triton's terms
    // (dims may not be empty).
    let dims = |t: &TensorSpec| match batched {
        true if t.shape.len() == 1 => (vec![1], Some(ModelTensorReshape { shape: vec![] })),
        true => (t.shape[1..].to_vec(), None),
        false => (t.shape.clone(), None),
    };
    let config = ModelConfig {
        name: d.name.clone(),
        // Triton's names for an ONNX model run by ONNX Runtime.
        platform: "onnxruntime_onnx".into(),
        backend: "onnxruntime".into(),
        version_policy: Some(version_policy(&m.config.versions)),
        max_batch_size: i32::try_from(if batched { execution.max_batch_size } else { 0 }).unwrap_or(i32::MAX),
        input: (d.signature.inputs.iter())
            .map(|t| {
                let (dims, reshape) = dims(t);
                ModelInput {
                    name: t.name.clone(),
                    data_type: data_type(t.datatype),
                    dims,
                    reshape,
                    ..Default::default()
                }
            })
            .collect(),
        output: (d.signature.outputs.iter())
            .map(|t| {
                let (dims, reshape) = dims(t);
                ModelOutput {
                    name: t.name.clone(),
                    data_type: data_type(t.datatype),
                    dims,
                    reshape,
                    ..Default::default()
                }
            })
            .collect(),
        instance_group: vec![ModelInstanceGroup {
            name: d.name.clone(),
            kind: model_instance_group::Kind::Cpu as i32,
            count: i32::try_from(execution.instances).unwrap_or(i32::MAX),
            ..Default::default()
        }],
        scheduling_choice: batched.then(|| {
            SchedulingChoice::DynamicBatching(ModelDynamicBatching {
                max_queue_delay_microseconds: execution.max_queue_delay_us,
                default_queue_policy: Some(ModelQueuePolicy {
                    default_timeout_microseconds: execution.timeout_ms.saturating_mul(1000),
                    max_queue_size: u32::try_from(execution.max_queue).unwrap_or(u32::MAX),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }),
        default_model_filename: "model.onnx".into(),
        ..Default::default()
    };
    Ok(ModelConfigResponse { config: Some(config) })
}

fn version_policy(v: &crate::repository::config::VersionPolicy) -> ModelVersionPolicy {
    let choice = match v.policy {
        PolicyKind::Latest => PolicyChoice::Latest(model_version_policy::Latest {
            num_versions: u32::try_from(v.latest).unwrap_or(u32::MAX),
        }),
        PolicyKind::All => PolicyChoice::All(model_version_policy::All {}),
        PolicyKind::Specific => PolicyChoice::Specific(model_version_policy::Specific {
            versions: v
                .specific
                .iter()
                .map(|&n| i64::try_from(n).unwrap_or(i64::MAX))
                .collect(),
        }),
    };
    ModelVersionPolicy {
        policy_choice: Some(choice),
    }
}

/// Triton's `DataType` enum value of a tensor type.
fn data_type(d: DataType) -> i32 {
    use super::proto::DataType as T;
    (match d {
        DataType::Bool => T::TypeBool,
        DataType::Uint8 => T::TypeUint8,
        DataType::Uint16 => T::TypeUint16,
        DataType::Uint32 => T::TypeUint32,
        DataType::Uint64 => T::TypeUint64,
        DataType::Int8 => T::TypeInt8,
        DataType::Int16 => T::TypeInt16,
        DataType::Int32 => T::TypeInt32,
        DataType::Int64 => T::TypeInt64,
        DataType::Fp16 => T::TypeFp16,
        DataType::Fp32 => T::TypeFp32,
        DataType::Fp64 => T::TypeFp64,
        DataType::Bytes => T::TypeString,
    }) as i32
}

/// `ModelStatistics`: every model (empty name), every READY version of one
/// model (empty version), or one version (a number or a label).
pub(super) fn statistics(
    state: &AppState,
    req: &ModelStatisticsRequest,
) -> Result<ModelStatisticsResponse, GrpcError> {
    let snapshot = state.repo.snapshot();
    let found = match (req.name.as_str(), req.version.as_str()) {
        ("", "") => stats::all(&snapshot),
        ("", v) => {
            return Err(GrpcError::InvalidArgument(format!(
                "version '{v}' given without a model name"
            )))
        }
        (model, "") => stats::of_model(&snapshot, model)?,
        (model, v) => vec![stats::of_version(&snapshot, model, selector(v))?],
    };
    Ok(ModelStatisticsResponse {
        model_stats: found.into_iter().map(model_statistics).collect(),
    })
}

fn model_statistics(s: ModelStat) -> ModelStatistics {
    let d = |d: DurationStat| {
        Some(StatisticDuration {
            count: d.count,
            ns: d.ns,
        })
    };
    let i = &s.inference_stats;
    ModelStatistics {
        name: s.name,
        version: s.version,
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(InferStatistics {
            success: d(i.success),
            fail: d(i.fail),
            queue: d(i.queue),
            compute_input: d(i.compute_input),
            compute_infer: d(i.compute_infer),
            compute_output: d(i.compute_output),
            cache_hit: d(i.cache_hit),
            cache_miss: d(i.cache_miss),
        }),
        batch_stats: (s.batch_stats.into_iter())
            .map(|b| InferBatchStatistics {
                batch_size: b.batch_size as u64,
                compute_input: d(b.compute_input),
                compute_infer: d(b.compute_infer),
                compute_output: d(b.compute_output),
            })
            .collect(),
        ..Default::default()
    }
}
