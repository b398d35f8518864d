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
//! The data listener serves its connections on threads of its own
//! ([`serve_on_threads`]), one single-threaded runtime each: a request is
//! read, handled and answered on one thread, and a lone client's request
//! wakes no other thread. Each new connection goes to the thread with the
//! fewest open connections and stays there.
//!
//! Request bodies are bounded by the HTTP middleware (deadline, minimum
//! rate, body budget), which also reports when a request is past its body.
//! On shutdown the listener stops accepting after the drain period, asks
//! every connection to finish gracefully (idle ones close at once) and
//! waits for them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use futures_util::task::AtomicWaker;
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
    stop: Stop,
}

/// How a connection is asked to end: after its request in progress
/// (graceful), or at once.
///
/// The connection's task reads it each time it wakes. That is one atomic
/// load on a line of its own, where two cancellation tokens (one of them
/// shared by every connection of both HTTP threads) cost two mutex locks
/// per wake (BENCHMARKS.md §5).
struct Stop {
    asked: AtomicU8,
    task: AtomicWaker,
}

impl Stop {
    const SERVING: u8 = 0;
    const GRACEFUL: u8 = 1;
    const NOW: u8 = 2;

    fn new() -> Self {
        Self {
            asked: AtomicU8::new(Self::SERVING),
            task: AtomicWaker::new(),
        }
    }

    /// Asks for `how` (never lowers an earlier ask) and wakes the task.
    fn ask(&self, how: u8) {
        self.asked.fetch_max(how, Ordering::AcqRel);
        self.task.wake();
    }

    /// What has been asked so far; the task is woken on the next ask.
    fn asked(&self, cx: &std::task::Context<'_>) -> u8 {
        self.task.register(cx.waker());
        self.asked.load(Ordering::Acquire)
    }
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
                c.stop.ask(Stop::NOW);
                self.closed("evicted");
            }
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            activity,
            stop: Stop::new(),
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
                    c.stop.ask(Stop::NOW);
                    self.closed(why.name());
                    false
                }
            },
        );
        self.gauge(conns.len());
    }

    /// Asks every open connection to finish gracefully: answer the request
    /// in progress, if any, then close.
    fn finish_all(&self) {
        for c in self.conns.lock().values() {
            c.stop.ask(Stop::GRACEFUL);
        }
    }

    fn closed(&self, reason: &'static str) {
        metrics::counter!(names::CONNECTIONS_CLOSED_TOTAL, "listener" => self.settings.name, "reason" => reason)
            .increment(1);
    }

    fn gauge(&self, open: usize) {
        metrics::gauge!(names::OPEN_CONNECTIONS, "listener" => self.settings.name).set(open as f64);
    }
}

/// What every accepting loop of one listener shares: the registry, the
/// HTTP settings, and the connections to wait for on shutdown.
struct Shared {
    app: axum::Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    registry: Arc<Registry>,
    epoch: Instant,
    /// Cancelled when accepting is over: connections finish gracefully
    /// ([`Shared::finish`]).
    finish: CancellationToken,
    connections: TaskTracker,
}

impl Shared {
    fn new(app: axum::Router, settings: ListenerSettings) -> Self {
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
        Self {
            app,
            builder: Arc::new(builder),
            registry: Arc::new(Registry {
                conns: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
                settings,
            }),
            epoch: Instant::now(),
            finish: CancellationToken::new(),
            connections: TaskTracker::new(),
        }
    }

    /// Accepting is over: every open connection finishes gracefully.
    fn finish(&self) {
        self.finish.cancel();
        self.registry.finish_all();
    }

    /// Accepts connections on `listener` until `stop` is cancelled. Each is
    /// served on the runtime this runs on when there are no `lanes`, else
    /// handed to the lane with the fewest open connections.
    async fn accept(&self, listener: TcpListener, stop: CancellationToken, lanes: &[Lane]) {
        let settings = self.registry.settings;
        loop {
            let (tcp, peer) = tokio::select! {
                () = stop.cancelled() => break,
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
            let activity = ConnActivity::new(self.epoch);
            let Some((id, conn)) = self.registry.admit(activity.clone()) else {
                self.connections.spawn(refuse(tcp, settings));
                continue;
            };
            let task = Connection {
                app: self.app.clone(),
                builder: self.builder.clone(),
                registry: self.registry.clone(),
                id,
                conn,
                activity,
                peer,
            };
            match lanes.iter().min_by_key(|lane| lane.open.load(Ordering::Relaxed)) {
                None => {
                    self.connections.spawn(task.serve(tcp));
                }
                Some(lane) => {
                    // a connection that does not reach its thread leaves
                    // the registry when it is dropped
                    if let Err(why) = lane.hand(tcp, task) {
                        tracing::warn!(listener = settings.name, error = %why, "a connection could not be handed to a thread");
                    }
                }
            }
        }
    }
}

/// A connection on its way to a lane's thread, counted in that lane.
type Handed = (std::net::TcpStream, Connection, Counted);

/// A thread serving some of a listener's connections, and how many it has
/// open.
struct Lane {
    to: tokio::sync::mpsc::UnboundedSender<Handed>,
    open: Arc<AtomicUsize>,
}

impl Lane {
    /// Hands `task` to this lane's thread, counted there until it ends.
    fn hand(&self, tcp: TcpStream, task: Connection) -> Result<(), String> {
        let tcp = tcp.into_std().map_err(|e| e.to_string())?;
        self.open.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(self.open.clone());
        self.to
            .send((tcp, task, counted))
            .map_err(|_| "its thread has ended".to_string())
    }
}

/// One of a lane's open connections: counted until dropped (also when its
/// task panics, or when it never reaches the lane).
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A token cancelled once `stopping` is and `drain` has passed after it.
pub fn after_drain(stopping: CancellationToken, drain: Duration) -> CancellationToken {
    let over = CancellationToken::new();
    let done = over.clone();
    tokio::spawn(async move {
        stopping.cancelled().await;
        tokio::time::sleep(drain).await;
        done.cancel();
    });
    over
}

/// Serves `app` on `listener` until `stopping` is cancelled and `drain` has
/// passed; then stops accepting, lets the connections finish and returns.
/// Connections run on the caller's runtime.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    settings: ListenerSettings,
    stopping: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let shared = Shared::new(app, settings);
    let sweeper = tokio::spawn(sweep(shared.registry.clone(), shared.finish.clone()));
    shared.accept(listener, after_drain(stopping, drain), &[]).await;
    shared.finish();
    shared.connections.close();
    shared.connections.wait().await;
    sweeper.abort();
    Ok(())
}

/// Like [`serve`], but the connections are served on `threads` threads of
/// their own, each with a single-threaded runtime: a request is read,
/// handled and answered on one thread, with no hand-off between threads.
/// The accepting task hands each new connection to the thread with the
/// fewest open connections; the connection cap, timeouts and drain are the
/// listener's, over all its threads. After writing an answer a thread
/// keeps polling its sockets for `busy_poll` before it sleeps
/// ([`busy_poll`](super::busy_poll)).
pub async fn serve_on_threads(
    listener: TcpListener,
    threads: usize,
    busy_poll: Duration,
    app: axum::Router,
    settings: ListenerSettings,
    stopping: CancellationToken,
    drain: Duration,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared::new(app, settings));
    let sweeper = tokio::spawn(sweep(shared.registry.clone(), shared.finish.clone()));
    let mut lanes = Vec::with_capacity(threads);
    let mut ended = Vec::with_capacity(threads);
    for i in 0..threads.max(1) {
        let (to, arrivals) = tokio::sync::mpsc::unbounded_channel();
        let (done, end) = tokio::sync::oneshot::channel();
        let shared = shared.clone();
        std::thread::Builder::new()
            .name(format!("{}-http-{i}", settings.name))
            .spawn(move || {
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|rt| rt.block_on(run_lane(&shared, arrivals, busy_poll)));
                let _ = done.send(served);
            })?;
        lanes.push(Lane {
            to,
            open: Arc::new(AtomicUsize::new(0)),
        });
        ended.push(end);
    }
    shared
        .accept(listener, after_drain(stopping, drain), &lanes)
        .await;
    drop(lanes);
    shared.finish();
    shared.connections.close();
    let mut result = Ok(());
    for end in ended {
        let served = end
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("an HTTP thread panicked")));
        if result.is_ok() {
            result = served;
        }
    }
    sweeper.abort();
    result
}

/// One lane's thread: serves the connections handed to it until the
/// accepting task is done, then drives them to their end.
async fn run_lane(
    shared: &Shared,
    mut arrivals: tokio::sync::mpsc::UnboundedReceiver<Handed>,
    busy_poll: Duration,
) {
    tokio::spawn(super::busy_poll::run(busy_poll));
    tokio::spawn(keep_a_timer_armed());
    while let Some((tcp, task, counted)) = arrivals.recv().await {
        match TcpStream::from_std(tcp) {
            Ok(tcp) => {
                shared.connections.spawn(async move {
                    task.serve(tcp).await;
                    drop(counted);
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "a connection could not be registered");
                drop(task);
            }
        }
    }
    // all lanes share the tracker: this runtime keeps driving its own
    // connections while the others finish theirs
    shared.connections.wait().await;
}

/// How far ahead a lane's standing timer is due, at most: below the
/// inference deadlines (a version's `timeout_ms`, 5 s by default).
const STANDING_TIMER: Duration = Duration::from_secs(1);

/// Keeps one timer armed on this thread's runtime at all times, due within
/// [`STANDING_TIMER`]. Tokio's driver wakes itself (an 8-byte `write` to
/// its eventfd, and one more return from `epoll_wait`) whenever a new timer
/// is due before every timer armed when it last looked, and it looks each
/// time the thread polls its sockets. Every inference arms its deadline, so
/// without a nearer timer two requests in three at 64 connections paid
/// that syscall on a thread that was already awake (BENCHMARKS.md §5).
async fn keep_a_timer_armed() {
    let mut tick = tokio::time::interval(STANDING_TIMER);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
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

/// One accepted connection and what serving it needs. It leaves the
/// registry when dropped: when it ends, but also when its task panics or
/// it never reaches its thread.
struct Connection {
    app: axum::Router,
    builder: Arc<hyper_util::server::conn::auto::Builder<TokioExecutor>>,
    registry: Arc<Registry>,
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
        let mut graceful = false;
        let ended = std::future::poll_fn(|cx| {
            match self.conn.stop.asked(cx) {
                Stop::NOW => return std::task::Poll::Ready(None),
                Stop::GRACEFUL if !graceful => {
                    served.as_mut().graceful_shutdown();
                    graceful = true;
                }
                _ => {}
            }
            std::future::Future::poll(served.as_mut(), cx).map(Some)
        })
        .await;
        if let Some(Err(e)) = ended {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use axum::routing::get;

    use super::*;

    /// Asks for the name of the thread that answers, on a keep-alive
    /// connection.
    fn answered_by(tcp: &mut std::net::TcpStream) -> String {
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).unwrap();
            answer.push(byte[0]);
        }
        let head = String::from_utf8(answer).unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        let mut body = vec![0; length];
        tcp.read_exact(&mut body).unwrap();
        String::from_utf8(body).unwrap()
    }

    #[tokio::test]
    async fn a_connection_whose_task_panics_leaves_the_registry() {
        let app = axum::Router::new().route(
            "/",
            get(|| async { panic!("a bug below the middleware") as &str }),
        );
        let settings = ListenerSettings {
            name: "test",
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 4,
        };
        let shared = Shared::new(app, settings);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::task::spawn_blocking(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            tcp.write_all(b"GET / HTTP/1.1\r\nhost: t\r\n\r\n").unwrap();
            let mut rest = Vec::new();
            let _ = tcp.read_to_end(&mut rest);
        });
        let (tcp, peer) = listener.accept().await.unwrap();
        let activity = ConnActivity::new(shared.epoch);
        let (id, conn) = shared.registry.admit(activity.clone()).unwrap();
        assert_eq!(shared.registry.conns.lock().len(), 1);
        let task = Connection {
            app: shared.app.clone(),
            builder: shared.builder.clone(),
            registry: shared.registry.clone(),
            id,
            conn,
            activity,
            peer,
        };
        let ended = tokio::spawn(task.serve(tcp)).await;
        assert!(ended.unwrap_err().is_panic(), "the handler's panic ends the task");
        assert!(
            shared.registry.conns.lock().is_empty(),
            "the connection is no longer counted open"
        );
        client.await.unwrap();
    }

    #[tokio::test]
    async fn a_threaded_listener_spreads_connections_over_its_threads_and_stops_after_the_drain() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route(
            "/",
            get(|| async { std::thread::current().name().unwrap_or("?").to_string() }),
        );
        let settings = ListenerSettings {
            name: "test",
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 16,
        };
        let stopping = CancellationToken::new();
        let served = tokio::spawn(serve_on_threads(
            listener,
            2,
            Duration::from_micros(50),
            app,
            settings,
            stopping.clone(),
            Duration::from_millis(50),
        ));
        // four connections open at once: each goes to the thread with the
        // fewest, and every request on a connection is answered there
        let names = tokio::task::spawn_blocking(move || {
            let mut conns: Vec<_> = (0..4)
                .map(|_| std::net::TcpStream::connect(addr).unwrap())
                .collect();
            let first: Vec<String> = conns.iter_mut().map(answered_by).collect();
            let again: Vec<String> = conns.iter_mut().map(answered_by).collect();
            assert_eq!(first, again, "a connection stays on its thread");
            first
        })
        .await
        .unwrap();
        assert_eq!(
            names,
            ["test-http-0", "test-http-1", "test-http-0", "test-http-1"]
        );
        // an idle keep-alive connection does not hold the stop up
        let idle = std::net::TcpStream::connect(addr).unwrap();
        stopping.cancel();
        tokio::time::timeout(Duration::from_secs(5), served)
            .await
            .expect("the listener stops after the drain")
            .unwrap()
            .unwrap();
        drop(idle);
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "nothing accepts any more"
        );
    }
}
