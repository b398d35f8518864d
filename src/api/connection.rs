//! A *connection's activity*, as the server's accept loop and the HTTP
//! middleware report it: when bytes last arrived, since when a request head
//! is awaited, how many requests are in service and how many of those are
//! still reading their body. The accept loop reads it to close connections
//! past their header or idle timeout, and to choose which connection to
//! evict at the connection cap: one that made the least recent progress
//! and has no request past its body (a slow or idle client, never a
//! request being answered).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a connection is closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// A request head took longer than the header read timeout.
    HeaderTimeout,
    /// An idle keep-alive connection waited longer than the idle timeout.
    IdleTimeout,
}

impl Expired {
    /// The `reason` label of the closed-connections counter.
    pub fn name(self) -> &'static str {
        match self {
            Expired::HeaderTimeout => "header_timeout",
            Expired::IdleTimeout => "idle_timeout",
        }
    }
}

/// One connection's activity. Times are milliseconds since the listener's
/// epoch; 0 means "not set".
#[derive(Debug)]
pub struct ConnActivity {
    epoch: Instant,
    last_read: AtomicU64,
    /// Since when a request head is awaited (from the connection, or the
    /// first byte after an answer).
    head_since: AtomicU64,
    /// Since when the connection has been idle between requests.
    idle_since: AtomicU64,
    in_service: AtomicUsize,
    reading_body: AtomicUsize,
    /// HTTP/2 has no request heads between requests (pings, settings):
    /// only the idle timeout applies.
    http2: AtomicBool,
}

impl ConnActivity {
    /// A connection accepted now: its first request head is awaited.
    pub fn new(epoch: Instant) -> Arc<ConnActivity> {
        let now = ms(epoch, Instant::now());
        Arc::new(ConnActivity {
            epoch,
            last_read: AtomicU64::new(now),
            head_since: AtomicU64::new(now),
            idle_since: AtomicU64::new(0),
            in_service: AtomicUsize::new(0),
            reading_body: AtomicUsize::new(0),
            http2: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        ms(self.epoch, Instant::now())
    }

    /// Bytes arrived: progress; between requests, the start of a head.
    pub fn on_read(&self) {
        let now = self.now();
        self.last_read.store(now, Relaxed);
        if self.in_service.load(Relaxed) == 0
            && !self.http2.load(Relaxed)
            && self.head_since.load(Relaxed) == 0
        {
            self.head_since.store(now, Relaxed);
        }
    }

    /// The connection speaks HTTP/2 (its preface arrived).
    pub fn mark_http2(&self) {
        self.http2.store(true, Relaxed);
        self.head_since.store(0, Relaxed);
        self.idle_since.store(self.now(), Relaxed);
    }

    /// A request's head arrived and it is in service until the guard drops.
    pub fn enter(self: &Arc<Self>) -> InService {
        self.in_service.fetch_add(1, Relaxed);
        self.head_since.store(0, Relaxed);
        InService(self.clone())
    }

    /// A request in service is reading its body until the guard drops.
    pub fn reading_body(self: &Arc<Self>) -> ReadingBody {
        self.reading_body.fetch_add(1, Relaxed);
        ReadingBody(self.clone())
    }

    /// Whether the connection is past a timeout now.
    pub fn expired(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Expired> {
        if self.in_service.load(Relaxed) > 0 {
            return None;
        }
        let now = self.now();
        let head = self.head_since.load(Relaxed);
        if head != 0 {
            return (now.saturating_sub(head) > millis(header_timeout)).then_some(Expired::HeaderTimeout);
        }
        let idle = self.idle_since.load(Relaxed);
        (idle != 0 && now.saturating_sub(idle) > millis(idle_timeout)).then_some(Expired::IdleTimeout)
    }

    /// When the connection last made progress, if it may be evicted: no
    /// request of it is past its body.
    pub fn evictable(&self) -> Option<u64> {
        (self.in_service.load(Relaxed) <= self.reading_body.load(Relaxed))
            .then(|| self.last_read.load(Relaxed))
    }
}

/// Held while a request is in service.
#[derive(Debug)]
pub struct InService(Arc<ConnActivity>);

impl Drop for InService {
    fn drop(&mut self) {
        if self.0.in_service.fetch_sub(1, Relaxed) == 1 {
            self.0.idle_since.store(self.0.now(), Relaxed);
        }
    }
}

/// Held while a request reads its body.
#[derive(Debug)]
pub struct ReadingBody(Arc<ConnActivity>);

impl Drop for ReadingBody {
    fn drop(&mut self) {
        self.0.reading_body.fetch_sub(1, Relaxed);
        self.0.last_read.store(self.0.now(), Relaxed);
    }
}

/// Milliseconds from `epoch` to `at`, at least 1 (0 means "not set").
fn ms(epoch: Instant, at: Instant) -> u64 {
    millis(at.saturating_duration_since(epoch)).max(1)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_idle_periods_and_service_are_told_apart() {
        let epoch = Instant::now() - Duration::from_secs(10);
        let a = ConnActivity::new(epoch);
        let short = Duration::from_millis(20);
        let long = Duration::from_secs(60);
        assert_eq!(a.expired(long, long), None);
        assert!(a.evictable().is_some(), "nothing in service yet");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            a.expired(short, long),
            Some(Expired::HeaderTimeout),
            "no head yet"
        );
        let service = a.enter();
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(
            a.expired(short, short),
            None,
            "a request in service never expires"
        );
        let body = a.reading_body();
        assert!(a.evictable().is_some(), "still reading its body");
        drop(body);
        assert!(a.evictable().is_none(), "being answered");
        drop(service);
        assert_eq!(a.expired(short, long), None, "idle, within the idle timeout");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(a.expired(long, short), Some(Expired::IdleTimeout));
        a.on_read(); // the next request begins
        assert_eq!(a.expired(long, short), None);
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(a.expired(short, long), Some(Expired::HeaderTimeout));
    }

    #[test]
    fn http2_connections_only_idle_out() {
        let a = ConnActivity::new(Instant::now());
        a.mark_http2();
        a.on_read(); // a ping
        std::thread::sleep(Duration::from_millis(30));
        let short = Duration::from_millis(10);
        assert_eq!(a.expired(short, Duration::from_secs(60)), None);
        assert_eq!(
            a.expired(Duration::from_secs(60), short),
            Some(Expired::IdleTimeout)
        );
    }
}
