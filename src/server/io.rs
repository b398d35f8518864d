//! The byte stream of one connection, as hyper sees it: a TCP stream that
//! reports every read to the connection's activity (progress for timeouts
//! and eviction; the HTTP/2 preface), and that gives hyper's own error
//! answers a JSON body.
//!
//! hyper answers some malformed requests itself, before any service runs
//! (400 for a broken request line or header, 414 for a URL longer than the
//! `http` crate takes, 431 for too many or too large headers), with an
//! empty body. The server's answers never have a 4xx status with
//! `content-length: 0`, so such a head, written alone, is hyper's; it is
//! replaced by the same status with `{"error": ...}` like every other error.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::api::connection::ConnActivity;

/// The start of the HTTP/2 connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// A connection's TCP stream with its activity.
pub struct Tracked {
    inner: TcpStream,
    activity: Arc<ConnActivity>,
    /// Bytes of the HTTP/2 preface read so far (`usize::MAX`: not HTTP/2).
    sniffed: usize,
    /// A replacement answer being written: (bytes, written, the length of
    /// what hyper asked to write).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl Tracked {
    pub fn new(inner: TcpStream, activity: Arc<ConnActivity>) -> Tracked {
        Tracked {
            inner,
            activity,
            sniffed: 0,
            replacing: None,
        }
    }

    /// Writes the replacement answer; `Ready(Ok(n))` once all of it is out,
    /// `n` being what hyper asked to write.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        while let Some((bytes, written, asked)) = &mut self.replacing {
            if *written == bytes.len() {
                let asked = *asked;
                self.replacing = None;
                return Poll::Ready(Ok(asked));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => *written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(0))
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = &buf.filled()[before..];
        if matches!(result, Poll::Ready(Ok(()))) && !got.is_empty() {
            if self.sniffed < H2_PREFACE.len() {
                let at = self.sniffed;
                let n = got.len().min(H2_PREFACE.len() - at);
                self.sniffed = if got[..n] == H2_PREFACE[at..at + n] {
                    at + n
                } else {
                    usize::MAX // not HTTP/2
                };
                if self.sniffed == H2_PREFACE.len() {
                    self.activity.mark_http2();
                }
            }
            self.activity.on_read();
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none() {
            if let Some(json) = hyper_error_answer(buf) {
                self.replacing = Some((json, 0, buf.len()));
            }
        }
        if self.replacing.is_some() {
            return self.poll_replacement(cx);
        }
        super::busy_poll::answered();
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper's own answers are a head alone: one slice
        let alone = bufs.iter().filter(|b| !b.is_empty()).count() == 1;
        if self.replacing.is_some()
            || (alone && bufs.first().is_some_and(|b| hyper_error_answer(b).is_some()))
        {
            let first = bufs.iter().find(|b| !b.is_empty()).map(|b| &b[..]).unwrap_or(&[]);
            return self.poll_write(cx, first);
        }
        super::busy_poll::answered();
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The JSON answer replacing hyper's bodiless answer to a malformed
/// request, when `head` is one.
pub fn hyper_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let rest = head.strip_prefix(b"HTTP/1.1 ")?;
    let (message, status_line) = match rest.get(..4)? {
        b"400 " => (
            "malformed HTTP request: the request line or a header could not be parsed",
            "400 Bad Request",
        ),
        b"414 " => ("the request URL is too long", "414 URI Too Long"),
        b"431 " => (
            "the request headers are too many or too large (at most 100 headers)",
            "431 Request Header Fields Too Large",
        ),
        _ => return None,
    };
    let bodiless = head.ends_with(b"\r\n\r\n")
        && head
            .windows(b"\r\ncontent-length: 0\r\n".len())
            .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !bodiless {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    Some(
        format!(
            "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_heads_are_replaced() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Sun, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let answer = String::from_utf8(hyper_error_answer(hyper).unwrap()).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
            "{answer}"
        );
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json"));
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["error"].as_str().unwrap().contains("headers"));
        for status in ["400 Bad Request", "414 URI Too Long"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(hyper_error_answer(head.as_bytes()).is_some(), "{status}");
        }
        // the server's own answers are left alone
        for own in [
            &b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 12\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\r\n{}",
        ] {
            assert!(
                hyper_error_answer(own).is_none(),
                "{}",
                String::from_utf8_lossy(own)
            );
        }
    }
}
