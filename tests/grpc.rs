//! The gRPC front end with a tonic client against a real server: answers
//! (raw and typed) equal HTTP's and carry their route, bad requests get
//! their codes (NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED over the
//! body limit, UNIMPLEMENTED) with clear messages, the repository RPCs'
//! switch and token, and the metrics with `protocol="grpc"`. Protection
//! (deadlines, rate limits, breakers, shedding) is in grpc_protection.rs.

mod common;

use common::{digits_grpc, digits_request, digits_samples, grpc_labels, with_metadata, TestRepo, TestServer};
use serde_json::json;
use switchyard::grpc::proto::{
    ModelConfigRequest, ModelInferRequest, ModelMetadataRequest, ModelReadyRequest, ModelStatisticsRequest,
    RepositoryIndexRequest, RepositoryModelLoadRequest, RepositoryModelUnloadRequest, ServerMetadataRequest,
};
use tonic::Code;

fn rows(n: usize) -> Vec<Vec<f64>> {
    digits_samples().into_iter().take(n).map(|(r, _)| r).collect()
}

fn meta<'a>(status: &'a tonic::Status, key: &str) -> Option<&'a str> {
    status.metadata().get(key).map(|v| v.to_str().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_and_typed_answers_equal_http_and_carry_the_route() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let mut c = s.grpc_client().await;
    let rows = rows(20);
    let (st, http) = s
        .post("/v2/models/digits/versions/1/infer", &digits_request(&rows))
        .await;
    assert_eq!(st, 200);
    let http_labels: Vec<i64> = serde_json::from_value(http["outputs"][0]["data"].clone()).unwrap();

    for raw in [true, false] {
        let mut req = digits_grpc(&rows, raw);
        req.model_version = "1".into();
        req.id = "call-1".into();
        let resp = c.model_infer(req).await.unwrap();
        let md = resp.metadata();
        assert_eq!(md.get("x-model-version").unwrap(), "1");
        assert_eq!(md.get("x-route").unwrap(), "explicit");
        let resp = resp.into_inner();
        assert_eq!(
            (resp.model_name.as_str(), resp.model_version.as_str()),
            ("digits", "1")
        );
        assert_eq!(resp.id, "call-1");
        // raw in, raw out (what tritonclient expects); typed in, typed out
        assert_eq!(
            resp.raw_output_contents.len(),
            if raw { 2 } else { 0 },
            "raw={raw}"
        );
        assert_eq!(resp.outputs.iter().all(|o| o.contents.is_some()), !raw);
        assert_eq!(resp.outputs[1].shape, vec![20, 10]);
        assert_eq!(grpc_labels(&resp), http_labels, "raw={raw}");
    }
    // one output asked for, by label: the label route
    let mut req = digits_grpc(&rows, true);
    req.model_version = "stable".into();
    req.outputs = vec![
        switchyard::grpc::proto::model_infer_request::InferRequestedOutputTensor {
            name: "probabilities".into(),
            ..Default::default()
        },
    ];
    let resp = c.model_infer(req).await.unwrap();
    assert_eq!(resp.metadata().get("x-route").unwrap(), "label");
    let resp = resp.into_inner();
    assert_eq!(resp.outputs.len(), 1);
    assert_eq!(resp.raw_output_contents[0].len(), 20 * 10 * 4);

    // metadata, readiness, config and statistics answer like HTTP's
    let (_, http_meta) = s.get("/v2/models/digits").await;
    let meta = c
        .model_metadata(ModelMetadataRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json!(meta.versions), http_meta["versions"]);
    assert_eq!(meta.platform, http_meta["platform"]);
    assert_eq!(meta.inputs[0].shape, vec![-1, 64]);
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("digits", "2"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("digits", "9"))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(!c.model_ready(ready("nope", "")).await.unwrap().into_inner().ready);
    let config = c
        .model_config(ModelConfigRequest {
            name: "digits".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .config
        .unwrap();
    assert_eq!(
        (config.name.as_str(), config.backend.as_str()),
        ("digits", "onnxruntime")
    );
    let stats = c
        .model_statistics(ModelStatisticsRequest {
            name: "digits".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let (_, http_stats) = s.get("/v2/models/digits/versions/1/stats").await;
    let ours = &stats.model_stats[0];
    assert_eq!(
        ours.inference_count,
        http_stats["model_stats"][0]["inference_count"]
    );
    assert!(ours.inference_stats.as_ref().unwrap().success.unwrap().count >= 3);
    let meta = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        meta.extensions,
        vec!["model_configuration", "statistics"],
        "no repository RPCs by default"
    );

    // the requests counted with protocol="grpc" (the registry is shared by
    // the tests of this binary; only this one names digits 1 explicitly)
    let text = s.metrics().await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("switchyard_requests_total{")
                && l.contains("protocol=\"grpc\"")
                && l.contains("version=\"1\"")
                && l.contains("route=\"explicit\"")
                && l.contains("status=\"2xx\"")
        })
        .unwrap_or_else(|| panic!("no gRPC requests series in\n{text}"));
    assert!(line.ends_with(" 2"), "{line}");
    assert!(text.contains(
        "switchyard_request_duration_seconds_count{model=\"digits\",version=\"1\",protocol=\"grpc\"}"
    ));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_their_codes_and_clear_messages() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.body_limit = 64 << 10).await;
    let mut c = s.grpc_client().await;
    let call = |mut req: ModelInferRequest, edit: &dyn Fn(&mut ModelInferRequest)| {
        edit(&mut req);
        req
    };
    let good = digits_grpc(&rows(1), true);
    let cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (
            call(good.clone(), &|r| r.model_name = "nope".into()),
            Code::NotFound,
            "unknown model 'nope'",
        ),
        (
            call(good.clone(), &|r| r.model_version = "9".into()),
            Code::NotFound,
            "unknown version 9",
        ),
        (
            call(good.clone(), &|r| r.model_version = "gold".into()),
            Code::NotFound,
            "label 'gold'",
        ),
        (
            call(good.clone(), &|r| r.inputs[0].shape = vec![1, 3]),
            Code::InvalidArgument,
            "shape [1, 3] needs 3",
        ),
        (
            call(good.clone(), &|r| r.inputs[0].datatype = "FP64".into()),
            Code::InvalidArgument,
            "raw_input_contents: size 256 holds 32 FP64 elements",
        ),
        (
            call(good.clone(), &|r| r.inputs[0].name = "pixels".into()),
            Code::InvalidArgument,
            "unknown input 'pixels'",
        ),
        (
            call(good.clone(), &|r| r.raw_input_contents.clear()),
            Code::InvalidArgument,
            "fp32_contents holds 0",
        ),
        (
            call(good.clone(), &|r| r.raw_input_contents.push(vec![0u8; 4].into())),
            Code::InvalidArgument,
            "2 raw_input_contents for 1 inputs",
        ),
        (
            call(good.clone(), &|r| {
                r.outputs = vec![Default::default()];
                r.outputs[0].name = "logits".into();
            }),
            Code::InvalidArgument,
            "no output 'logits' (it has label, probabilities)",
        ),
        (
            call(digits_grpc(&rows(1), false), &|r| {
                let c = r.inputs[0].contents.as_mut().unwrap();
                c.int64_contents = vec![1];
            }),
            Code::InvalidArgument,
            "FP32 data goes in fp32_contents, not int64_contents",
        ),
    ];
    for (req, code, needle) in cases {
        let status = c.model_infer(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(needle),
            "{needle:?} not in {:?}",
            status.message()
        );
    }
    // a refused input still names the version that was chosen
    let status = c
        .model_infer(call(good.clone(), &|r| r.inputs[0].shape = vec![2, 64]))
        .await
        .unwrap_err();
    assert_eq!(meta(&status, "x-model-version"), Some("1"), "{status:?}");
    assert_eq!(meta(&status, "x-route"), Some("stable"));
    // a message over the body limit: RESOURCE_EXHAUSTED, before it is read
    let big = digits_grpc(&vec![rows(1)[0].clone(); 300], true); // 300 × 256 bytes > 64 KiB
    let status = c.model_infer(big).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("limit"), "{status:?}");
    // the connection is still usable, and nothing was counted against digits
    assert!(c.model_infer(good.clone()).await.is_ok());
    // a malformed deadline
    let status = c
        .model_infer(with_metadata(good.clone(), &[("grpc-timeout", "soon")]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    // what is not supported says so
    let status = c
        .model_stream_infer(tonic::codegen::tokio_stream::iter(vec![good.clone()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("ModelStreamInfer"), "{status:?}");
    let status = c
        .system_shared_memory_status(switchyard::grpc::proto::SystemSharedMemoryStatusRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("raw_input_contents"), "{status:?}");
    // statistics of an unknown model, and a version without a model
    let stats = |name: &str, version: &str| ModelStatisticsRequest {
        name: name.into(),
        version: version.into(),
    };
    assert_eq!(
        c.model_statistics(stats("nope", "")).await.unwrap_err().code(),
        Code::NotFound
    );
    assert_eq!(
        c.model_statistics(stats("", "1")).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    // client errors are not the version's errors (the registry is shared
    // by the tests in this binary: only digits version 1 is looked at)
    let text = s.metrics().await;
    let digits_v1_5xx = |l: &&str| {
        l.contains("protocol=\"grpc\"")
            && l.contains("model=\"digits\"")
            && l.contains("version=\"1\"")
            && l.contains("status=\"5xx\"")
    };
    assert!(!text.lines().any(|l| digits_v1_5xx(&l)), "{text}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repository_rpcs_are_off_unless_enabled_and_need_the_token() {
    let repo = TestRepo::bundled(&["digits", "breast_cancer"]);
    let s = TestServer::start(repo.path()).await;
    let mut c = s.grpc_client().await;
    let status = c
        .repository_index(RepositoryIndexRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(status.message().contains("--repository-api"), "{status:?}");
    s.stop().await;

    let s = TestServer::start_with(repo.path(), |c| {
        c.repository_api = true;
        c.admin_token = Some("s3cret".into());
    })
    .await;
    let mut c = s.grpc_client().await;
    let meta = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(meta.extensions.contains(&"model_repository".to_string()));
    for token in [None, Some("Bearer wrong")] {
        let md: Vec<(&str, &str)> = token.map(|t| ("authorization", t)).into_iter().collect();
        let status = c
            .repository_index(with_metadata(RepositoryIndexRequest::default(), &md))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    let auth = [("authorization", "Bearer s3cret")];
    let index = c
        .repository_index(with_metadata(RepositoryIndexRequest::default(), &auth))
        .await
        .unwrap()
        .into_inner();
    let names: Vec<(&str, &str, &str)> = index
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.version.as_str(), m.state.as_str()))
        .collect();
    assert!(
        names.contains(&("digits", "1", "READY")) && names.contains(&("breast_cancer", "1", "READY")),
        "{names:?}"
    );
    let unload = RepositoryModelUnloadRequest {
        model_name: "breast_cancer".into(),
        ..Default::default()
    };
    c.repository_model_unload(with_metadata(unload.clone(), &auth))
        .await
        .unwrap();
    let status = c
        .repository_model_unload(with_metadata(unload, &auth))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let ready = c
        .repository_index(with_metadata(
            RepositoryIndexRequest {
                ready: true,
                ..Default::default()
            },
            &auth,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        ready
            .models
            .iter()
            .all(|m| m.name == "digits" && m.state == "READY"),
        "{:?}",
        ready.models
    );
    let load = |name: &str| RepositoryModelLoadRequest {
        model_name: name.into(),
        ..Default::default()
    };
    c.repository_model_load(with_metadata(load("breast_cancer"), &auth))
        .await
        .unwrap();
    let ready = ModelReadyRequest {
        name: "breast_cancer".into(),
        version: String::new(),
    };
    assert!(c.model_ready(ready).await.unwrap().into_inner().ready);
    let status = c
        .repository_model_load(with_metadata(load("nope"), &auth))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("no such model directory"), "{status:?}");
    s.stop().await;
}
