//! Graceful shutdown of the real binary: SIGTERM → readiness 503 at once,
//! serving continues for --drain-secs, accepted requests finish, exit 0,
//! and the request log (written by a background thread) holds a line for
//! every answered request when the process has exited.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{digits_request, digits_samples, free_port, TestRepo};
use parking_lot::Mutex;

#[derive(Default, Debug)]
struct Tally {
    ok: usize,
    /// Responses other than 200 (must stay 0).
    not_ok: Vec<u16>,
    /// No response at all (refused or closed once the listener stopped), with when.
    no_response: Vec<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_then_exits_zero() {
    const DRAIN_SECS: u64 = 2;
    let repo = TestRepo::bundled(&["digits"]);
    let (port, admin_port) = (free_port(), free_port());
    let log_dir = tempfile::tempdir().unwrap();
    let log_path = log_dir.path().join("stdout.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["serve", "--model-repository"])
        .arg(repo.path())
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin_port}")])
        .args(["--grpc-listen", "off"])
        .args([
            "--drain-secs",
            &DRAIN_SECS.to_string(),
            "--shutdown-timeout-secs",
            "10",
        ])
        .stdout(std::fs::File::create(&log_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the switchyard binary starts");
    let base = format!("http://127.0.0.1:{port}");
    // one connection per request, so "refused after the listener closed" is
    // a clean, separate outcome
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server not ready in 60 s"
        );
        assert!(child.try_wait().unwrap().is_none(), "server exited early");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = digits_request(&[digits_samples()[0].0.clone()]).to_string();
    let tagged = client
        .post(format!("{base}/v2/models/digits/infer"))
        .header("content-type", "application/json")
        .header("x-request-id", "drain-log-check")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(tagged.status(), 200);
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut streams = Vec::new();
    for _ in 0..8 {
        let (client, url, body, tally, stop) = (
            client.clone(),
            format!("{base}/v2/models/digits/infer"),
            body.clone(),
            tally.clone(),
            stop.clone(),
        );
        streams.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) => {
                        let st = r.status().as_u16();
                        let _ = r.bytes().await;
                        let mut t = tally.lock();
                        if st == 200 {
                            t.ok += 1;
                        } else {
                            t.not_ok.push(st);
                        }
                    }
                    Err(_) => {
                        tally.lock().no_response.push(Instant::now());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while tally.lock().ok == 0 {
        assert!(Instant::now() < deadline, "no traffic before SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let served_before = tally.lock().ok;
    assert!(served_before > 0, "no traffic before SIGTERM");

    let term = Instant::now();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // readiness is 503 during the drain while predictions still succeed
    // (the signal reaches the server asynchronously: until it has handled
    // it, /ready may still say 200; once it said 503 it must stay 503, and
    // it must say so within half a second)
    let mut ready_503 = false;
    while term.elapsed() < Duration::from_millis(DRAIN_SECS * 1000 - 500) {
        if let Ok(r) = client.get(format!("{base}/ready")).send().await {
            if r.status() == 503 {
                ready_503 = true;
            } else if ready_503 || term.elapsed() > Duration::from_millis(500) {
                panic!("/ready answered {} during the drain", r.status());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served_during_drain = tally.lock().ok - served_before;

    // the process exits 0 on its own
    let exit = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            term.elapsed() < Duration::from_secs(20),
            "server did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let exited = term.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for s in streams {
        s.await.unwrap();
    }
    let t = tally.lock();
    let early_failures = t
        .no_response
        .iter()
        .filter(|at| at.duration_since(term) < Duration::from_millis(DRAIN_SECS * 1000 - 100))
        .count();
    eprintln!(
        "drain: {} ok ({} during the drain), {} non-200, {} without response (refused after close), exit {exit:?} after {exited:?}",
        t.ok,
        served_during_drain,
        t.not_ok.len(),
        t.no_response.len()
    );
    assert!(exit.success(), "exit status {exit:?}");
    assert!(ready_503, "/ready never answered 503 during the drain");
    assert!(
        t.not_ok.is_empty(),
        "accepted requests that did not succeed: {:?}",
        t.not_ok
    );
    assert!(served_during_drain > 0, "nothing was served during the drain");
    assert_eq!(early_failures, 0, "requests failed during the drain");
    assert!(
        exited >= Duration::from_secs(DRAIN_SECS),
        "stopped before the drain ended"
    );

    // every answered request was logged, the last ones flushed at exit;
    // stdout is a file, so the lines carry no terminal colour codes
    let log = std::fs::read_to_string(&log_path).unwrap();
    let predict_lines: Vec<&str> = log.lines().filter(|l| l.contains(" predict ")).collect();
    assert!(
        predict_lines.len() > t.ok,
        "{} predict log lines for {} answered requests (+1 tagged)",
        predict_lines.len(),
        t.ok
    );
    let line = predict_lines
        .iter()
        .find(|l| l.contains("request_id=drain-log-check"))
        .unwrap_or_else(|| panic!("no log line for the tagged request in:\n{log}"));
    for field in [
        "model=digits",
        "version=1",
        "route=",
        "status=200",
        "latency_ms=",
        "method=POST",
    ] {
        assert!(line.contains(field), "'{field}' missing from {line}");
    }
    assert!(!log.contains('\u{1b}'), "colour codes in a log written to a file");
}
