//! The model repository on disk: version policies, broken versions and
//! broken files never disturb what serves.

mod common;

use common::{digits_request, digits_samples, TestRepo, TestServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_version_is_unavailable_and_harmless() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_version("models/digits/2", "digits", 3);
    std::fs::write(
        repo.path().join("digits/3/model.onnx"),
        b"this is not an ONNX model",
    )
    .unwrap();
    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    let s = TestServer::start(repo.path()).await;

    let snapshot = s.server.as_ref().unwrap().state.repo.snapshot();
    let digits = &snapshot.models["digits"];
    assert_eq!(digits.versions[&1].state.name(), "READY");
    assert_eq!(digits.versions[&2].state.name(), "READY");
    let broken = &digits.versions[&3].state;
    assert_eq!(broken.name(), "UNAVAILABLE");
    assert!(broken.reason().contains("model.onnx"), "{}", broken.reason());
    assert!(
        !broken.reason().contains(repo.path().to_str().unwrap()),
        "no local paths in reasons: {}",
        broken.reason()
    );

    // the newest READY version serves versionless requests; /ready stays 200
    assert_eq!(s.get("/ready").await.0, 200);
    let row = digits_samples()[0].0.clone();
    let (st, body) = s
        .post(
            "/v2/models/digits/infer",
            &digits_request(std::slice::from_ref(&row)),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["model_version"], "2");
    let (st, body) = s
        .post("/v2/models/digits/versions/3/infer", &digits_request(&[row]))
        .await;
    assert_eq!(st, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("UNAVAILABLE"), "{body}");
    assert_eq!(s.get("/v2/models/digits/versions/3/ready").await.0, 503);
    let (_, meta) = s.get("/v2/models/digits").await;
    assert_eq!(meta["versions"], json!(["1", "2"]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn version_policies_choose_what_is_loaded() {
    let repo = TestRepo::bundled(&["digits"]);
    repo.add_version("models/digits/1", "digits", 5);
    // not versions: leading zero, non-numeric, no model.onnx (half-written)
    repo.add_version("models/digits/1", "digits", 1)
        .config("digits", "");
    common::copy_dir(
        &common::root().join("models/digits/1"),
        &repo.path().join("digits/07"),
    );
    common::copy_dir(
        &common::root().join("models/digits/1"),
        &repo.path().join("digits/v9"),
    );
    std::fs::create_dir_all(repo.path().join("digits/9")).unwrap();

    // default policy: latest 1
    let s = TestServer::start(repo.path()).await;
    let snap = s.server.as_ref().unwrap().state.repo.snapshot();
    assert_eq!(
        snap.models["digits"].versions.keys().copied().collect::<Vec<_>>(),
        vec![5]
    );
    s.stop().await;

    repo.config("digits", "[versions]\npolicy = \"latest\"\nlatest = 2\n");
    let s = TestServer::start(repo.path()).await;
    let snap = s.server.as_ref().unwrap().state.repo.snapshot();
    assert_eq!(
        snap.models["digits"].versions.keys().copied().collect::<Vec<_>>(),
        vec![2, 5]
    );
    s.stop().await;

    repo.config("digits", "[versions]\npolicy = \"specific\"\nspecific = [1, 5]\n");
    let s = TestServer::start(repo.path()).await;
    let snap = s.server.as_ref().unwrap().state.repo.snapshot();
    assert_eq!(
        snap.models["digits"].versions.keys().copied().collect::<Vec<_>>(),
        vec![1, 5]
    );
    s.stop().await;

    repo.config("digits", "[versions]\npolicy = \"all\"\n");
    let s = TestServer::start(repo.path()).await;
    let snap = s.server.as_ref().unwrap().state.repo.snapshot();
    assert_eq!(
        snap.models["digits"].versions.keys().copied().collect::<Vec<_>>(),
        vec![1, 2, 5]
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_names_file_and_key_and_spares_other_models() {
    let repo = TestRepo::bundled(&["digits", "breast_cancer"]);
    repo.config("breast_cancer", "[execution]\nmax_batch_sise = 8\n");
    let s = TestServer::start(repo.path()).await;
    let (st, body) = s.get("/v2/models/breast_cancer").await;
    assert_eq!(st, 503, "{body}");
    let msg = body["error"].as_str().unwrap();
    assert!(
        msg.contains("config.toml") && msg.contains("max_batch_sise"),
        "{msg}"
    );
    assert_eq!(s.get("/ready").await.0, 200);
    let row = digits_samples()[0].0.clone();
    assert_eq!(
        s.post("/v2/models/digits/infer", &digits_request(&[row])).await.0,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_data_must_stay_in_the_version_directory() {
    let repo = TestRepo::empty();
    repo.add_fixture("external_ok", "external_ok");
    repo.add_fixture("external_escape", "external_escape");
    // the escaping model's target exists, so a naive loader would read it
    let fixtures = common::root().join("tests/fixtures/models");
    for entry in std::fs::read_dir(&fixtures).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), repo.path().join(entry.file_name())).unwrap();
        }
    }
    let s = TestServer::start(repo.path()).await;
    let snap = s.server.as_ref().unwrap().state.repo.snapshot();
    assert_eq!(snap.models["external_ok"].versions[&1].state.name(), "READY");
    let escape = &snap.models["external_escape"].versions[&1].state;
    assert_eq!(escape.name(), "UNAVAILABLE");
    assert!(escape.reason().contains("escapes"), "{}", escape.reason());

    let (st, body) = s
        .post(
            "/v2/models/external_ok/infer",
            &json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 0, 0, 0]}]}),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["outputs"][0]["shape"], json!([1, 4]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_without_a_servable_model() {
    let repo = TestRepo::empty();
    let s = TestServer::start(repo.path()).await;
    let (st, body) = s.get("/ready").await;
    assert_eq!(st, 503);
    assert!(body["error"].as_str().unwrap().contains("no model"), "{body}");
    assert_eq!(s.get("/v2/health/ready").await.0, 503);
    assert_eq!(s.get("/health").await.0, 200);
    s.stop().await;

    // only a corrupt version: still not ready
    let repo = TestRepo::empty();
    std::fs::create_dir_all(repo.path().join("m/1")).unwrap();
    std::fs::write(repo.path().join("m/1/model.onnx"), b"garbage").unwrap();
    let s = TestServer::start(repo.path()).await;
    assert_eq!(s.get("/ready").await.0, 503);
    s.stop().await;
}

#[test]
fn a_missing_onnxruntime_library_is_a_clear_start_up_error() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--onnxruntime-lib", "/nonexistent/libonnxruntime.so"])
        .current_dir(common::root())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("scripts/setup-onnxruntime.sh"), "{err}");
    assert!(err.contains("/nonexistent/libonnxruntime.so"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_directory_may_be_a_link_that_stays_in_the_repository() {
    let repo = TestRepo::bundled(&["digits"]);
    let outside = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(outside.path().join("1")).unwrap();
    std::fs::copy(
        common::root().join("models/digits/2/model.onnx"),
        outside.path().join("1/model.onnx"),
    )
    .unwrap();
    std::os::unix::fs::symlink("digits", repo.path().join("alias")).unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("escape")).unwrap();
    let s = TestServer::start(repo.path()).await;

    let row = digits_samples()[0].0.clone();
    let (st, body) = s
        .post(
            "/v2/models/alias/infer",
            &digits_request(std::slice::from_ref(&row)),
        )
        .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["model_name"], "alias");

    // a real model behind the link, but outside: never served
    for path in ["/v2/models/escape", "/v2/models/escape/ready"] {
        assert_eq!(s.get(path).await.0, 404, "{path}");
    }
    let (st, _) = s
        .post(
            "/v2/models/escape/infer",
            &digits_request(std::slice::from_ref(&row)),
        )
        .await;
    assert_eq!(st, 404);
    let mut served: Vec<String> = s.snapshot().models.keys().cloned().collect();
    served.sort();
    assert_eq!(served, ["alias", "digits"]);
    assert_eq!(
        s.post("/v2/models/digits/infer", &digits_request(&[row])).await.0,
        200
    );
    s.stop().await;
}
