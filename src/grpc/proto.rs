//! The protocol: messages, the `GRPCInferenceService` server trait
//! (`grpc_inference_service_server`) and client
//! (`grpc_inference_service_client`) that build.rs generates from
//! proto/grpc_service.proto and proto/model_config.proto (package
//! `inference`), and the encoded descriptors server reflection serves.
//!
//! Every method of the server trait has a default body answering
//! UNIMPLEMENTED, so an implementation overrides only the RPCs it serves.
//! Raw tensor contents are `bytes::Bytes`.

// Code we do not write: no lint fires on it today (tonic-prost-build 0.14.9),
// and none that the crate enables later should.
#[allow(unreachable_pub, missing_docs, clippy::all, clippy::pedantic, clippy::nursery)]
mod generated {
    tonic::include_proto!("inference");
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of proto/ (both files, with their
/// comments), for `tonic_reflection`'s
/// `Builder::register_encoded_file_descriptor_set`.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/inference_descriptor.bin"));
