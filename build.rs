//! Compiles the gRPC interface in proto/ (the Open Inference Protocol's gRPC
//! form as Triton publishes it) without a system `protoc`: protox parses the
//! files in pure Rust into a FileDescriptorSet, which is written to
//! `$OUT_DIR/inference_descriptor.bin` (for server reflection) and handed to
//! tonic-prost-build for the message types and the tonic server and client
//! (`$OUT_DIR/inference.rs`; the server trait's methods default to
//! UNIMPLEMENTED; raw tensor contents are `bytes::Bytes`). Runs again only
//! when proto/ changes.

use std::path::{Path, PathBuf};

const PROTO_DIR: &str = "proto";

fn main() {
    if let Err(e) = run() {
        // protox's errors name the file, line and column
        eprintln!("build.rs: compiling {PROTO_DIR}/*.proto failed: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_DIR}");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut files: Vec<PathBuf> = std::fs::read_dir(PROTO_DIR)?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    files.retain(|p| p.extension().is_some_and(|ext| ext == "proto"));
    files.sort();
    if files.is_empty() {
        return Err(format!("no .proto files in {PROTO_DIR}/").into());
    }
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }

    let mut compiler = protox::Compiler::new([Path::new(PROTO_DIR)])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(&files)?;
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true) // for tests and tools
        // every RPC the service does not implement answers UNIMPLEMENTED
        .generate_default_stubs(true)
        // Raw tensor contents as `bytes::Bytes`: decoding slices the
        // received buffer instead of copying each tensor into a Vec first.
        .bytes(".inference.ModelInferRequest.raw_input_contents")
        .bytes(".inference.ModelInferResponse.raw_output_contents")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
