//! The harness of `tests/fleet.rs`: the central noun is the **fleet on
//! loopback** (`LocalFleet`): the Kubernetes API stand-in, a real
//! Prometheus scraping every replica each second, and N `switchyard serve
//! --fleet kubernetes` processes, each with its own ports and state
//! directory, started, killed (`kill -9`) and restarted one by one. It does
//! what `scripts/fleet-local.sh` does, with a handle on every process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{free_port, root, TestRepo};
use crate::standin::StandIn;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
pub(crate) const TOKEN: &str = "fleet-t0ken";
/// Lease timings of the tests: 3 s / 2 s / 500 ms.
pub(crate) const LEASE: Duration = Duration::from_secs(3);

/// Stops a child by its PID on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One replica: fixed ports and state directory, so a restart is the same pod.
pub(crate) struct Pod {
    pub(crate) name: String,
    pub(crate) data: String,
    pub(crate) admin: String,
    data_port: u16,
    admin_port: u16,
    state: PathBuf,
    log: PathBuf,
    child: Option<Proc>,
}

/// Prometheus on a free port with a 1 s scrape of every replica.
pub(crate) struct Prometheus {
    pub(crate) url: String,
    child: Option<Proc>,
}

impl Prometheus {
    /// `kill -9`.
    pub(crate) fn kill(&mut self) {
        self.child.take();
    }
}

pub(crate) struct LocalFleet {
    pub(crate) kube: StandIn,
    pub(crate) prometheus: Prometheus,
    pub(crate) pods: Vec<Pod>,
    pub(crate) repo: TestRepo,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    pub(crate) client: reqwest::Client,
}

/// digits with versions 1 (stable) and 2 loaded, plus `extra` versions on
/// disk (loaded by the fleet when a rollout names them).
pub(crate) fn repo(extra: &[(&str, u64)]) -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    for (src, v) in extra {
        repo.add_version(src, "digits", *v);
    }
    repo.config(
        "digits",
        "[execution]\nmax_batch_size = 16\n[versions]\npolicy = \"specific\"\nspecific = [1, 2]\n[labels]\nstable = 1\n",
    );
    repo
}

impl LocalFleet {
    /// The stand-in, Prometheus and `n` replicas, all ready.
    pub(crate) async fn start(n: usize, repo: TestRepo) -> LocalFleet {
        let dir = tempfile::tempdir().unwrap();
        let kube = StandIn::start();
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: {}\ncontexts:\n- name: s\n  context:\n    cluster: s\n    user: s\n    namespace: default\nusers:\n- name: s\n  user: {{}}\ncurrent-context: s\n",
                kube.url
            ),
        )
        .unwrap();
        let pods: Vec<Pod> = (1..=n)
            .map(|i| {
                let name = format!("pod-{i}");
                let (data_port, admin_port) = (free_port(), free_port());
                Pod {
                    data: format!("http://127.0.0.1:{data_port}"),
                    admin: format!("http://127.0.0.1:{admin_port}"),
                    state: dir.path().join(&name),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    data_port,
                    admin_port,
                    child: None,
                }
            })
            .collect();
        let prometheus = start_prometheus(dir.path(), &pods);
        let mut fleet = LocalFleet {
            kube,
            prometheus,
            pods,
            repo,
            dir,
            kubeconfig,
            client: reqwest::Client::new(),
        };
        for i in 0..n {
            fleet.spawn(i);
        }
        for i in 0..n {
            fleet.wait_ready(i, Duration::from_secs(120)).await;
        }
        fleet.wait_prometheus().await;
        fleet
    }

    /// Starts replica `i` (again).
    pub(crate) fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.pods[i].log)
            .unwrap();
        let p = &self.pods[i];
        let child = Command::new(BIN)
            .arg("serve")
            .arg("--model-repository")
            .arg(self.repo.path())
            .arg("--state-dir")
            .arg(&p.state)
            .args(["--listen", &format!("127.0.0.1:{}", p.data_port)])
            .args(["--admin-listen", &format!("127.0.0.1:{}", p.admin_port)])
            // several replicas on one machine: no gRPC listener each
            .args(["--grpc-listen", "off"])
            .args([
                "--fleet",
                "kubernetes",
                "--namespace",
                "default",
                "--pod-name",
                &p.name,
            ])
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["--prometheus-url", &self.prometheus.url])
            .args(["--lease-duration", "3s", "--lease-renew-deadline", "2s"])
            .args(["--lease-retry-period", "500ms", "--drain-secs", "0"])
            .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .current_dir(root())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.pods[i].child = Some(Proc(child));
    }

    /// `kill -9` of replica `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        self.pods[i].child.take();
    }

    /// Waits until replica `i` answers `/ready` 200.
    pub(crate) async fn wait_ready(&self, i: usize, within: Duration) {
        let url = format!("{}/ready", self.pods[i].data);
        let deadline = Instant::now() + within;
        loop {
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {within:?}; log:\n{}",
                self.pods[i].name,
                self.log(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_prometheus(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let n = self.pods.len();
        while self.prom_scalar("count(up == 1)").await != Some(n as f64) {
            assert!(
                Instant::now() < deadline,
                "Prometheus does not scrape the {n} replicas"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A Prometheus instant query's single value.
    pub(crate) async fn prom_scalar(&self, q: &str) -> Option<f64> {
        let resp = self
            .client
            .get(format!("{}/api/v1/query", self.prometheus.url))
            .query(&[("query", q)])
            .send()
            .await
            .ok()?;
        let v: Value = resp.json().await.ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }

    /// Replica `i`'s log so far.
    pub(crate) fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.pods[i].log).unwrap_or_default()
    }

    /// Every replica's log, for a failure message.
    pub(crate) fn logs(&self) -> String {
        (0..self.pods.len())
            .map(|i| {
                let log = self.log(i);
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                format!(
                    "--- {} ---\n{}",
                    self.pods[i].name,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// An admin request to replica `i`: (status, JSON).
    pub(crate) async fn admin(
        &self,
        i: usize,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.pods[i].admin))
            .bearer_auth(TOKEN)
            .timeout(Duration::from_secs(60));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// `GET /admin/v1/fleet` of replica `i`.
    pub(crate) async fn fleet(&self, i: usize) -> Value {
        self.admin(i, reqwest::Method::GET, "/admin/v1/fleet", None)
            .await
            .1
    }

    /// The index of the replica that leads, waiting for one to.
    pub(crate) async fn leader(&self, alive: &[usize], within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            for &i in alive {
                if self.fleet(i).await["leading"] == true {
                    return i;
                }
            }
            assert!(
                Instant::now() < deadline,
                "no replica leads within {within:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The rollout of digits as replica `i` sees it.
    pub(crate) async fn rollout(&self, i: usize) -> Value {
        self.admin(i, reqwest::Method::GET, "/admin/v1/models/digits/rollout", None)
            .await
            .1
    }

    /// Starts a rollout through replica `i`'s admin API.
    pub(crate) async fn start_rollout(&self, i: usize, spec: Value) -> Value {
        let (st, body) = self
            .admin(
                i,
                reqwest::Method::POST,
                "/admin/v1/models/digits/rollouts",
                Some(spec),
            )
            .await;
        assert_eq!(st, 200, "{body}\n{}", self.logs());
        body
    }

    /// Waits until replica `i` sees the rollout in one of `phases` (and
    /// `pred` holds), failing on any other final phase.
    pub(crate) async fn wait_rollout(
        &self,
        i: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let r = self.rollout(i).await;
            if pred(&r) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {within:?}: {r}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The policy revision replica `i` exports for digits (its /metrics).
    pub(crate) async fn revision(&self, i: usize) -> Option<u64> {
        let text = self
            .client
            .get(format!("{}/metrics", self.pods[i].admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find(|l| l.starts_with("switchyard_policy_revision{model=\"digits\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .map(|v| v as u64)
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn start_prometheus(dir: &Path, pods: &[Pod]) -> Prometheus {
    let port = free_port();
    let targets: Vec<String> = pods
        .iter()
        .map(|p| format!("\"127.0.0.1:{}\"", p.admin_port))
        .collect();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    std::fs::write(dir.join("prometheus.yml"), config).unwrap();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("prometheus").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus is missing: run `make setup-test` (installs the Debian package prometheus)");
    Prometheus {
        url: format!("http://127.0.0.1:{port}"),
        child: Some(Proc(child)),
    }
}

/// One V2 infer of a held-out digits sample on the replica at `data` for `user`:
/// (status, x-model-version, x-route, request id, predicted label).
pub(crate) async fn infer(
    client: &reqwest::Client,
    data: &str,
    user: &str,
    row: &[f64],
    id: &str,
) -> (u16, Option<u64>, String, Option<i64>) {
    let mut body = crate::common::digits_request(&[row.to_vec()]);
    body["id"] = json!(id);
    let resp = client
        .post(format!("{data}/v2/models/digits/infer"))
        .header("x-user-id", user)
        .json(&body)
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let Ok(resp) = resp else {
        return (0, None, String::new(), None);
    };
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let version = header("x-model-version").and_then(|v| v.parse().ok());
    let route = header("x-route").unwrap_or_default();
    let out: Value = resp.json().await.unwrap_or(Value::Null);
    (status, version, route, out["outputs"][0]["data"][0].as_i64())
}
