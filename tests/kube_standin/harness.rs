//! The harness of `tests/kube_standin.rs`: the central noun is the
//! **stand-in process** (`StandIn`), started from the `kube_standin`
//! example (built on demand), with its control endpoints, kube clients for
//! it, and waiting helpers that poll streams against deadlines.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::utils::Backoff;
use kube::Client;
use serde_json::{json, Value};

/// One stand-in process; killed on drop (and it exits by itself when the
/// test process dies, since it watches its standard input).
pub(crate) struct StandIn {
    child: Child,
    _stdin: ChildStdin,
    pub(crate) url: String,
}

/// `target/<profile>/examples/kube_standin`, next to this test's `deps/`.
pub(crate) fn standin_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir
        .join("examples")
        .join(format!("kube_standin{}", std::env::consts::EXE_SUFFIX))
}

/// Builds the example when it is missing or older than its sources (a
/// filtered `cargo test --test kube_standin` does not build examples).
pub(crate) fn ensure_built() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let exe = standin_exe();
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/kube_standin");
        let built = std::fs::metadata(&exe).and_then(|m| m.modified()).ok();
        let newest_src = std::fs::read_dir(&src)
            .expect("examples/kube_standin")
            .filter_map(|e| e.ok()?.metadata().ok()?.modified().ok())
            .max();
        if built.is_some() && built >= newest_src {
            return;
        }
        let profile = exe.parent().and_then(|d| d.parent()).and_then(|d| d.file_name());
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--example", "kube_standin"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        // The variables cargo sets for a test run would dirty fingerprints
        // (ring's build script tracks CARGO_MANIFEST_DIR) and rebuild the
        // dependency tree twice: drop them.
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            let set_for_tests = [
                "CARGO_MANIFEST_",
                "CARGO_PKG_",
                "CARGO_BIN_EXE_",
                "CARGO_CRATE_",
                "CARGO_PRIMARY_",
            ]
            .iter()
            .any(|p| k.starts_with(p));
            if set_for_tests || k == "CARGO_TARGET_TMPDIR" || k == "OUT_DIR" {
                cmd.env_remove(k);
            }
        }
        if profile.is_some_and(|p| p == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build --example kube_standin");
        assert!(status.success(), "cargo build --example kube_standin failed");
    });
}

impl StandIn {
    pub(crate) fn start() -> StandIn {
        StandIn::start_with(&[])
    }

    /// Starts the stand-in with extra arguments and reads its URL line.
    pub(crate) fn start_with(extra: &[&str]) -> StandIn {
        ensure_built();
        let mut child = Command::new(standin_exe())
            .args(["--listen", "127.0.0.1:0", "--exit-with-stdin"])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn kube_standin");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("read the URL line");
        let v: Value = serde_json::from_str(&line).expect("the first line is JSON");
        let url = v["url"].as_str().expect("url").to_string();
        StandIn {
            child,
            _stdin: stdin,
            url,
        }
    }

    /// A kube client for the stand-in; `retry` keeps kube's default retry
    /// of 429/503/504, which the fleet code turns off.
    pub(crate) fn client(&self, retry: bool) -> Client {
        let mut config = kube::Config::new(self.url.parse().expect("stand-in URL"));
        config.default_retry = retry;
        Client::try_from(config).expect("kube client")
    }

    pub(crate) async fn control(&self, path: &str, body: Value) -> Value {
        let resp = reqwest::Client::new()
            .post(format!("{}/_standin/{path}", self.url))
            .json(&body)
            .send()
            .await
            .expect("control request");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("control JSON")
    }

    /// Starts an outage of `secs` seconds.
    pub(crate) async fn down(&self, secs: f64) {
        self.control("down", json!({ "secs": secs })).await;
    }

    /// Forgets the watch history.
    pub(crate) async fn compact(&self) {
        self.control("compact", json!({})).await;
    }

    /// The request log.
    pub(crate) async fn requests(&self) -> Vec<Value> {
        let url = format!("{}/_standin/requests", self.url);
        let v: Value = reqwest::get(url)
            .await
            .expect("requests")
            .json()
            .await
            .expect("JSON");
        v.as_array().expect("array").clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Exponential watcher backoff from 100 ms, capped at 1 s (kube's
/// `default_backoff()` goes from 800 ms to 30 s).
pub(crate) struct CappedBackoff {
    next: Duration,
}

impl CappedBackoff {
    const MIN: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(1);

    pub(crate) fn new() -> CappedBackoff {
        CappedBackoff { next: Self::MIN }
    }
}

impl Iterator for CappedBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        Some(d)
    }
}

impl Backoff for CappedBackoff {
    fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Polls `stream` until `pred` accepts an item, failing after `within`.
/// Returns the items seen on the way, the accepted one last.
pub(crate) async fn until<S, T>(
    stream: &mut S,
    within: Duration,
    what: &str,
    mut pred: impl FnMut(&T) -> bool,
) -> Vec<T>
where
    S: Stream<Item = T> + Unpin,
    T: std::fmt::Debug,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(item)) => {
                let done = pred(&item);
                seen.push(item);
                if done {
                    return seen;
                }
            }
            Ok(None) => panic!("stream ended while waiting for {what}; saw {seen:?}"),
            Err(_) => panic!("no {what} within {within:?}; saw {seen:?}"),
        }
    }
}

/// Polls a watcher in its own task, so it runs (and meets errors) while the
/// test waits on something else; each item comes with the time it came.
pub(crate) fn spawn_watch<T: Send + 'static>(
    mut w: impl Stream<Item = T> + Unpin + Send + 'static,
) -> futures::channel::mpsc::UnboundedReceiver<(Instant, T)> {
    let (tx, rx) = futures::channel::mpsc::unbounded();
    tokio::spawn(async move {
        while let Some(item) = w.next().await {
            if tx.unbounded_send((Instant::now(), item)).is_err() {
                break;
            }
        }
    });
    rx
}

/// A plain HTTP request to the stand-in: (status, JSON body).
pub(crate) async fn http(
    s: &StandIn,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", s.url));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let code = resp.status().as_u16();
    (code, resp.json().await.unwrap_or(Value::Null))
}

/// Reads a raw watch response until it ends or `within` passes, returning
/// the event lines and whether the server ended it.
pub(crate) async fn watch_lines(s: &StandIn, path_and_query: &str, within: Duration) -> (Vec<Value>, bool) {
    let mut resp = reqwest::get(format!("{}{path_and_query}", s.url))
        .await
        .expect("watch");
    assert_eq!(resp.status().as_u16(), 200);
    let (mut buf, mut lines) = (Vec::new(), Vec::new());
    let deadline = tokio::time::Instant::now() + within;
    let ended = loop {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Ok(None)) => break true,
            Ok(Err(e)) => panic!("watch body: {e}"),
            Err(_) => break false,
        }
    };
    for l in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        lines.push(serde_json::from_slice(l).expect("one JSON event per line"));
    }
    (lines, ended)
}
