//! Test harness: a real server on 127.0.0.1:0 over a temporary model
//! repository assembled from `models/` and `tests/fixtures/models/`.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use switchyard::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use switchyard::{Config, Server};

pub mod raw;
/// The generated gRPC client over a tonic channel.
pub type GrpcClient = GrpcInferenceServiceClient<tonic::transport::Channel>;

/// A TCP port free on 127.0.0.1 right now (for servers started as a
/// separate process, which cannot report a `:0` port back, and that keep
/// their port across restarts). It lies below the kernel's ephemeral range,
/// where a `:0` port would lie: any outgoing connection of the machine
/// (a client, Prometheus scraping) may take an ephemeral port before the
/// process binds it, or between two of its lives. No port is handed out
/// twice in one test process.
pub fn free_port() -> u16 {
    use std::sync::Mutex;
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut given = GIVEN.lock().unwrap();
    for _ in 0..10_000 {
        let port = fastrand::u16(low..high);
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The crate root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A temporary model repository.
pub struct TestRepo {
    pub dir: tempfile::TempDir,
}

impl TestRepo {
    /// An empty repository.
    pub fn empty() -> TestRepo {
        TestRepo {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A repository holding the named bundled models (from `models/`).
    pub fn bundled(models: &[&str]) -> TestRepo {
        let repo = TestRepo::empty();
        for m in models {
            repo.add_bundled(m);
        }
        repo
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Copies `models/<name>` in, with its config.toml and samples.json.
    pub fn add_bundled(&self, name: &str) -> &Self {
        copy_dir(&root().join("models").join(name), &self.path().join(name));
        self
    }

    /// Copies `tests/fixtures/models/<fixture>` in under the name `as_name`.
    pub fn add_fixture(&self, fixture: &str, as_name: &str) -> &Self {
        copy_dir(
            &root().join("tests/fixtures/models").join(fixture),
            &self.path().join(as_name),
        );
        self
    }

    /// Copies version `version` of a bundled model or fixture directory
    /// (`src` relative to the crate root) to `model/new_version`.
    pub fn add_version(&self, src: &str, model: &str, new_version: u64) -> &Self {
        copy_dir(
            &root().join(src),
            &self.path().join(model).join(new_version.to_string()),
        );
        self
    }

    /// Writes `model/config.toml`.
    pub fn config(&self, model: &str, toml: &str) -> &Self {
        std::fs::create_dir_all(self.path().join(model)).unwrap();
        std::fs::write(self.path().join(model).join("config.toml"), toml).unwrap();
        self
    }
}

/// A running server and a client for it.
pub struct TestServer {
    pub server: Option<Server>,
    /// `http://127.0.0.1:port` of the data listener.
    pub base: String,
    /// `http://127.0.0.1:port` of the admin listener.
    pub admin: String,
    /// `http://127.0.0.1:port` of the gRPC listener (empty when it is off).
    pub grpc: String,
    pub client: reqwest::Client,
}

impl TestServer {
    /// Starts a server on `repo` with default settings and waits until the
    /// repository finished loading.
    pub async fn start(repo: &Path) -> TestServer {
        TestServer::start_with(repo, |_| {}).await
    }

    /// Like `start`, with a chance to change the config first.
    pub async fn start_with(repo: &Path, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = Config::for_repository(repo);
        config.drain_secs = 0;
        tweak(&mut config);
        let server = switchyard::start(config).await.expect("server starts");
        let base = format!("http://{}", server.addr);
        let admin = format!("http://{}", server.admin_addr);
        let grpc = server
            .grpc_addr
            .map(|a| format!("http://{a}"))
            .unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server.state.repo.snapshot().initial_load_done || !server.state.is_restored() {
            assert!(Instant::now() < deadline, "repository did not load within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        TestServer {
            server: Some(server),
            base,
            admin,
            grpc,
            client: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET a data-plane path; (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// POST JSON to a data-plane path; (status, JSON body).
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_raw(path, body.to_string()).await
    }

    /// POST raw bytes to a data-plane path; (status, JSON body).
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// A request to the admin listener, with the bearer token when the
    /// server has one; (status, JSON body).
    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.client.request(method, format!("{}{}", self.admin, path));
        if let Some(token) = self
            .server
            .as_ref()
            .and_then(|s| s.state.settings.admin_token.clone())
        {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Replaces a model's traffic policy; panics unless the server accepts it.
    pub async fn set_policy(&self, model: &str, policy: Value) {
        let (st, body) = self
            .admin(
                reqwest::Method::PUT,
                &format!("/admin/v1/models/{model}/policy"),
                Some(policy),
            )
            .await;
        assert_eq!(st, 200, "policy rejected: {body}");
    }

    /// `GET /metrics` on the admin listener: 200, Prometheus text.
    pub async fn metrics(&self) -> String {
        let resp = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let ct = resp.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/plain"), "{ct}");
        resp.text().await.unwrap()
    }

    /// The shared state of the running server.
    pub fn state(&self) -> std::sync::Arc<switchyard::serving::AppState> {
        self.server.as_ref().unwrap().state.clone()
    }

    /// The value of one Prometheus series (`name{labels}` exactly as
    /// rendered), 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    /// A tonic client of the gRPC listener (one HTTP/2 connection).
    pub async fn grpc_client(&self) -> GrpcClient {
        let channel = tonic::transport::Endpoint::from_shared(self.grpc.clone())
            .expect("the gRPC listener is on")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .expect("the gRPC listener accepts");
        GrpcClient::new(channel)
    }

    /// The snapshot of the running server.
    pub fn snapshot(&self) -> std::sync::Arc<switchyard::repository::Snapshot> {
        self.server.as_ref().unwrap().state.repo.snapshot()
    }

    /// Stops the server gracefully.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.unwrap();
        }
    }
}

/// The held-out digits samples: (64 pixel values, true label).
pub fn digits_samples() -> Vec<(Vec<f64>, i64)> {
    let text = std::fs::read_to_string(root().join("models/digits/samples.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let row: Vec<f64> = s["inputs"]["input"][0]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (row, s["label"].as_i64().unwrap())
        })
        .collect()
}

/// A V2 infer body for `rows` of digits pixels.
pub fn digits_request(rows: &[Vec<f64>]) -> Value {
    json!({
        "inputs": [{
            "name": "input",
            "shape": [rows.len(), 64],
            "datatype": "FP32",
            "data": rows,
        }]
    })
}

/// A gRPC infer request for `rows` of digits pixels: raw little-endian
/// contents (as tritonclient sends them), or typed `fp32_contents`.
pub fn digits_grpc(rows: &[Vec<f64>], raw: bool) -> switchyard::grpc::proto::ModelInferRequest {
    use switchyard::grpc::proto::model_infer_request::InferInputTensor;
    use switchyard::grpc::proto::{InferTensorContents, ModelInferRequest};
    let values: Vec<f32> = rows.iter().flatten().map(|&x| x as f32).collect();
    let mut input = InferInputTensor {
        name: "input".into(),
        datatype: "FP32".into(),
        shape: vec![rows.len() as i64, 64],
        ..Default::default()
    };
    let mut req = ModelInferRequest {
        model_name: "digits".into(),
        ..Default::default()
    };
    if raw {
        let bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
        req.raw_input_contents = vec![bytes.into()];
    } else {
        input.contents = Some(InferTensorContents {
            fp32_contents: values,
            ..Default::default()
        });
    }
    req.inputs = vec![input];
    req
}

/// A tonic request carrying `metadata` (ASCII key, value pairs).
pub fn with_metadata<T>(message: T, metadata: &[(&str, &str)]) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    for (k, v) in metadata {
        let key = tonic::metadata::MetadataKey::from_bytes(k.as_bytes()).unwrap();
        req.metadata_mut().insert(key, v.parse().unwrap());
    }
    req
}

/// The labels of a digits gRPC answer (INT64, raw or typed).
pub fn grpc_labels(resp: &switchyard::grpc::proto::ModelInferResponse) -> Vec<i64> {
    let i = resp
        .outputs
        .iter()
        .position(|o| o.name == "label")
        .expect("a label output");
    match resp.raw_output_contents.get(i) {
        Some(raw) => raw
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        None => resp.outputs[i].contents.as_ref().unwrap().int64_contents.clone(),
    }
}

/// Reads the held-out accuracy of `model` version `version` from
/// models/README.md (the table row of `models/<model>/<version>/model.onnx`,
/// figure written as "0.9689 (436/450)"): (correct, total).
pub fn readme_accuracy(model: &str, version: u64) -> (usize, usize) {
    let text = std::fs::read_to_string(root().join("models/README.md")).unwrap();
    let key = format!("`models/{model}/{version}/model.onnx`");
    let line = text
        .lines()
        .find(|l| l.starts_with('|') && l.contains(&key))
        .unwrap_or_else(|| panic!("models/README.md has no table row for {key}"));
    line.match_indices('(')
        .find_map(|(i, _)| {
            let rest = &line[i + 1..];
            let (inner, _) = rest.split_once(')')?;
            let (a, b) = inner.split_once('/')?;
            Some((a.trim().parse().ok()?, b.trim().parse().ok()?))
        })
        .unwrap_or_else(|| panic!("no (correct/total) figure in: {line}"))
}

/// POSTs `body` and returns (status, x-model-version, x-route, JSON body).
pub async fn post_v1(s: &TestServer, path: &str, body: &Value) -> (u16, String, String, Value) {
    let resp = s
        .client
        .post(s.url(path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (version, route) = (header("x-model-version"), header("x-route"));
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
    (status, version, route, json)
}
