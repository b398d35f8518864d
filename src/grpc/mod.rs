//! The gRPC front end: the Open Inference Protocol's gRPC form,
//! `inference.GRPCInferenceService` as Triton serves it on its port 8001,
//! so that `tritonclient.grpc` and KServe's `InferenceGRPCClient` work
//! unmodified, beside `grpc.health.v1` and server reflection.
//!
//! For now this module holds only the protocol: the types, server trait and
//! client that build.rs generates from proto/ ([`proto`]), and the encoded
//! descriptors that server reflection serves ([`FILE_DESCRIPTOR_SET`]). The
//! service itself will be implemented here on top of them.

/// Messages, the `GRPCInferenceService` server trait
/// (`grpc_inference_service_server`) and client
/// (`grpc_inference_service_client`) generated from proto/grpc_service.proto
/// and proto/model_config.proto (package `inference`). Every method of the
/// server trait has a default body answering UNIMPLEMENTED, so an
/// implementation overrides only the RPCs it serves.
// Code we do not write: no lint fires on it today (tonic-prost-build 0.14.9),
// and none that the crate enables later should.
#[allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
pub mod proto {
    tonic::include_proto!("inference");
}

/// The encoded `FileDescriptorSet` of proto/ (both files, with their
/// comments), for `tonic_reflection`'s
/// `Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
