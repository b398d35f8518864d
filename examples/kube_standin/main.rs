//! A test-only stand-in for the Kubernetes API server: the central noun is
//! the **stand-in**, one process that stores namespaced objects
//! (`ModelRollout` custom resources with a `/status` subresource, Leases,
//! Events) and serves them over the real REST paths with the semantics a
//! client relies on: one global resourceVersion, compare-and-swap writes
//! (409 Conflict), generation, merge patch, and watches replayed from a
//! bounded history (410 Expired once it is gone). Control endpoints under
//! `/_standin/` inject faults (an outage, a compaction) and show the log of
//! requests served, in RBAC terms.
//!
//! `kube_standin --listen 127.0.0.1:0 [--namespace default]... [--history N]
//! [--bookmark-ms MS] [--exit-with-stdin]` prints one line,
//! `{"url":"http://127.0.0.1:PORT"}`, and serves until killed.
//!
//! Not emulated: authentication and authorization, server-side apply,
//! JSON patch and strategic merge patch, finalizers (a delete is immediate),
//! pagination (a list is one page, which is legal), dry runs, managed
//! fields, schema validation, and the conversion between core v1 and
//! events.k8s.io/v1 Events (each has its own storage here).

mod api;
mod kinds;
mod select;
mod status;
mod store;
mod watch;

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use clap::Parser;
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::store::Store;

/// Command line.
#[derive(Parser, Debug)]
#[command(about = "A test-only stand-in for the Kubernetes API server")]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// A namespace that exists (repeatable); creates elsewhere get 404.
    #[arg(long = "namespace", default_values_t = vec!["default".to_string()])]
    namespaces: Vec<String>,
    /// How many changes the watch history holds.
    #[arg(long, default_value_t = 1000)]
    history: usize,
    /// How often a watch that allows bookmarks gets one, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    bookmark_ms: u64,
    /// Exit when standard input reaches end of file (a test harness holds
    /// the pipe, so the stand-in dies with it).
    #[arg(long)]
    exit_with_stdin: bool,
}

/// Shared state of the stand-in.
pub(crate) struct App {
    pub(crate) store: Store,
    /// While `Some` and in the future, every Kubernetes request gets 503.
    down_until: Mutex<Option<Instant>>,
    /// Bumped at the start of an outage; every open watch drops on it.
    pub(crate) down_epoch: tokio::sync::watch::Sender<u64>,
    /// Every Kubernetes request served, in RBAC terms.
    pub(crate) log: Mutex<Vec<Value>>,
    pub(crate) bookmark_every: Duration,
    /// When the stand-in started; log entries carry milliseconds since.
    pub(crate) started: Instant,
}

impl App {
    /// Whether an injected outage is on now.
    pub(crate) fn is_down(&self) -> bool {
        self.down_until.lock().is_some_and(|t| Instant::now() < t)
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Arc::new(App {
        store: Store::new(args.history, args.namespaces.clone()),
        down_until: Mutex::new(None),
        down_epoch: tokio::sync::watch::Sender::new(0),
        log: Mutex::new(Vec::new()),
        bookmark_every: Duration::from_millis(args.bookmark_ms.max(10)),
        started: Instant::now(),
    });
    let router = Router::new()
        .route("/_standin/healthz", get(|| async { Json(json!({ "ok": true })) }))
        .route("/_standin/down", post(down))
        .route("/_standin/compact", post(compact))
        .route("/_standin/requests", get(requests))
        .fallback(api::handle)
        .with_state(app);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", json!({ "url": format!("http://{addr}") }))?;
        out.flush()?;
    }
    if args.exit_with_stdin {
        std::thread::spawn(|| {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut std::io::sink());
            std::process::exit(0);
        });
    }
    axum::serve(listener, router).await
}

/// `POST /_standin/down {"secs": S}`: an outage of S seconds starting now.
async fn down(State(app): State<Arc<App>>, Json(body): Json<Value>) -> Json<Value> {
    let secs = body["secs"].as_f64().unwrap_or(10.0).max(0.0);
    *app.down_until.lock() = Some(Instant::now() + Duration::from_secs_f64(secs));
    app.down_epoch.send_modify(|e| *e += 1);
    Json(json!({ "down": true, "secs": secs }))
}

/// `POST /_standin/compact`: forget the change history.
async fn compact(State(app): State<Arc<App>>) -> Json<Value> {
    let rv = app.store.compact();
    Json(json!({ "compactedTo": rv.to_string() }))
}

/// `GET /_standin/requests`: the request log.
async fn requests(State(app): State<Arc<App>>) -> Json<Value> {
    Json(Value::Array(app.log.lock().clone()))
}
