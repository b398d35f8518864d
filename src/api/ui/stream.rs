//! The live page's push channel: a server-sent events stream. On connect it
//! sends the whole overview (`event: overview`) and the whole history
//! (`event: history`); then, after every history sample (once a second),
//! the new samples and, when anything the overview shows changed (a version
//! state, a policy, a rollout's phase, step or analysis, the audit log),
//! the new overview. The stream ends when the server begins to shut down,
//! so a drain never waits for a viewer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

use super::overview::{now_ms, server, Overviewer};
use crate::api::error::ApiError;
use crate::serving::history::MAX_VIEWERS;
use crate::serving::AppState;

/// One viewer's stream: what it was sent last, and its place among the
/// viewers (freed when the stream is dropped).
struct Viewer {
    state: Arc<AppState>,
    ticks: watch::Receiver<u64>,
    stopping: CancellationToken,
    overviewer: Overviewer,
    /// The models part of the last overview sent.
    sent_models: Option<Value>,
    /// The newest sample sent (ms since the epoch).
    sent_ms: u64,
    pending: VecDeque<Event>,
    _place: OwnedSemaphorePermit,
}

impl Viewer {
    /// Queues the new history samples and, when it changed, the overview.
    async fn catch_up(&mut self) {
        let series = self.state.history.since(self.sent_ms);
        let newest = series
            .iter()
            .filter_map(|s| s.samples.last().map(|x| x.at_ms))
            .max();
        // the first history is sent even when empty: the page waits for it
        if self.sent_ms == 0 || newest.is_some() {
            self.sent_ms = newest.unwrap_or(self.sent_ms).max(1);
            let data = json!({"now_ms": now_ms(), "series": series});
            self.pending.push_back(event("history", &data));
        }
        let models = self.overviewer.models(&self.state).await;
        if self.sent_models.as_ref() != Some(&models) {
            let data = json!({"server": server(&self.state), "models": models});
            self.pending.push_back(event("overview", &data));
            self.sent_models = Some(models);
        }
    }

    /// The next event: a queued one, else waits for the next sample; `None`
    /// once the server is stopping.
    async fn next(mut self) -> Option<(Result<Event, Infallible>, Viewer)> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some((Ok(e), self));
            }
            if self.stopping.is_cancelled() {
                return None;
            }
            tokio::select! {
                changed = self.ticks.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                _ = self.stopping.cancelled() => return None,
            }
            self.catch_up().await;
        }
    }
}

fn event(name: &str, data: &Value) -> Event {
    Event::default().event(name).data(data.to_string())
}

/// `GET /admin/v1/overview/stream`: the event stream (503 beyond
/// [`MAX_VIEWERS`] viewers).
pub(super) async fn stream(state: Arc<AppState>) -> Response {
    let Some(place) = state.history.viewer() else {
        return ApiError::Unavailable {
            message: format!("the live page already has {MAX_VIEWERS} viewers; close one"),
            retry_after_secs: Some(5),
        }
        .into_response();
    };
    let mut viewer = Viewer {
        ticks: state.history.subscribe(),
        stopping: state.shutdown_token().clone(),
        state,
        overviewer: Overviewer::default(),
        sent_models: None,
        sent_ms: 0,
        pending: VecDeque::new(),
        _place: place,
    };
    viewer.ticks.mark_unchanged();
    viewer.catch_up().await;
    let events = futures_util::stream::unfold(viewer, Viewer::next);
    let mut resp = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(10)))
        .into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // proxies must pass events on as they come
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}
