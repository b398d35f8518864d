//! Fleet mode's manifests against the code: the CustomResourceDefinition in
//! `deploy/k8s/base/` is exactly what the Rust types generate (so the two
//! cannot drift), the example `ModelRollout` reads as a valid rollout, and
//! the base kustomization runs the pods in fleet mode under the service
//! account its RoleBinding grants.

mod common;

use serde::Deserialize;
use serde_json::{json, Value};
use switchyard::fleet::convert::rollout_spec;
use switchyard::fleet::{crd_yaml, ModelRollout};
use switchyard::rollout::Strategy;

fn docs(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn the_committed_crd_is_what_the_code_generates() {
    let path = common::root().join("deploy/k8s/base/modelrollout-crd.yaml");
    let committed = std::fs::read_to_string(&path).unwrap();
    assert!(
        committed == crd_yaml(),
        "{} differs from the code: regenerate it with `cargo run -- crd > {}`",
        path.display(),
        path.display()
    );
    let crd = &docs(&committed)[0];
    assert_eq!(crd["metadata"]["name"], "modelrollouts.switchyard.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<String> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_uppercase())
        .collect();
    assert_eq!(columns, ["MODEL", "STRATEGY", "PHASE", "STEP", "WEIGHT", "AGE"]);
    let status = &version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    for field in [
        "observedGeneration",
        "phase",
        "step",
        "stepStartedAt",
        "revisionConvergedAt",
        "inconclusiveSince",
        "history",
    ] {
        assert!(
            status.get(field).is_some(),
            "status.{field} is missing from the schema"
        );
    }
    assert!(status["policy"]["properties"].get("revision").is_some());
}

#[test]
fn the_example_modelrollout_is_a_valid_canary() {
    let text =
        std::fs::read_to_string(common::root().join("deploy/k8s/examples/modelrollout-digits.yaml")).unwrap();
    let o: ModelRollout = serde_json::from_value(docs(&text).remove(0)).unwrap();
    assert_eq!(o.spec.model, "digits");
    let spec = rollout_spec(&o.spec.rollout).unwrap();
    assert_eq!(spec.candidate, 2);
    let Strategy::Canary { steps } = &spec.strategy else {
        panic!("{spec:?}")
    };
    let weights: Vec<u32> = steps.iter().map(|s| s.weight.bp()).collect();
    assert_eq!(weights, [1000, 5000, 10_000]);
    assert_eq!(spec.analysis.min_requests, 100);
}

#[test]
fn the_base_runs_fleet_mode_under_the_bound_service_account() {
    let out = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(common::root().join("deploy/k8s/base"))
        .output()
        .expect("kubectl is installed (kubectl kustomize renders deploy/k8s)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all = docs(&String::from_utf8(out.stdout).unwrap());
    let one = |kind: &str| {
        all.iter()
            .find(|r| r["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind}"))
    };
    let pod = &one("Deployment")["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"].as_str().unwrap();
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(one("ServiceAccount")["metadata"]["name"], account);
    let binding = one("RoleBinding");
    assert_eq!(
        binding["subjects"][0],
        json!({"kind": "ServiceAccount", "name": account})
    );
    assert_eq!(binding["roleRef"]["name"], one("Role")["metadata"]["name"]);
    let config = all
        .iter()
        .find(|r| {
            r["kind"] == "ConfigMap"
                && r["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .starts_with("switchyard-config")
        })
        .unwrap();
    assert_eq!(config["data"]["SWITCHYARD_FLEET"], "kubernetes");
    assert!(config["data"]["SWITCHYARD_PROMETHEUS_URL"]
        .as_str()
        .unwrap()
        .starts_with("http"));
    let env = pod["containers"][0]["env"].as_array().unwrap();
    let field = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("no {name}"))["valueFrom"]["fieldRef"]["fieldPath"]
            .clone()
    };
    assert_eq!(field("SWITCHYARD_POD_NAME"), "metadata.name");
    assert_eq!(field("SWITCHYARD_NAMESPACE"), "metadata.namespace");
}
