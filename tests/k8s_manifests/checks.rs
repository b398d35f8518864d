//! The checks of one rendered kustomization: the Deployment's pod and its
//! switchyard container against what a rolling update without lost
//! requests depends on, one concern per function.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde_json::Value;
use switchyard::Config;

use super::{assert_selects, effective_config, int, resolve_port, Manifests, Probes};

/// The Deployment's pod and its `switchyard` container, with the server
/// configuration it would run with.
struct Pod<'a> {
    m: &'a Manifests,
    deployment: &'a Value,
    name: &'a str,
    pod: &'a Value,
    labels: &'a Value,
    container: &'a Value,
    config: Config,
    env: BTreeMap<String, String>,
    /// Every listener and its address.
    listeners: Vec<(&'static str, SocketAddr)>,
}

impl Pod<'_> {
    /// Which listener serves `port`.
    fn listener_of(&self, port: u16) -> &'static str {
        self.listeners
            .iter()
            .find(|(_, addr)| addr.port() == port)
            .map(|(what, _)| *what)
            .unwrap_or_else(|| {
                panic!(
                    "{}: port {port} is no listener's {:?}",
                    self.m.name, self.listeners
                )
            })
    }
}

/// Checks a rendered kustomization; the probes it asks the server for.
pub(super) fn check(m: &Manifests) -> Probes {
    let deployment = m.one("Deployment");
    let pod = &deployment["spec"]["template"];
    let container = pod["spec"]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == "switchyard")
        .unwrap_or_else(|| panic!("{}: no container named switchyard", m.name));
    let (config, env) = effective_config(m, container);
    let mut listeners = vec![("data", config.listen), ("admin", config.admin_listen)];
    listeners.extend(config.grpc_listen.addr().map(|a| ("grpc", a)));
    let p = Pod {
        m,
        deployment,
        name: deployment["metadata"]["name"].as_str().unwrap(),
        pod,
        labels: &pod["metadata"]["labels"],
        container,
        config,
        env,
        listeners,
    };
    listeners_are_declared(&p);
    let probes = probes(&p);
    shutdown(&p);
    rolling_update(&p);
    security(&p);
    admin_token(&p);
    scrape(&p);
    selectors(&p);
    autoscaling(&p);
    probes
}

/// Listeners: on every interface (probes and Prometheus come from outside
/// the pod), on the ports the container declares.
fn listeners_are_declared(p: &Pod) {
    let m = p.m;
    let container = p.container;
    let declared: Vec<u64> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| int(m, &p["containerPort"], "containerPort"))
        .collect();
    for (what, addr) in &p.listeners {
        assert!(
            addr.ip().is_unspecified(),
            "{}: the {what} listener {addr} is not on every interface",
            m.name
        );
        assert!(
            declared.contains(&u64::from(addr.port())),
            "{}: the {what} port {} is not a declared container port {declared:?}",
            m.name,
            addr.port()
        );
    }
}

/// Probes: all three; startup and liveness over HTTP on the data
/// listener, readiness over HTTP there or over gRPC health on the gRPC
/// listener (which reports the same readiness).
fn probes(p: &Pod) -> Probes {
    let m = p.m;
    let container = p.container;
    let mut probes = Probes::new();
    for (kind, expected_path) in [
        ("startupProbe", None),
        ("livenessProbe", Some("/health")),
        ("readinessProbe", Some("/ready")),
    ] {
        let grpc = &container[kind]["grpc"];
        if kind == "readinessProbe" && grpc.is_object() {
            assert!(
                container[kind]["httpGet"].is_null(),
                "{}: {kind} has two handlers",
                m.name
            );
            let port = u16::try_from(int(m, &grpc["port"], "grpc probe port")).unwrap();
            assert_eq!(
                p.listener_of(port),
                "grpc",
                "{}: the gRPC {kind} must probe the gRPC listener",
                m.name
            );
            let service = grpc["service"].as_str().unwrap_or("");
            assert!(
                switchyard::grpc::health::SERVICES.contains(&service),
                "{}: the gRPC {kind} asks for service {service:?}, whose health is not readiness",
                m.name
            );
            probes.push(("grpc", service.to_string()));
            continue;
        }
        let get = &container[kind]["httpGet"];
        let path = get["path"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: {kind} is not an httpGet probe", m.name));
        if let Some(expected) = expected_path {
            assert_eq!(path, expected, "{}: {kind} path", m.name);
        }
        let port = resolve_port(m, container, &get["port"]);
        assert_eq!(
            p.listener_of(port),
            "data",
            "{}: {kind} must probe the data listener",
            m.name
        );
        probes.push(("data", path.to_string()));
    }
    probes
}

/// Shutdown: preStop sleep ≥ drain; the grace period (which starts with
/// preStop) covers preStop + drain + in-flight timeout.
fn shutdown(p: &Pod) {
    let m = p.m;
    let pod = p.pod;
    let container = p.container;
    let config = &p.config;
    let pre_stop = &container["lifecycle"]["preStop"];
    let sleep = match (
        pre_stop["exec"]["command"].as_array(),
        pre_stop["sleep"]["seconds"].as_u64(),
    ) {
        (Some(cmd), _) => {
            let cmd: Vec<&str> = cmd.iter().map(|c| c.as_str().unwrap()).collect();
            assert!(
                cmd.len() == 2 && cmd[0].ends_with("sleep"),
                "{}: preStop is not a sleep: {cmd:?}",
                m.name
            );
            cmd[1].parse::<u64>().unwrap()
        }
        (None, Some(seconds)) => seconds,
        _ => panic!("{}: no preStop sleep", m.name),
    };
    assert!(
        sleep >= config.drain_secs,
        "{}: preStop sleeps {sleep} s, shorter than the drain of {} s",
        m.name,
        config.drain_secs
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    let needed = sleep + config.drain_secs + config.shutdown_timeout_secs;
    assert!(
        grace > needed,
        "{}: terminationGracePeriodSeconds {grace} must exceed preStop {sleep} + drain {} + shutdown timeout {} = {needed}",
        m.name,
        config.drain_secs,
        config.shutdown_timeout_secs
    );
}

/// Rolling update: never below the ready capacity.
fn rolling_update(p: &Pod) {
    let m = p.m;
    let deployment = p.deployment;
    let strategy = &deployment["spec"]["strategy"];
    assert!(
        strategy["type"].is_null() || strategy["type"] == "RollingUpdate",
        "{}",
        m.name
    );
    let max_unavailable = &strategy["rollingUpdate"]["maxUnavailable"];
    assert!(
        *max_unavailable == 0 || *max_unavailable == "0%",
        "{}: maxUnavailable must be 0, is {max_unavailable}",
        m.name
    );
}

/// Security: non-root, read-only root, writable state dir and /tmp.
fn security(p: &Pod) {
    let m = p.m;
    let pod = p.pod;
    let container = p.container;
    let env = &p.env;
    let pod_sc = &pod["spec"]["securityContext"];
    let sc = &container["securityContext"];
    assert!(
        sc["runAsNonRoot"] == true || (sc["runAsNonRoot"].is_null() && pod_sc["runAsNonRoot"] == true),
        "{}: runAsNonRoot",
        m.name
    );
    assert_eq!(
        sc["readOnlyRootFilesystem"], true,
        "{}: readOnlyRootFilesystem",
        m.name
    );
    let state_dir = env
        .get("SWITCHYARD_STATE_DIR")
        .unwrap_or_else(|| panic!("{}: SWITCHYARD_STATE_DIR is not set", m.name));
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    for dir in [state_dir.as_str(), "/tmp"] {
        assert!(
            mounts
                .iter()
                .any(|v| v["mountPath"] == dir && v["readOnly"] != true),
            "{}: no writable volume at {dir}",
            m.name
        );
    }
}

/// The admin listener is not loopback: the token comes from a Secret the
/// pod cannot start without.
fn admin_token(p: &Pod) {
    let m = p.m;
    let container = p.container;
    let token = container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == "SWITCHYARD_ADMIN_TOKEN")
        .unwrap_or_else(|| panic!("{}: SWITCHYARD_ADMIN_TOKEN is not set", m.name));
    let secret = &token["valueFrom"]["secretKeyRef"];
    assert!(
        secret["name"].is_string() && secret["key"].is_string(),
        "{}: token from a Secret",
        m.name
    );
    assert_ne!(
        secret["optional"], true,
        "{}: the admin token must not be optional",
        m.name
    );
}

/// Prometheus scrapes /metrics on the admin listener.
fn scrape(p: &Pod) {
    let m = p.m;
    let pod = p.pod;
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true", "{}", m.name);
    assert_eq!(annotations["prometheus.io/path"], "/metrics", "{}", m.name);
    let metrics_port: u16 = annotations["prometheus.io/port"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(p.listener_of(metrics_port), "admin", "{}: metrics port", m.name);
}

/// Selectors: the Deployment's, the Service's and the PDB's pick these pods.
fn selectors(p: &Pod) {
    let m = p.m;
    let deployment = p.deployment;
    let labels = p.labels;
    let container = p.container;
    let config = &p.config;
    assert_selects(
        m,
        "Deployment",
        &deployment["spec"]["selector"]["matchLabels"],
        labels,
    );
    let service = m.one("Service");
    assert_selects(m, "Service", &service["spec"]["selector"], labels);
    let mut exposed = Vec::new();
    for port in service["spec"]["ports"].as_array().expect("Service ports") {
        let target = port.get("targetPort").unwrap_or(&port["port"]);
        let listener = p.listener_of(resolve_port(m, container, target));
        assert!(
            listener == "data" || listener == "grpc",
            "{}: the Service exposes the data listeners (HTTP, gRPC) only, not {listener}",
            m.name
        );
        exposed.push(listener);
    }
    if config.grpc_listen.addr().is_some() {
        assert!(
            exposed.contains(&"grpc"),
            "{}: the gRPC listener is on but not on the Service",
            m.name
        );
    }
    let pdb = m.one("PodDisruptionBudget");
    assert_selects(
        m,
        "PodDisruptionBudget",
        &pdb["spec"]["selector"]["matchLabels"],
        labels,
    );
}

/// The HPA scales this Deployment on CPU, which needs a CPU request, and
/// owns the replica count.
fn autoscaling(p: &Pod) {
    let m = p.m;
    let deployment = p.deployment;
    let name = p.name;
    let container = p.container;
    let hpa = m.one("HorizontalPodAutoscaler");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2", "{}", m.name);
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment", "{}: HPA target kind", m.name);
    assert_eq!(target["name"], name, "{}: HPA target name", m.name);
    assert_eq!(
        target["apiVersion"], "apps/v1",
        "{}: HPA target apiVersion",
        m.name
    );
    assert!(
        hpa["spec"]["metrics"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|x| x["type"] == "Resource" && x["resource"]["name"] == "cpu"),
        "{}: the HPA scales on CPU",
        m.name
    );
    assert!(
        container["resources"]["requests"]["cpu"].is_string(),
        "{}: CPU utilisation needs a CPU request",
        m.name
    );
    assert!(
        int(m, &hpa["spec"]["minReplicas"], "minReplicas") >= 2,
        "{}: with one replica the PDB cannot keep a pod serving",
        m.name
    );
    assert!(
        deployment["spec"]["replicas"].is_null(),
        "{}: the Deployment sets replicas, which would fight the HPA",
        m.name
    );
}
