//! The gRPC front end: the Open Inference Protocol's gRPC form,
//! `inference.GRPCInferenceService` as Triton serves it on its port 8001,
//! so that `tritonclient.grpc` and KServe's `InferenceGRPCClient` work
//! unmodified, beside `grpc.health.v1` (readiness) and server reflection.
//!
//! Handlers read the protocol and call the same shared pipeline as HTTP
//! (`serving::infer`: admit, run, observe, remember, mirror) with
//! `Protocol::Grpc`; [`status`] is the one table that maps typed errors to
//! gRPC codes. [`router::app`] is the whole service set as one router.

pub mod health;
mod infer;
mod models;
pub mod proto;
mod repository;
mod request;
pub mod router;
mod service;
pub mod status;
mod tensors;

pub use proto::FILE_DESCRIPTOR_SET;
pub use router::app;
pub use service::{InferenceService, EXTENSIONS};
