//! Stock clients against a real server: `tritonclient.http` and
//! `tritonclient.grpc`, the KServe Python SDK's V2 REST and gRPC clients, a
//! grpc_health_probe-style check and the README's grpcurl commands over
//! server reflection, run from the venv that `make setup-test` builds
//! (.venv/test, pinned in tests/clients/requirements.txt).
//!
//! The Python scripts in tests/clients/ do the checking; each prints one
//! `ok:` line per check and exits non-zero on the first failure.

mod common;

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{readme_accuracy, root, TestRepo, TestServer};

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

/// Runs `tests/clients/<script>` with `args` (off the async runtime, which
/// serves the script's requests); panics with its output unless it exits 0
/// and prints `marker`. A script still running after five minutes is killed.
async fn run_script(script: &str, args: &[String], marker: &str) -> String {
    // Output goes to files, not pipes, so a chatty script cannot block.
    let mut stdout_file = tempfile::tempfile().unwrap();
    let mut stderr_file = tempfile::tempfile().unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/clients").join(script))
        .args(args)
        .current_dir(root().join("tests/clients"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(stdout_file.try_clone().unwrap())
        .stderr(stderr_file.try_clone().unwrap());
    let name = script.to_string();
    let status = tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
    let read = |f: &mut std::fs::File| {
        let mut text = String::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_string(&mut text).unwrap();
        text
    };
    let stdout = read(&mut stdout_file);
    let stderr = read(&mut stderr_file);
    assert!(
        status.success() && stdout.contains(marker),
        "{script} failed ({status}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
    );
    stdout
}

fn repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    for t in ["string", "fp16", "bool", "uint64"] {
        let name = format!("identity_{t}");
        repo.add_fixture(&name, &name);
    }
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_speaks_json_and_binary() {
    python(); // fail before starting a server when the venv is missing
    let repo = repo();
    let s = TestServer::start(repo.path()).await;
    let (correct, _) = readme_accuracy("digits", 1);
    let extensions = serde_json::to_string(&switchyard::api::v2::extensions(false)).unwrap();
    let out = run_script(
        "triton_http.py",
        &[s.base.clone(), extensions, correct.to_string()],
        "triton_http: all checks passed",
    )
    .await;
    assert!(
        out.contains("ok: labels equal the JSON path (in=True, out=None)"),
        "{out}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_rest_client_infers_digits() {
    python(); // fail before starting a server when the venv is missing
    let repo = repo();
    let s = TestServer::start(repo.path()).await;
    let (correct, _) = readme_accuracy("digits", 1);
    let out = run_script(
        "kserve_rest.py",
        &[s.base.clone(), correct.to_string()],
        "kserve_rest: all checks passed",
    )
    .await;
    assert!(out.contains("ok: labels equal across JSON and binary"), "{out}");
    s.stop().await;
}

/// The clients' repository plus `unready`, a model whose only version
/// failed to load (UNAVAILABLE, which clients retry).
fn grpc_repo() -> TestRepo {
    let repo = repo();
    let dir = repo.path().join("unready/1");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.onnx"), b"not an ONNX model").unwrap();
    repo
}

/// `127.0.0.1:port` of the server's gRPC listener.
fn grpc_address(s: &TestServer) -> String {
    s.grpc.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_grpc_speaks_raw_and_typed_contents() {
    python(); // fail before starting a server when the venv is missing
    let repo = grpc_repo();
    let s = TestServer::start(repo.path()).await;
    let (correct, _) = readme_accuracy("digits", 1);
    let out = run_script(
        "triton_grpc.py",
        &[grpc_address(&s), correct.to_string()],
        "triton_grpc: all checks passed",
    )
    .await;
    assert!(out.contains("ok: typed labels equal the raw path"), "{out}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_grpc_client_infers_digits_and_honours_retry_pushback() {
    python(); // fail before starting a server when the venv is missing
    let repo = grpc_repo();
    let s = TestServer::start(repo.path()).await;
    let (correct, _) = readme_accuracy("digits", 1);
    let out = run_script(
        "kserve_grpc.py",
        &[grpc_address(&s), correct.to_string()],
        "kserve_grpc: all checks passed",
    )
    .await;
    assert!(
        out.contains("ok: the client waited the server's pushback"),
        "{out}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_and_the_readme_grpcurl_commands_work_through_reflection() {
    python(); // fail before starting a server when the venv is missing
    let repo = grpc_repo();
    let s = TestServer::start(repo.path()).await;
    let label = common::digits_samples()[0].1;
    let out = run_script(
        "grpc_tools.py",
        &[
            grpc_address(&s),
            root().join("README.md").display().to_string(),
            label.to_string(),
        ],
        "grpc_tools: all checks passed",
    )
    .await;
    assert!(
        out.contains("ok: health of 'inference.GRPCInferenceService'"),
        "{out}"
    );
    s.stop().await;
}
