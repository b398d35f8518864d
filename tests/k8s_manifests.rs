//! The Kubernetes manifests (`deploy/k8s`) and the Dockerfile against the
//! server they deploy. Each kustomization (the base and every overlay) is
//! rendered with `kubectl kustomize`, parsed, and checked for what a rolling
//! update without lost requests depends on; the configuration the pod would
//! run with is parsed by the server's own flag parser, and the probe paths
//! (and gRPC health checks) are asked of a real server.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::{CommandFactory, Parser};
use common::{root, TestRepo, TestServer};
use serde::Deserialize;
use serde_json::Value;
use switchyard::cli::Cli;
use switchyard::Config;

/// Environment variables the manifests set ahead of the server: announced,
/// not yet read by `switchyard serve`. Once a flag reads one, it is checked
/// like every other.
const PENDING_ENV: &[&str] = &[];

/// The kustomizations: the base and each overlay directory.
fn kustomizations() -> Vec<PathBuf> {
    let mut dirs = vec![root().join("deploy/k8s/base")];
    let overlays = root().join("deploy/k8s/overlays");
    let mut found: Vec<PathBuf> = std::fs::read_dir(&overlays)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", overlays.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no overlay in {}", overlays.display());
    dirs.extend(found);
    dirs
}

/// `kubectl kustomize dir`, parsed: one JSON value per resource.
fn render(dir: &Path) -> Vec<Value> {
    let output = match Command::new("kubectl").arg("kustomize").arg(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "kubectl is not installed: this test renders deploy/k8s with `kubectl kustomize` \
             (kubectl >= 1.27 with kustomize v5)"
        ),
        Err(e) => panic!("cannot run kubectl: {e}"),
    };
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kubectl prints UTF-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("kubectl kustomize prints valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

/// One rendered kustomization.
struct Manifests {
    name: String,
    resources: Vec<Value>,
}

impl Manifests {
    fn load(dir: &Path) -> Manifests {
        Manifests {
            name: dir.strip_prefix(root()).unwrap_or(dir).display().to_string(),
            resources: render(dir),
        }
    }

    /// The only resource of `kind`.
    fn one(&self, kind: &str) -> &Value {
        let all: Vec<&Value> = self.resources.iter().filter(|r| r["kind"] == kind).collect();
        assert_eq!(
            all.len(),
            1,
            "{}: expected exactly one {kind}, found {}",
            self.name,
            all.len()
        );
        all[0]
    }

    /// The resource of `kind` called `name`.
    fn named(&self, kind: &str, name: &str) -> &Value {
        self.resources
            .iter()
            .find(|r| r["kind"] == kind && r["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.name))
    }
}

/// The Dockerfile's instructions, continuation lines joined.
fn dockerfile_instructions() -> Vec<String> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push(std::mem::take(&mut current));
            }
        }
    }
    out
}

/// The exec-form JSON array after `keyword` in the last such instruction.
fn dockerfile_exec_form(keyword: &str) -> Vec<String> {
    let instruction = dockerfile_instructions()
        .into_iter()
        .rev()
        .find(|i| i.starts_with(&format!("{keyword} ")))
        .unwrap_or_else(|| panic!("the Dockerfile has no {keyword}"));
    let json = &instruction[instruction.find('[').expect("exec form")..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{keyword} is not exec form ({e}): {instruction}"))
}

/// The container's effective `serve` config: its args (else the image's CMD)
/// with every `SWITCHYARD_*` variable the pod sets turned into the flag that
/// reads it, unless the args give that flag already (flags win over the
/// environment, as in clap). Variables `serve` does not read fail the test,
/// except the pending ones.
fn effective_config(m: &Manifests, container: &Value) -> (Config, BTreeMap<String, String>) {
    let mut env = BTreeMap::new();
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: only configMapRef envFrom is expected: {source}", m.name));
        let data = &m.named("ConfigMap", name)["data"];
        for (k, v) in data.as_object().into_iter().flatten() {
            env.insert(
                k.clone(),
                v.as_str().expect("ConfigMap values are strings").to_string(),
            );
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = match var["value"].as_str() {
            Some(v) => v.to_string(),
            None => "<from valueFrom>".to_string(),
        };
        env.insert(name, value);
    }

    if let Some(command) = container.get("command") {
        assert_eq!(command, &serde_json::json!(["switchyard"]), "{}: command", m.name);
    }
    let mut argv = vec!["switchyard".to_string()];
    match container["args"].as_array() {
        Some(args) => argv.extend(args.iter().map(|a| a.as_str().unwrap().to_string())),
        None => argv.extend(dockerfile_exec_form("CMD")),
    }

    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").expect("a serve subcommand");
    for (name, value) in env.iter().filter(|(k, _)| k.starts_with("SWITCHYARD_")) {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
        let Some(arg) = arg else {
            assert!(
                PENDING_ENV.contains(&name.as_str()),
                "{}: the pod sets {name}, which `switchyard serve` does not read",
                m.name
            );
            continue;
        };
        let long = format!("--{}", arg.get_long().expect("env-backed args have a long flag"));
        let given = argv
            .iter()
            .any(|a| *a == long || a.starts_with(&format!("{long}=")));
        if !given {
            argv.push(format!("{long}={value}"));
        }
    }
    let config = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("{}: `switchyard serve` rejects {argv:?}: {e}", m.name))
        .into_serve();
    (config, env)
}

/// A probe's or Service's port (number or container port name) as a number.
fn resolve_port(m: &Manifests, container: &Value, port: &Value) -> u16 {
    if let Some(n) = port.as_u64() {
        return n as u16;
    }
    let name = port
        .as_str()
        .unwrap_or_else(|| panic!("{}: bad port {port}", m.name));
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("{}: no container port named {name}", m.name)) as u16
}

/// `matchLabels` / a Service selector: non-empty and carried by the pods.
fn assert_selects(m: &Manifests, what: &str, selector: &Value, pod_labels: &Value) {
    let selector = selector
        .as_object()
        .unwrap_or_else(|| panic!("{}: {what} has no selector", m.name));
    assert!(!selector.is_empty(), "{}: {what} selects everything", m.name);
    for (k, v) in selector {
        assert_eq!(
            &pod_labels[k], v,
            "{}: {what} selects {k}={v}, the pods do not carry it",
            m.name
        );
    }
}

fn int(m: &Manifests, v: &Value, what: &str) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("{}: {what} is not a whole number: {v}", m.name))
}

/// Where the probes of one kustomization point: (listener, path), where the
/// listener is "data" or "admin", or ("grpc", health service name).
type Probes = Vec<(&'static str, String)>;

#[path = "k8s_manifests/checks.rs"]
mod checks;
use checks::check;

/// The image: its HEALTHCHECK probes the data listener of its own CMD, and
/// EXPOSE lists every listener's port.
fn check_dockerfile() -> Probes {
    let mut argv = vec!["switchyard".to_string()];
    argv.extend(dockerfile_exec_form("CMD"));
    let config = Cli::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("`switchyard serve` rejects the Dockerfile's CMD {argv:?}: {e}"))
        .into_serve();
    let expose: Vec<u16> = dockerfile_instructions()
        .iter()
        .filter_map(|i| i.strip_prefix("EXPOSE "))
        .flat_map(|ports| ports.split_whitespace().map(|p| p.parse::<u16>().unwrap()))
        .collect();
    let grpc = config.grpc_listen.addr().expect("the image serves gRPC");
    for addr in [config.listen, config.admin_listen, grpc] {
        assert!(
            expose.contains(&addr.port()),
            "EXPOSE {expose:?} lacks {}",
            addr.port()
        );
    }
    let healthcheck = dockerfile_exec_form("HEALTHCHECK");
    let url = healthcheck
        .iter()
        .find(|a| a.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in HEALTHCHECK {healthcheck:?}"));
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let addr: SocketAddr = host.parse().unwrap();
    assert_eq!(
        addr.port(),
        config.listen.port(),
        "HEALTHCHECK probes {url}, not the data listener"
    );
    vec![("data", path.to_string())]
}

#[test]
fn manifests_deploy_the_server_safely() {
    for dir in kustomizations() {
        check(&Manifests::load(&dir));
    }
    check_dockerfile();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_probe_path_is_served() {
    let mut probes = check_dockerfile();
    for dir in kustomizations() {
        probes.extend(check(&Manifests::load(&dir)));
    }
    probes.sort();
    probes.dedup();

    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    assert!(
        probes.iter().any(|(listener, _)| *listener == "grpc"),
        "no kustomization probes over gRPC: the example overlay shows that option"
    );
    for (listener, path) in &probes {
        if *listener == "grpc" {
            let channel = tonic::transport::Endpoint::from_shared(s.grpc.clone())
                .unwrap()
                .connect()
                .await
                .unwrap();
            let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
            let status = health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: path.clone(),
                })
                .await
                .unwrap()
                .into_inner()
                .status();
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving,
                "gRPC health of {path:?}"
            );
            continue;
        }
        let base = if *listener == "admin" { &s.admin } else { &s.base };
        let resp = s.client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(
            resp.status().as_u16(),
            200,
            "GET {path} on the {listener} listener"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_served_where_prometheus_scrapes() {
    let m = Manifests::load(&root().join("deploy/k8s/base"));
    let path = m.one("Deployment")["spec"]["template"]["metadata"]["annotations"]["prometheus.io/path"]
        .as_str()
        .unwrap()
        .to_string();
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let resp = s.client.get(format!("{}{path}", s.admin)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "GET {path} on the admin listener");
    s.stop().await;
}
