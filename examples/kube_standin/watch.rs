//! The watch stream: one chunked HTTP response of newline-delimited JSON
//! watch events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR`), first
//! replayed from the store's history, then live, until `timeoutSeconds`, the
//! client going away, or an injected outage (which drops it at once).

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, watch};

use crate::kinds::KindInfo;
use crate::select::Selector;
use crate::status::ApiError;
use crate::store::{Change, ChangeType, Store, WatchFrom};

/// What the client asked of one watch.
pub(crate) struct WatchRequest {
    pub(crate) kind: &'static KindInfo,
    /// `None` for a watch across all namespaces.
    pub(crate) namespace: Option<String>,
    pub(crate) from: WatchFrom,
    pub(crate) selector: Selector,
    pub(crate) bookmarks: bool,
    /// `sendInitialEvents=true`: end the initial ADDED events with a
    /// BOOKMARK annotated `k8s.io/initial-events-end`.
    pub(crate) initial_events_end: bool,
    pub(crate) timeout: Duration,
    pub(crate) bookmark_every: Duration,
}

type Chunk = Result<Bytes, std::io::Error>;

/// Starts the watch and answers with its stream. A resourceVersion older
/// than the history held gets what the real server sends: 200 with one
/// `ERROR` event carrying a 410 `Expired` Status, then the end.
pub(crate) fn serve(store: &Store, down: watch::Receiver<u64>, req: WatchRequest) -> Response {
    let (tx, rx) = mpsc::channel::<Chunk>(256);
    match store.watch(req.kind, req.from) {
        Ok(start) => {
            tokio::spawn(pump(tx, req, start.backlog, start.live, start.rv, down));
        }
        Err(expired) => {
            let line = line(&json!({ "type": "ERROR", "object": expired.to_json() }));
            // The channel has room for one line; the receiver is below.
            let _ = tx.try_send(Ok(line));
        }
    }
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(body))
        .expect("static response parts")
}

/// A parse error in the watch parameters, before any stream starts.
pub(crate) fn bad_resource_version(rv: &str) -> ApiError {
    ApiError::bad_request(format!(
        "resourceVersion: Invalid value: {rv:?}: must be a decimal resourceVersion"
    ))
}

fn line(v: &Value) -> Bytes {
    let mut b = serde_json::to_vec(v).expect("JSON values serialize");
    b.push(b'\n');
    Bytes::from(b)
}

/// The event a change makes for this watch, if any: namespace and selector
/// applied, and an object moving into or out of the selection turned into
/// ADDED or DELETED.
fn event_for(req: &WatchRequest, c: &Change) -> Option<Bytes> {
    if req.namespace.as_ref().is_some_and(|ns| *ns != c.namespace) {
        return None;
    }
    let now = req.selector.matches(&c.object);
    let was = c.prev.as_ref().is_some_and(|p| req.selector.matches(p));
    let kind = match c.change {
        ChangeType::Added if now => ChangeType::Added,
        ChangeType::Deleted if was || now => ChangeType::Deleted,
        ChangeType::Modified => match (was, now) {
            (true, true) => ChangeType::Modified,
            (false, true) => ChangeType::Added,
            (true, false) => ChangeType::Deleted,
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(line(&json!({ "type": kind.as_str(), "object": c.object })))
}

/// A BOOKMARK carrying only the resourceVersion the watch has caught up to.
fn bookmark(req: &WatchRequest, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({ "resourceVersion": rv.to_string(), "creationTimestamp": null });
    if initial_end {
        meta["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    let object = json!({ "kind": req.kind.kind, "apiVersion": req.kind.api_version(), "metadata": meta });
    line(&json!({ "type": "BOOKMARK", "object": object }))
}

/// Feeds one watch: the backlog, then live changes and periodic bookmarks.
/// Returning drops the sender, which ends the response cleanly; an outage
/// instead sends an error, which makes the server abort the connection.
async fn pump(
    tx: mpsc::Sender<Chunk>,
    req: WatchRequest,
    backlog: Vec<Arc<Change>>,
    mut live: broadcast::Receiver<Arc<Change>>,
    start_rv: u64,
    mut down: watch::Receiver<u64>,
) {
    down.borrow_and_update();
    for c in &backlog {
        if let Some(l) = event_for(&req, c) {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
    }
    let mut seen = start_rv;
    if req.initial_events_end && tx.send(Ok(bookmark(&req, seen, true))).await.is_err() {
        return;
    }
    let deadline = tokio::time::sleep(req.timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + req.bookmark_every,
        req.bookmark_every,
    );
    loop {
        let out = tokio::select! {
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            changed = down.changed() => {
                if changed.is_err() {
                    return;
                }
                let _ = tx.send(Err(std::io::Error::other("injected outage"))).await;
                return;
            }
            _ = tick.tick(), if req.bookmarks => Some(bookmark(&req, seen, false)),
            got = live.recv() => match got {
                Ok(c) if c.rv > seen => {
                    seen = c.rv;
                    if c.kind.group == req.kind.group && c.kind.plural == req.kind.plural {
                        event_for(&req, &c)
                    } else {
                        None
                    }
                }
                Ok(_) => None,
                // Fell too far behind, or the store is gone: close, and the
                // client resumes from the last resourceVersion it saw.
                Err(_) => return,
            },
        };
        if let Some(l) = out {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
    }
}
