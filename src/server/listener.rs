//! A *listener* accepts connections and serves them with hyper (HTTP/1.1,
//! and HTTP/2 with prior knowledge), bounded in time and number:
//!
//! - a request head must arrive within the header read timeout (counted
//!   from the connection, or from the first byte after the previous
//!   answer), and an idle keep-alive connection is closed after the idle
//!   timeout; a sweeper closes connections past either;
//! - at most `max_connections` are open. At the cap, a new connection
//!   evicts the connection that made the least recent progress among those
//!   not answering a request (an idle keep-alive connection, or a client
//!   dribbling its head or body); when every connection is being answered,
//!   the new one gets a 503 and is closed. Slow clients therefore cannot
//!   keep good ones out, however many they open.
//!
//! Request bodies are bounded by the HTTP middleware (deadline, minimum
//! rate, body budget), which also reports when a request is past its body.
//! On shutdown the listener stops accepting after the drain period, asks
//! every connection to finish gracefully (idle ones close at once) and
//! waits for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use super::io::Tracked;
use crate::api::connection::ConnActivity;
use crate::telemetry::names;

/// How one listener bounds its connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerSettings {
    /// The `listener` label of its metrics ("data", "admin").
    pub name: &'static str,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
}

/// An open connection in the registry.
struct Conn {
    activity: Arc<ConnActivity>,
    /// Cancelled to close the connection at once.
    kill: CancellationToken,
}

/// Every open connection of one listener.
struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next: AtomicU64,
    settings: ListenerSettings,
}

impl Registry {
    /// Registers a new connection, evicting one when at the cap; `None`
    /// when every open connection is answering a request.
    fn admit(&self, activity: Arc<ConnActivity>) -> Option<(u64, Arc<Conn>)> {
        let mut conns = self.conns.lock();
        if conns.len() >= self.settings.max_connections {
            let victim = conns
                .iter()
                .filter_map(|(&id, c)| c.activity.evictable().map(|progress| (progress, id)))
                .min()?;
            if let Some(c) = conns.remove(&victim.1) {
                c.kill.cancel();
                self.closed("evicted");
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            activity,
            kill: CancellationToken::new(),
        });
        conns.insert(id, conn.clone());
        self.gauge(conns.len());
        Some((id, conn))
    }

    fn remove(&self, id: u64) {
        let mut conns = self.conns.lock();
        conns.remove(&id);
        self.gauge(conns.len());
    }

    /// Closes the connections past their header read or idle timeout.
    fn sweep(&self) {
        let s = &self.settings;
        let mut conns = self.conns.lock();
        conns.retain(
            |_, c| match c.activity.expired(s.header_read_timeout, s.idle_timeout) {
                None => true,
                Some(why) => {
                    c.kill.cancel();
                    self.closed(why.name());
                    false
                }
            },
        );
        self.gauge(conns.len());
    }

    fn closed(&self, reason: &'static str) {
        metrics::counter!(names::CONNECTIONS_CLOSED_TOTAL, "listener" => self.settings.name, "reason" => reason)
            .increment(1);
    }

    fn gauge(&self, open: usize) {
        metrics::gauge!(names::OPEN_CONNECTIONS, "listener" => self.settings.name).set(open as f64);
    }
}

/// Serves `app` on `listener` until `stopping` is cancelled and `drain` has
/// passed; then stops accepting, lets the connections finish and returns.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    settings: ListenerSettings,
    stopping: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let registry = Arc::new(Registry {
        conns: Mutex::new(HashMap::new()),
        next: AtomicU64::new(0),
        settings,
    });
    let epoch = Instant::now();
    let finish = CancellationToken::new();
    let connections = TaskTracker::new();
    let sweeper = tokio::spawn(sweep(registry.clone(), finish.clone()));
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    // the timeouts are the sweeper's; hyper's own header timer would also
    // cut idle keep-alive connections at the header timeout
    // one `write` per answer instead of a `writev` of head and body: the
    // small answers that dominate are copied once into one buffer, and the
    // kernel's loopback path costs less per syscall (+7 % median on an
    // empty GET at c=64, BENCHMARKS.md §5; no change for inference)
    builder
        .http1()
        .header_read_timeout(None)
        .max_headers(100)
        .writev(false);
    let builder = Arc::new(builder);
    let stop_accepting = async {
        stopping.cancelled().await;
        tokio::time::sleep(drain).await;
    };
    tokio::pin!(stop_accepting);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop_accepting => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // out of file descriptors and the like: wait, then go on
                    tracing::warn!(listener = settings.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // small JSON answers must not wait for Nagle's algorithm
        let _ = tcp.set_nodelay(true);
        let activity = ConnActivity::new(epoch);
        let Some((id, conn)) = registry.admit(activity.clone()) else {
            connections.spawn(refuse(tcp, settings));
            continue;
        };
        let task = Connection {
            app: app.clone(),
            builder: builder.clone(),
            registry: registry.clone(),
            finish: finish.clone(),
            id,
            conn,
            activity,
            peer,
        };
        connections.spawn(task.serve(tcp));
    }
    drop(listener);
    finish.cancel();
    connections.close();
    connections.wait().await;
    sweeper.abort();
    Ok(())
}

/// Closes connections past their timeouts, a few times per timeout.
async fn sweep(registry: Arc<Registry>, finish: CancellationToken) {
    let s = registry.settings;
    let period = (s.header_read_timeout.min(s.idle_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => registry.sweep(),
            () = finish.cancelled() => {
                // keep closing idle connections while the others drain
                loop {
                    tick.tick().await;
                    registry.sweep();
                }
            }
        }
    }
}

/// Answers a connection over the cap with a 503 and closes it.
async fn refuse(mut tcp: TcpStream, settings: ListenerSettings) {
    metrics::counter!(names::LOAD_SHED_TOTAL, "reason" => "connections").increment(1);
    let body = serde_json::json!({
        "error": format!(
            "server is at its connection cap ({} open connections, all answering requests); retry shortly",
            settings.max_connections
        )
    })
    .to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let write = async {
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
}

/// One accepted connection and what serving it needs.
struct Connection {
    app: axum::Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    registry: Arc<Registry>,
    finish: CancellationToken,
    id: u64,
    conn: Arc<Conn>,
    activity: Arc<ConnActivity>,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(self, tcp: TcpStream) {
        let (app, activity, peer) = (self.app.clone(), self.activity.clone(), self.peer);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let in_service = activity.enter();
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(activity.clone());
            let call = app.clone().call(req.map(Body::new));
            async move {
                let resp = call.await;
                drop(in_service);
                resp
            }
        });
        let io = TokioIo::new(Tracked::new(tcp, self.activity.clone()));
        let served = self.builder.serve_connection_with_upgrades(io, service);
        tokio::pin!(served);
        tokio::select! {
            result = served.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                }
            }
            () = self.conn.kill.cancelled() => {}
            () = self.finish.cancelled() => {
                served.as_mut().graceful_shutdown();
                tokio::select! {
                    _ = served.as_mut() => {}
                    () = self.conn.kill.cancelled() => {}
                }
            }
        }
        self.registry.remove(self.id);
    }
}
