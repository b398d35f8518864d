//! The *inference service*: `inference.GRPCInferenceService` over the
//! shared state. Each RPC reads its request and hands over to the module
//! that answers it; what is not supported (streaming inference, shared
//! memory, trace and log settings) answers UNIMPLEMENTED saying so.
//!
//! Every RPC except the probes (ServerLive, ServerReady, ModelReady) takes
//! one of the `--max-in-flight` permits HTTP requests take, so load is shed
//! across both front ends alike.

use std::sync::Arc;

use tokio::sync::OwnedSemaphorePermit;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use super::proto::grpc_inference_service_server::GrpcInferenceService;
use super::proto::{
    CudaSharedMemoryRegisterRequest, CudaSharedMemoryRegisterResponse, CudaSharedMemoryStatusRequest,
    CudaSharedMemoryStatusResponse, CudaSharedMemoryUnregisterRequest, CudaSharedMemoryUnregisterResponse,
    LogSettingsRequest, LogSettingsResponse, ModelConfigRequest, ModelConfigResponse, ModelInferRequest,
    ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse,
    ModelStatisticsRequest, ModelStatisticsResponse, ModelStreamInferResponse, RepositoryIndexRequest,
    RepositoryIndexResponse, RepositoryModelLoadRequest, RepositoryModelLoadResponse,
    RepositoryModelUnloadRequest, RepositoryModelUnloadResponse, ServerLiveRequest, ServerLiveResponse,
    ServerMetadataRequest, ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
    SystemSharedMemoryRegisterRequest, SystemSharedMemoryRegisterResponse, SystemSharedMemoryStatusRequest,
    SystemSharedMemoryStatusResponse, SystemSharedMemoryUnregisterRequest,
    SystemSharedMemoryUnregisterResponse, TraceSettingRequest, TraceSettingResponse,
};
use super::status::{GrpcError, Retry};
use super::{infer, models, repository};
use crate::serving::readiness::readiness;
use crate::serving::AppState;
use crate::telemetry::names;

/// Extensions of the Triton protocol the gRPC service implements
/// (`model_repository` only while `--repository-api` is on).
pub const EXTENSIONS: &[&str] = &["model_configuration", "model_repository", "statistics"];

/// `inference.GRPCInferenceService` over the shared state.
pub struct InferenceService {
    state: Arc<AppState>,
}

impl InferenceService {
    /// The service over `state`.
    pub fn new(state: Arc<AppState>) -> InferenceService {
        InferenceService { state }
    }

    /// A permit for one call, or UNAVAILABLE when `--max-in-flight` calls
    /// and requests are being served (counted as shed).
    fn enter(&self) -> Result<OwnedSemaphorePermit, Status> {
        self.state.try_enter().ok_or_else(|| {
            metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "in_flight").increment(1);
            GrpcError::Unavailable {
                message: format!(
                    "server is overloaded: {} requests in flight",
                    self.state.settings.max_in_flight
                ),
                retry: Retry::After(1),
            }
            .into()
        })
    }
}

fn answer<T>(r: Result<T, GrpcError>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: readiness(&self.state).is_ok(),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(models::ready(&self.state, req.get_ref())))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        let _permit = self.enter()?;
        let repository = self.state.settings.repository_api;
        Ok(Response::new(ServerMetadataResponse {
            name: "switchyard".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: (EXTENSIONS.iter())
                .filter(|e| repository || **e != "model_repository")
                .map(|e| e.to_string())
                .collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let _permit = self.enter()?;
        answer(models::metadata(&self.state, req.get_ref()))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let _permit = self.enter()?;
        infer::model_infer(&self.state, req).await
    }

    async fn model_config(
        &self,
        req: Request<ModelConfigRequest>,
    ) -> Result<Response<ModelConfigResponse>, Status> {
        let _permit = self.enter()?;
        answer(models::config(&self.state, req.get_ref()))
    }

    async fn model_statistics(
        &self,
        req: Request<ModelStatisticsRequest>,
    ) -> Result<Response<ModelStatisticsResponse>, Status> {
        let _permit = self.enter()?;
        answer(models::statistics(&self.state, req.get_ref()))
    }

    async fn repository_index(
        &self,
        req: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        let _permit = self.enter()?;
        answer(repository::index(&self.state, req.metadata(), req.get_ref()))
    }

    async fn repository_model_load(
        &self,
        req: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        let _permit = self.enter()?;
        answer(repository::load(&self.state, req.metadata(), req.get_ref()).await)
    }

    async fn repository_model_unload(
        &self,
        req: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        let _permit = self.enter()?;
        answer(repository::unload(&self.state, req.metadata(), req.get_ref()))
    }

    // What switchyard does not do, said plainly instead of the generated
    // "Not yet implemented".

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<ModelInferRequest>>,
    ) -> Result<Response<BoxStream<ModelStreamInferResponse>>, Status> {
        Err(unsupported(
            "ModelStreamInfer (streaming and decoupled inference)",
            "call ModelInfer",
        ))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<SystemSharedMemoryStatusResponse>, Status> {
        Err(unsupported(SYSTEM_SHM, SEND_RAW))
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<SystemSharedMemoryRegisterResponse>, Status> {
        Err(unsupported(SYSTEM_SHM, SEND_RAW))
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<SystemSharedMemoryUnregisterResponse>, Status> {
        Err(unsupported(SYSTEM_SHM, SEND_RAW))
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<CudaSharedMemoryStatusResponse>, Status> {
        Err(unsupported(CUDA_SHM, SEND_RAW))
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<CudaSharedMemoryRegisterResponse>, Status> {
        Err(unsupported(CUDA_SHM, SEND_RAW))
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<CudaSharedMemoryUnregisterResponse>, Status> {
        Err(unsupported(CUDA_SHM, SEND_RAW))
    }

    async fn trace_setting(
        &self,
        _: Request<TraceSettingRequest>,
    ) -> Result<Response<TraceSettingResponse>, Status> {
        Err(unsupported(
            "TraceSetting (the trace extension)",
            "switchyard logs each inference instead",
        ))
    }

    async fn log_settings(
        &self,
        _: Request<LogSettingsRequest>,
    ) -> Result<Response<LogSettingsResponse>, Status> {
        Err(unsupported(
            "LogSettings (the logging extension)",
            "set RUST_LOG when starting switchyard",
        ))
    }
}

const SYSTEM_SHM: &str = "system shared memory (the system_shared_memory extension)";
const CUDA_SHM: &str = "CUDA shared memory (the cuda_shared_memory extension)";
const SEND_RAW: &str = "send tensors in raw_input_contents";

/// UNIMPLEMENTED, naming what is missing and what to do instead.
fn unsupported(what: &str, instead: &str) -> Status {
    GrpcError::Unimplemented(format!("switchyard does not support {what}; {instead}")).into()
}
