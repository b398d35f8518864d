//! "Trust no caller", memory: client strings are capped and the stores
//! keyed by them bounded in bytes (case 5 of issue 12); a V1 body costs at
//! most about four times its size (compact integer rows, the worst case:
//! their FP32 tensors are larger than their text, and the answer is about
//! the body's size again), and the bodies in flight fit a global budget
//! (case 9).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, free_port, TestRepo, TestServer};
use serde_json::json;
use switchyard::serving::limits::MAX_CLIENT_STRING;

/// Case 5: ids and user keys over 256 bytes are refused (400, naming the
/// field), never stored; at the cap they are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case5_client_strings_are_capped() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start(repo.path()).await;
    let body = digits_request(&[digits_samples()[0].0.clone()]);
    let long = "x".repeat(MAX_CLIENT_STRING + 1);
    let at_cap = "y".repeat(MAX_CLIENT_STRING);
    let send = |headers: Vec<(&'static str, String)>, body: serde_json::Value| {
        let s = &s;
        async move {
            let mut req = s.client.post(s.url("/v2/models/digits/infer")).json(&body);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            let resp = req.send().await.unwrap();
            let st = resp.status().as_u16();
            let echoed = resp.headers().get("x-request-id").map(|v| v.len());
            (
                st,
                echoed,
                resp.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let (st, echoed, answer) = send(vec![("x-request-id", long.clone())], body.clone()).await;
    assert_eq!(st, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("x-request-id"),
        "{answer}"
    );
    assert!(echoed.is_none_or(|n| n <= MAX_CLIENT_STRING), "not echoed back");
    let (st, _, answer) = send(vec![("x-user-id", long.clone())], body.clone()).await;
    assert_eq!(st, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("x-user-id"),
        "{answer}"
    );
    let mut with_id = body.clone();
    with_id["id"] = json!(long);
    let (st, _, answer) = send(vec![], with_id).await;
    assert_eq!(st, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("id is"), "{answer}");
    let mut with_user = body.clone();
    with_user["parameters"] = json!({"user_id": long});
    let (st, _, answer) = send(vec![], with_user).await;
    assert_eq!(st, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("user_id"), "{answer}");
    // at the cap: served and remembered
    let mut ok = body.clone();
    ok["id"] = json!(at_cap);
    let (st, _, answer) = send(
        vec![("x-request-id", at_cap.clone()), ("x-user-id", at_cap.clone())],
        ok,
    )
    .await;
    assert_eq!(st, 200, "{answer}");
    assert_eq!(answer["id"], json!(at_cap));
    // megabyte ids (the attack held 4 MiB each, kept) are refused; the
    // store of recent ids stays small
    let state = s.state();
    let (_, before) = state.recent.size();
    for i in 0..20 {
        let mut huge = body.clone();
        huge["id"] = json!(format!("{i}{}", "z".repeat(1 << 20)));
        let (st, _, _) = send(vec![], huge).await;
        assert_eq!(st, 400);
    }
    let (_, after) = state.recent.size();
    assert!(
        after - before < 4096,
        "recent ids grew by {} bytes",
        after - before
    );
    assert!(after <= switchyard::serving::recent::REMEMBERED_BYTES);
    s.stop().await;
}

/// Peak and current resident memory of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// The server binary on `repo` (not started yet) and its data address.
fn server_command(repo: &std::path::Path) -> (Command, String) {
    let (port, admin) = (free_port(), free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command
        .args(["serve", "--model-repository"])
        .arg(repo)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .args(["--grpc-listen", "off"])
        .args(["--drain-secs", "0", "--log-format", "json"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    (command, format!("http://127.0.0.1:{port}"))
}

/// A server process, killed and reaped when dropped (also when a test
/// fails half-way).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until the server at `base` is ready.
async fn wait_ready(child: &mut Child, base: &str) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                return;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the server exited");
        assert!(Instant::now() < deadline, "server not ready in 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A V1 row-format body of about `bytes` bytes of digits pixels, compact
/// (whole numbers, no spaces: the most elements per byte).
fn v1_body(bytes: usize) -> String {
    let row: Vec<String> = digits_samples()[0]
        .0
        .iter()
        .map(|v| format!("{}", *v as i64))
        .collect();
    let row = format!("[{}]", row.join(","));
    let n = bytes / (row.len() + 1);
    format!("{{\"instances\":[{}]}}", vec![row; n].join(","))
}

/// Sends `n` copies of `body` at once; their statuses.
async fn parallel(base: &str, path: &str, body: &str, n: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (client, url, body) = (client.clone(), format!("{base}{path}"), body.to_string());
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                let st = resp.status().as_u16();
                let retry = resp.headers().contains_key("retry-after");
                let text = resp.text().await.unwrap_or_default();
                if st != 200 {
                    eprintln!("{st}: {text}");
                }
                assert!(st != 503 || retry, "a shed request says when to retry");
                st
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses
}

/// Case 9: eight parallel 7 MiB V1 requests raise the server's peak memory
/// by at most about four times the bodies (the attack measured 508 MiB, nine
/// times; measured here: 3.9 times).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case9_v1_bodies_cost_at_most_about_four_times_their_size() {
    let repo = TestRepo::bundled(&["digits"]);
    let (mut command, base) = server_command(repo.path());
    let mut server = Reaped(command.spawn().expect("the switchyard binary starts"));
    wait_ready(&mut server.0, &base).await;
    let body = v1_body(7 << 20);
    // one small request first: every lazy allocation is made before measuring
    let warm = v1_body(64 << 10);
    assert_eq!(
        parallel(&base, "/v1/models/digits:predict", &warm, 2).await,
        vec![200, 200]
    );
    let (_, rss_before) = memory_kib(server.0.id());
    let statuses = parallel(&base, "/v1/models/digits:predict", &body, 8).await;
    let (peak, rss_after) = memory_kib(server.0.id());
    drop(server);
    assert_eq!(statuses, vec![200; 8]);
    let bodies_kib = 8 * body.len() as u64 / 1024;
    let grew = peak.saturating_sub(rss_before);
    eprintln!(
        "8 x {} KiB V1: RSS {rss_before} KiB before, peak {peak} KiB (+{grew} KiB, {:.2}x the bodies), {rss_after} KiB after",
        body.len() / 1024,
        grew as f64 / bodies_kib as f64
    );
    assert!(
        grew <= 9 * bodies_kib / 2 + (16 << 10),
        "peak grew {grew} KiB for {bodies_kib} KiB of bodies"
    );
}

/// Case 9: beyond the body budget, requests are shed with 503 and
/// Retry-After; the others are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case9_bodies_in_flight_fit_the_budget() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| c.body_bytes_in_flight = Some(16 << 20)).await;
    let body = v1_body(7 << 20);
    let statuses = parallel(&s.base, "/v1/models/digits:predict", &body, 6).await;
    assert!(statuses.iter().all(|&st| st == 200 || st == 503), "{statuses:?}");
    assert!(
        statuses.contains(&503),
        "six 7 MiB bodies do not fit 16 MiB: {statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    let shed = s
        .metric("switchyard_load_shed_total{reason=\"body_bytes\"}")
        .await;
    assert!(shed >= 1.0, "{shed}");
    // the budget is given back: one at a time, all are served
    for _ in 0..2 {
        assert_eq!(
            parallel(&s.base, "/v1/models/digits:predict", &body, 1).await,
            vec![200]
        );
    }
    assert_eq!(s.state().body_budget.in_use(), 0);
    s.stop().await;
}
