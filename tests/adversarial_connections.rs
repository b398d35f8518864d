//! "Trust no caller", connections (case 2 of issue 12): slow clients must
//! not take the slots or the connections good clients need, and every
//! connection is bounded in time.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::raw::{closed_within, host_port, post_head, read_answer};
use common::{digits_request, digits_samples, TestRepo, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Bounds small enough for a test: 2 s for a head, 3 s idle, a body within
/// 5 s at 16 KiB/s after 2 s.
fn bounded(c: &mut switchyard::Config) {
    c.header_read_timeout = Duration::from_secs(2);
    c.idle_timeout = Duration::from_secs(3);
    c.body_read_timeout = Duration::from_secs(5);
}

/// A client that announces a body and sends one byte a second, and opens
/// a new connection whenever the server closes its own.
fn dribbler(
    addr: String,
    stop: Arc<AtomicBool>,
    reconnects: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let Ok(mut tcp) = TcpStream::connect(&addr).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            if tcp
                .write_all(post_head("/v2/models/digits/infer", 100_000).as_bytes())
                .await
                .is_err()
            {
                continue;
            }
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tcp.write_all(b"[").await.is_err() {
                    break;
                }
            }
            reconnects.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Case 2: 100 connections sending one byte a second (over the cap of 64
/// connections and the 32 in-flight slots) leave good requests at 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_slow_clients_do_not_keep_good_requests_out() {
    const SLOW: usize = 100;
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), |c| {
        bounded(c);
        c.max_connections = 64;
        c.max_in_flight = 32;
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let reconnects = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..SLOW)
        .map(|_| dribbler(host_port(&s.base).to_string(), stop.clone(), reconnects.clone()))
        .collect();
    // let them all connect and start dribbling
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let good = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let body = digits_request(&[digits_samples()[0].0.clone()]).to_string();
    let started = Instant::now();
    let mut statuses = Vec::new();
    while started.elapsed() < Duration::from_secs(8) {
        let resp = good
            .post(s.url("/v2/models/digits/infer"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        statuses.push(resp.map(|r| r.status().as_u16()).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in slow {
        t.await.unwrap();
    }
    assert!(statuses.len() >= 20, "{statuses:?}");
    assert!(
        statuses.iter().all(|&st| st == 200),
        "good requests: {statuses:?}"
    );
    // the slow connections were evicted (and timed out) over and over
    let evicted = s
        .metric("switchyard_connections_closed_total{listener=\"data\",reason=\"evicted\"}")
        .await;
    assert!(evicted > 0.0, "no connection was evicted");
    assert!(
        reconnects.load(Ordering::Relaxed) >= SLOW,
        "slow connections were closed"
    );
    s.stop().await;
}

/// Case 2: a body that stops arriving gets a 408 JSON answer and the
/// connection closes (minimum rate after the grace, then the deadline).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_a_stalled_body_is_cut_off_with_408() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), bounded).await;
    let mut tcp = TcpStream::connect(host_port(&s.base)).await.unwrap();
    tcp.write_all(post_head("/v2/models/digits/infer", 1000).as_bytes())
        .await
        .unwrap();
    tcp.write_all(b"{\"inputs\": [").await.unwrap();
    let sent = Instant::now();
    let answer = read_answer(&mut tcp, Duration::from_secs(10))
        .await
        .expect("an answer before the connection closes");
    assert_eq!(answer.status, 408, "{answer:?}");
    assert!(answer.head.contains("application/json"), "{answer:?}");
    assert!(
        answer.json()["error"]
            .as_str()
            .unwrap()
            .contains("did not arrive"),
        "{answer:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(6),
        "cut after {:?}",
        sent.elapsed()
    );
    assert!(
        closed_within(&mut tcp, Duration::from_secs(2)).await,
        "the connection closes"
    );
    s.stop().await;
}

/// Case 2: a head that never completes, and a connection that never sends
/// anything, are closed after the header read timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_slow_heads_are_closed_after_the_header_timeout() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), bounded).await;
    let mut partial = TcpStream::connect(host_port(&s.base)).await.unwrap();
    partial
        .write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(host_port(&s.base)).await.unwrap();
    let opened = Instant::now();
    assert!(
        closed_within(&mut partial, Duration::from_secs(6)).await,
        "a partial head stays open"
    );
    assert!(
        closed_within(&mut silent, Duration::from_secs(2)).await,
        "a silent connection stays open"
    );
    let after = opened.elapsed();
    assert!(
        after >= Duration::from_millis(1900),
        "closed before the timeout: {after:?}"
    );
    let closed = s
        .metric("switchyard_connections_closed_total{listener=\"data\",reason=\"header_timeout\"}")
        .await;
    assert!(closed >= 2.0, "{closed}");
    s.stop().await;
}

/// Case 2: an idle keep-alive connection is closed after the idle timeout,
/// not before, and not while a request is being answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn case2_idle_keep_alive_connections_are_closed() {
    let repo = TestRepo::bundled(&["digits"]);
    let s = TestServer::start_with(repo.path(), bounded).await;
    let mut tcp = TcpStream::connect(host_port(&s.base)).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_answer(&mut tcp, Duration::from_secs(5)).await.unwrap();
    assert_eq!(answer.status, 200);
    let idle_since = Instant::now();
    // still open well past the header timeout: idle is not a slow head
    assert!(!closed_within(&mut tcp, Duration::from_millis(2500)).await);
    tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        read_answer(&mut tcp, Duration::from_secs(5))
            .await
            .unwrap()
            .status,
        200
    );
    let idle_since_again = Instant::now();
    assert!(
        closed_within(&mut tcp, Duration::from_secs(6)).await,
        "an idle connection stays open"
    );
    let idle = idle_since_again.elapsed();
    assert!(idle >= Duration::from_millis(2900), "closed after {idle:?}");
    assert!(idle_since.elapsed() > Duration::from_secs(5));
    s.stop().await;
}
