//! The gRPC interface in proto/ against the stock clients' own generated
//! descriptors, and the generated code against a real tonic transport.
//!
//! `tests/clients/grpc_descriptors.py` (run from the venv that `make
//! setup-test` builds, .venv/test, pinned in tests/clients/requirements.txt)
//! compares our descriptor set message by message and method by method with
//! `tritonclient.grpc` and KServe's `grpc_predict_v2_pb2`; it prints one `ok:`
//! line per check and every difference before it exits non-zero.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use switchyard::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard::grpc::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer, SERVICE_NAME,
};
use switchyard::grpc::proto::{ModelInferRequest, ServerLiveRequest};
use switchyard::grpc::FILE_DESCRIPTOR_SET;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python; a missing venv fails the test (never skips it).
fn python() -> PathBuf {
    let python = root().join(".venv/test/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `make setup-test` (scripts/setup-test-deps.sh) to build the \
         stock-client venv from tests/clients/requirements.txt",
        python.display()
    );
    python
}

#[test]
fn descriptors_match_tritonclient_and_kserve() {
    let python = python();
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("switchyard_inference.bin");
    std::fs::write(&ours, FILE_DESCRIPTOR_SET).unwrap();
    let out = Command::new(python)
        .arg(root().join("tests/clients/grpc_descriptors.py"))
        .arg(&ours)
        .current_dir(root().join("tests/clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .output()
        .expect("cannot run grpc_descriptors.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("grpc_descriptors: all checks passed"),
        "proto/ differs from the stock clients' descriptors ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    for client in ["tritonclient", "kserve"] {
        assert!(
            stdout.contains(&format!("ok: {client}: ")),
            "{client} not compared:\n{stdout}"
        );
    }
    println!("{stdout}");
}

/// A service that overrides nothing: every RPC takes the generated default.
struct Unimplemented;

#[tonic::async_trait]
impl GrpcInferenceService for Unimplemented {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stub_answers_unimplemented_and_reflection_serves_the_descriptors() {
    assert_eq!(SERVICE_NAME, "inference.GRPCInferenceService");
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("reflection accepts FILE_DESCRIPTOR_SET");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(Unimplemented))
            .add_service(reflection)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();

    // a clean UNIMPLEMENTED, unary and streaming alike
    let mut client = GrpcInferenceServiceClient::new(channel.clone());
    let status = client.server_live(ServerLiveRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let request = ModelInferRequest {
        model_name: "digits".into(),
        raw_input_contents: vec![vec![0u8; 256].into()],
        ..Default::default()
    };
    let status = client.model_infer(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");
    let status = client
        .model_stream_infer(tonic::codegen::tokio_stream::iter(vec![request]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    // what grpcurl asks first: the services, then the file defining a symbol
    let mut reflect = ServerReflectionClient::new(channel);
    let ask = |message| ServerReflectionRequest {
        host: String::new(),
        message_request: Some(message),
    };
    let mut answers = reflect
        .server_reflection_info(tonic::codegen::tokio_stream::iter(vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol(
                "inference.ModelConfig".into(),
            )),
        ]))
        .await
        .unwrap()
        .into_inner();
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
            assert!(names.contains(&SERVICE_NAME), "{names:?}");
        }
        other => panic!("list services answered {other:?}"),
    }
    match answers.message().await.unwrap().unwrap().message_response {
        Some(MessageResponse::FileDescriptorResponse(files)) => {
            let named = |f: &Vec<u8>| f.windows(18).any(|w| w == b"model_config.proto");
            assert!(files.file_descriptor_proto.iter().any(named), "{files:?}");
        }
        other => panic!("file containing symbol answered {other:?}"),
    }

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
