//! The command line as operators use it: flags after the subcommand, text
//! and machine output, a closed pipe, unknown models, spec files in any
//! format with errors that name the field and line.

mod common;

use std::process::{Command, Output};

use common::{TestRepo, TestServer};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_plainly() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let admin = s.admin.as_str();

    // flags after the subcommand; a table for people
    let o = run(&["status", "--admin-url", admin]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.starts_with("MODEL"), "{out}");
    assert!(out.contains("digits") && out.contains("stable 1"), "{out}");

    // JSON and YAML for scripts
    let o = run(&["status", "digits", "--admin-url", admin, "-o", "json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["models"][0]["name"], "digits");
    let o = run(&["status", "--admin-url", admin, "--output", "yaml"]);
    let (out, _) = text(&o);
    assert!(out.contains("name: digits"), "{out}");

    // an unknown model is an error exit with a clear message, everywhere
    for args in [
        &["rollout", "events", "digit"][..],
        &["rollout", "status", "digit"][..],
        &["rollout", "pause", "digit"][..],
        &["status", "digit"][..],
    ] {
        let o = Command::new(BIN)
            .args(args)
            .args(["--admin-url", admin])
            .output()
            .unwrap();
        let (_, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(err.contains("unknown model 'digit'"), "{args:?}: {err}");
    }
    // a real model without a rollout says so, and exits non-zero
    let o = run(&["rollout", "status", "digits", "--admin-url", admin]);
    let (_, err) = text(&o);
    assert!(!o.status.success() && err.contains("has no rollout yet"), "{err}");
    // and its events are an empty log, not an error
    let o = run(&["rollout", "events", "digits", "--admin-url", admin]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(out.contains("no rollout events yet"), "{out}");

    // a reader that goes away (`| head -1`) is not a crash
    let o = Command::new("bash")
        .args([
            "-c",
            &format!("set -o pipefail; {BIN} status --admin-url {admin} -o yaml | true"),
        ])
        .output()
        .unwrap();
    let (_, err) = text(&o);
    assert!(o.status.success(), "exit {:?}: {err}", o.status.code());
    assert!(!err.contains("panicked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_files_are_read_by_content_and_errors_name_the_line() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let dir = tempfile::tempdir().unwrap();
    // TOML in a file called .yaml: read as TOML all the same
    let spec = dir.path().join("canary.yaml");
    std::fs::write(
        &spec,
        "strategy = \"canary\"\ncandidate = 2\nstpes = [{ weight = \"10%\" }]\n",
    )
    .unwrap();
    let o = run(&[
        "rollout",
        "start",
        "digits",
        "--spec",
        spec.to_str().unwrap(),
        "--admin-url",
        &s.admin,
    ]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("line 3") && err.contains("unknown field `stpes`"),
        "{err}"
    );
    // weight 10 means 10 %, as Argo users write it
    std::fs::write(
        &spec,
        "strategy = \"canary\"\ncandidate = 2\nsteps = [{ weight = 10, bake = \"1h\" }]\n",
    )
    .unwrap();
    let o = run(&[
        "rollout",
        "start",
        "digits",
        "--spec",
        spec.to_str().unwrap(),
        "--admin-url",
        &s.admin,
        "-o",
        "json",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["steps"][0]["weight"], "10%", "{v}");
    assert_eq!(v["phase"], "validating");
}
