//! Raw HTTP over TCP, for what a stock client will not send: malformed
//! requests, dribbled bytes, huge heads.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// An answer read off the wire.
#[derive(Debug, Clone)]
pub struct RawAnswer {
    pub status: u16,
    /// The head, lowercased.
    pub head: String,
    pub body: String,
}

impl RawAnswer {
    /// The body as JSON (panics with the answer when it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// `base` is `http://host:port`; returns `host:port`.
pub fn host_port(base: &str) -> &str {
    base.trim_start_matches("http://")
}

/// Sends `bytes` on a fresh connection and reads one answer (the server
/// closes or sends content-length bytes), within 20 s.
pub async fn exchange(base: &str, bytes: &[u8]) -> RawAnswer {
    let mut tcp = TcpStream::connect(host_port(base)).await.unwrap();
    // a server may answer (and close) before it read everything
    let _ = tcp.write_all(bytes).await;
    read_answer(&mut tcp, Duration::from_secs(20))
        .await
        .expect("an answer")
}

/// Reads one HTTP answer from `tcp`; `None` when the connection closes
/// before a head arrives.
pub async fn read_answer(tcp: &mut TcpStream, within: Duration) -> Option<RawAnswer> {
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            let body_start = end + 4;
            let complete = match len {
                Some(n) => buf.len() >= body_start + n,
                None => false,
            };
            if complete {
                let n = len.unwrap_or(0);
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = String::from_utf8_lossy(&buf[body_start..body_start + n]).into_owned();
                return Some(RawAnswer { status, head, body });
            }
        }
        let read = tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await;
        match read {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => {
                let end = find(&buf, b"\r\n\r\n")?;
                let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                let status = head.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
                let body = String::from_utf8_lossy(&buf[end + 4..]).into_owned();
                return Some(RawAnswer { status, head, body });
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// True once the server has closed `tcp` (a read returns end of file or an
/// error), waiting at most `within`.
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut chunk = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, tcp.read(&mut chunk)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // an answer (e.g. a 408) before the close
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A POST head for `path` announcing `len` body bytes.
pub fn post_head(path: &str, len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n\r\n"
    )
}
