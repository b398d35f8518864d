//! Rollouts across a crash and through the CLI: the real binary as a child
//! process on 127.0.0.1.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, free_port, TestRepo};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const TOKEN: &str = "t0ken";

struct Server {
    child: Child,
    data: String,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(repo: &Path, state: &Path) -> Server {
    let (port, admin_port) = (free_port(), free_port());
    let child = Command::new(BIN)
        .args(["serve", "--model-repository"])
        .arg(repo)
        .arg("--state-dir")
        .arg(state)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--grpc-listen", "off"])
        .env("SWITCHYARD_ADMIN_TOKEN", TOKEN)
        .current_dir(common::root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server {
        child,
        data: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    }
}

async fn wait_ready(client: &reqwest::Client, c: &Server) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{}/ready", c.data)).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(Instant::now() < deadline, "server not ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn admin(
    client: &reqwest::Client,
    c: &Server,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut req = client
        .request(method, format!("{}{}", c.admin, path))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

fn repo() -> TestRepo {
    let repo = TestRepo::bundled(&["digits"]);
    repo.config("digits", "[versions]\npolicy = \"all\"\n[labels]\nstable = 1\n");
    repo
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_kill_9_and_then_completes() {
    let repo = repo();
    let state = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let c = spawn(repo.path(), state.path());
    wait_ready(&client, &c).await;
    admin(
        &client,
        &c,
        reqwest::Method::POST,
        "/admin/v1/models/digits/rollouts",
        Some(json!({"strategy": "canary", "candidate": 2,
                    "steps": [{"weight": "30%", "bake": "3s"}, {"weight": "100%"}],
                    "analysis": {"interval": "1s", "min_requests": 5, "max_p95_ratio": 5.0}})),
    )
    .await;
    // wait until it is progressing at step 0 (validation done)
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let r = admin(
            &client,
            &c,
            reqwest::Method::GET,
            "/admin/v1/models/digits/rollout",
            None,
        )
        .await;
        if r["phase"] == "progressing" {
            break r;
        }
        assert!(Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let policy_before = admin(
        &client,
        &c,
        reqwest::Method::GET,
        "/admin/v1/models/digits/policy",
        None,
    )
    .await;
    drop(c); // SIGKILL: no chance to flush anything

    let c = spawn(repo.path(), state.path());
    wait_ready(&client, &c).await;
    // the first answer after restart already has the rollout's weights
    let after = admin(
        &client,
        &c,
        reqwest::Method::GET,
        "/admin/v1/models/digits/rollout",
        None,
    )
    .await;
    assert_eq!(after["phase"], before["phase"]);
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["weight"], "30%");
    assert_eq!(
        after["step_started_at"], before["step_started_at"],
        "timers continue from the stored start"
    );
    let policy_after = admin(
        &client,
        &c,
        reqwest::Method::GET,
        "/admin/v1/models/digits/policy",
        None,
    )
    .await;
    assert_eq!(
        policy_after["policy"], policy_before["policy"],
        "identical weights and salt"
    );

    // traffic lets it finish
    let row = digits_samples()[0].0.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut n = 0;
    loop {
        let _ = client
            .post(format!("{}/v2/models/digits/infer", c.data))
            .header("x-user-id", format!("u{}", n % 100))
            .json(&digits_request(std::slice::from_ref(&row)))
            .send()
            .await
            .unwrap();
        n += 1;
        if n % 20 == 0 {
            let r = admin(
                &client,
                &c,
                reqwest::Method::GET,
                "/admin/v1/models/digits/rollout",
                None,
            )
            .await;
            if r["phase"] == "promoted" {
                break;
            }
            assert_ne!(r["phase"], "aborted", "{r}");
            assert!(Instant::now() < deadline, "{r}");
        }
    }
    let events = admin(
        &client,
        &c,
        reqwest::Method::GET,
        "/admin/v1/models/digits/events",
        None,
    )
    .await;
    assert!(events["events"].as_array().unwrap().len() >= 3);
}

/// The phase a `rollout` command printed (its "phase" line's first word).
fn phase(out: &str) -> &str {
    out.lines()
        .find_map(|l| l.trim_start().strip_prefix("phase"))
        .and_then(|rest| {
            rest.split(|c: char| c == ',' || c.is_whitespace())
                .find(|w| !w.is_empty())
        })
        .unwrap_or("")
}

fn cli(c: &Server, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg("rollout")
        .args(["--admin-url", &c.admin, "--token", token])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_a_rollout() {
    let repo = repo();
    let state = tempfile::tempdir().unwrap();
    let client = reqwest::Client::new();
    let c = spawn(repo.path(), state.path());
    wait_ready(&client, &c).await;
    let spec = state.path().join("canary.toml");
    std::fs::write(
        &spec,
        "strategy = \"canary\"\ncandidate = 2\nsteps = [{ weight = \"10%\", bake = \"1h\" }, { weight = \"50%\", bake = \"1h\" }, { weight = \"100%\" }]\n[analysis]\ninterval = \"1s\"\nmin_requests = 1\n",
    )
    .unwrap();

    // wrong token: a clear error and a non-zero exit
    let (ok, _, err) = cli(&c, "wrong", &["status", "digits"]);
    assert!(!ok);
    assert!(err.contains("401") && err.contains("token"), "{err}");

    let (ok, out, err) = cli(&c, TOKEN, &["start", "digits", "--spec", spec.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(out.contains("canary, version 1 → 2"), "{out}");
    // wait for validation
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = cli(&c, TOKEN, &["status", "digits"]);
        if phase(&out) == "progressing" {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, _) = cli(&c, TOKEN, &["pause", "digits"]);
    assert!(ok && phase(&out) == "paused", "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["resume", "digits"]);
    assert!(ok && phase(&out) == "progressing", "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["promote", "digits"]);
    assert!(ok && out.contains("candidate at 50%"), "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["--json", "status", "digits"]);
    assert!(ok);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["weight"], "50%");
    let (ok, out, _) = cli(&c, TOKEN, &["abort", "digits"]);
    assert!(ok && phase(&out) == "aborted", "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["retry", "digits"]);
    assert!(ok && phase(&out) == "validating", "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, out, _) = cli(&c, TOKEN, &["status", "digits"]);
        if phase(&out) == "progressing" {
            break;
        }
        assert!(Instant::now() < deadline, "{out}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ok, out, _) = cli(&c, TOKEN, &["promote", "digits", "--full"]);
    assert!(ok && phase(&out) == "promoted", "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["rollback", "digits"]);
    assert!(ok && out.contains("all traffic on version 1"), "{out}");
    let (ok, out, _) = cli(&c, TOKEN, &["events", "digits"]);
    assert!(ok);
    for needle in [
        "started",
        "validation passed",
        "paused",
        "resumed",
        "aborted by an admin",
        "retried",
        "promoted in full",
    ] {
        assert!(out.contains(needle), "events lack '{needle}':\n{out}");
    }
    // status of the whole server
    let out = Command::new(BIN)
        .args(["status", "--admin-url", &c.admin, "--token", TOKEN])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("digits"));
    // an error from the server is an error exit
    let (ok, _, err) = cli(&c, TOKEN, &["pause", "nope"]);
    assert!(!ok && err.contains("404"), "{err}");
}
