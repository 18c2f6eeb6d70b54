//! HTTP-FLV without hyper. A connection whose first request head arrives whole and is a
//! plain `GET /APP/STREAM.flv` (HTTP/1.1, no body, no upgrade) is served here: the head is
//! parsed by `httparse` (hyper's own parser) from a peek of the socket, the viewer is
//! admitted as any HTTP-FLV viewer is, the response head is written once and the FLV body
//! goes out as chunks by [`super::socket::play`]. Everything else (other routes, HEAD,
//! HTTP/1.0, a head split over several reads or larger than [`MAX_PEEK`], a second request
//! on a kept-alive connection) goes to hyper untouched, since a peek consumes nothing.
//!
//! Why: a viewer held by hyper keeps its connection's 8 KiB read buffer, 8 KiB header
//! buffer and dispatcher for as long as it watches; measured with heaptrack that was over
//! half of what an HTTP-FLV viewer cost.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{Response, Uri};
use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::routes::flv_route;
use super::socket::{play, Framing};
use super::{Body, HttpContext, HEADER_READ_TIMEOUT};
use crate::hub::StreamKey;
use crate::session::Output;

/// Request heads up to this size are looked at; larger ones go to hyper.
pub(crate) const MAX_PEEK: usize = 4096;
/// Headers a request served here may have (more: hyper's).
const MAX_HEADERS: usize = 32;
/// How long a refusal may take to go out.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy)]
enum Length {
    Chunked,
    Exactly(usize),
}

/// What a peek at a connection's first bytes shows.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Peeked {
    /// A complete HTTP-FLV GET: its head's length, the stream and the query.
    Flv { head_len: usize, key: StreamKey, query: String },
    /// Anything else: hyper's.
    Other,
}

/// Looks at the first bytes of a connection (sans-IO).
pub(crate) fn peek_request(bytes: &[u8]) -> Peeked {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(head_len)) = req.parse(bytes) else {
        return Peeked::Other;
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Peeked::Other;
    }
    // a body, an upgrade (WebSocket-FLV) or an expectation: hyper knows what to do
    // (and a bearer token, which hyper's path reads)
    let hyper_only = ["content-length", "transfer-encoding", "upgrade", "expect", "authorization"];
    if req.headers.iter().any(|h| hyper_only.iter().any(|n| h.name.eq_ignore_ascii_case(n))) {
        return Peeked::Other;
    }
    let Some(uri) = req.path.and_then(|p| p.parse::<Uri>().ok()) else {
        return Peeked::Other;
    };
    let query = uri.query().unwrap_or("");
    match flv_route(uri.path(), query) {
        Some(key) => Peeked::Flv { head_len, key, query: query.to_string() },
        None => Peeked::Other,
    }
}

/// Serves `sock` here when its first request is an HTTP-FLV GET; else hands it back
/// (nothing read from it) for hyper. None when the connection is done with.
pub(crate) async fn serve_or_pass(
    sock: TcpStream,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    head_deadline: tokio::time::Instant,
) -> Option<TcpStream> {
    // the peek buffer is on the stack of one poll (the bytes are there), neither on the heap
    // nor in this connection's future
    let peek = std::future::poll_fn(|cx| {
        let mut bytes = [0u8; MAX_PEEK];
        let mut buf = ReadBuf::new(&mut bytes);
        match sock.poll_peek(cx, &mut buf) {
            Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(_)) => Poll::Ready(Some(peek_request(buf.filled()))),
            Poll::Pending => Poll::Pending,
        }
    });
    // The whole wait is under the connection's head deadline: tokio may report a new socket
    // readable with nothing to read, and a peek that then waits for bytes that never come
    // kept a silent connection (and its slot of max_http_connections) open for good.
    let peeked = tokio::select! {
        peeked = tokio::time::timeout_at(head_deadline, peek) => match peeked {
            Ok(peeked) => peeked?,
            Err(_) => {
                ctx.svc.metrics.limit_hit("http_header_timeout");
                debug!(%peer, "no request within {HEADER_READ_TIMEOUT:?}; closing");
                return None;
            }
        },
        _ = ctx.svc.shutdown.cancelled() => return None,
    };
    let Peeked::Flv { head_len, key, query } = peeked else {
        return Some(sock);
    };
    let mut sock = sock;
    // boxed: the admission (an auth callback's request) would otherwise size this future,
    // and so every viewer's task, for the whole play
    let admitted = Box::pin(super::flv::admit(&key, &query, peer, ctx, Output::HttpFlv)).await;
    // the head was peeked: take it off the socket (it is all there)
    let mut left = head_len;
    std::future::poll_fn(|cx| {
        let mut bytes = [0u8; MAX_PEEK];
        while left > 0 {
            let mut buf = ReadBuf::new(&mut bytes[..left]);
            match Pin::new(&mut sock).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => left -= buf.filled().len(),
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Some(()))
    })
    .await?;
    let (stream, guard) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            let mut refusal = *refusal;
            super::response::allow_origin(&mut refusal, ctx);
            Box::pin(answer(&mut sock, refusal)).await;
            return None;
        }
    };
    let kill = CancellationToken::new();
    let body = super::flv::start(stream, guard, key, &query, peer, ctx, kill.clone(), Output::HttpFlv);
    let mut ok = super::flv::flv_response(Empty::new().boxed());
    super::response::allow_origin(&mut ok, ctx);
    let head = response_head(&ok, Length::Chunked);
    if sock.write_all(&head).await.is_err() {
        return None;
    }
    drop((ok, head));
    play(sock, body, kill, peer, Framing::Chunked).await;
    None
}

/// Writes a complete (small) response and closes.
async fn answer(sock: &mut TcpStream, resp: Response<Body>) {
    let (parts, body) = resp.into_parts();
    let body: Bytes = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(never) => match never {},
    };
    let mut out = response_head(&Response::from_parts(parts, ()), Length::Exactly(body.len()));
    out.extend_from_slice(&body);
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        sock.write_all(&out).await?;
        sock.shutdown().await
    })
    .await;
}

/// The status line and headers of `resp`, with `date` and `connection: close`, and either
/// `transfer-encoding: chunked` or a `content-length`.
fn response_head<B>(resp: &Response<B>, length: Length) -> Vec<u8> {
    let status = resp.status();
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"date: ");
    out.extend_from_slice(httpdate::fmt_http_date(SystemTime::now()).as_bytes());
    out.extend_from_slice(b"\r\nconnection: close\r\n");
    match length {
        Length::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Length::Exactly(n) => out.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::StatusCode;

    fn flv(head: &str, key: StreamKey, query: &str) -> Peeked {
        Peeked::Flv { head_len: head.len(), key, query: query.to_string() }
    }

    #[test]
    fn only_a_whole_plain_flv_get_is_served_directly() {
        let get = "GET /live/demo.flv?key=s3cret HTTP/1.1\r\nHost: x\r\nUser-Agent: mpegts.js\r\n\r\n";
        assert_eq!(peek_request(get.as_bytes()), flv(get, StreamKey::new("live", "demo"), "key=s3cret"));
        // pipelined bytes after the head are not part of it
        let more = format!("{get}GET /healthz HTTP/1.1\r\n\r\n");
        assert_eq!(peek_request(more.as_bytes()), flv(get, StreamKey::new("live", "demo"), "key=s3cret"));
        let track = "GET /live/demo.flv?track=2 HTTP/1.1\r\n\r\n";
        assert_eq!(peek_request(track.as_bytes()), flv(track, StreamKey::new("live", "demo").track(2), "track=2"));
        let absolute = "GET http://host:8080/live/demo.flv HTTP/1.1\r\n\r\n";
        assert_eq!(peek_request(absolute.as_bytes()), flv(absolute, StreamKey::new("live", "demo"), ""));
        for other in [
            // not complete yet, other routes and methods, HTTP/1.0
            "GET /live/demo.flv HTTP/1.1\r\nHost: x\r\n",
            "GET /live/demo.m3u8 HTTP/1.1\r\n\r\n",
            "GET /api/streams HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "HEAD /live/demo.flv HTTP/1.1\r\n\r\n",
            "POST /live/demo.flv HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
            "GET /live/demo.flv HTTP/1.0\r\n\r\n",
            // WebSocket-FLV, a body, an expectation
            "GET /live/demo.flv HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET /live/demo.flv HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /live/demo.flv HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // hostile paths and bytes
            "GET /live/../etc/passwd.flv HTTP/1.1\r\n\r\n",
            "GET /live/%2e%2e.flv HTTP/1.1\r\n\r\n",
            "GET /live/.flv HTTP/1.1\r\n\r\n",
            "GET /a/b/c.flv HTTP/1.1\r\n\r\n",
            "\u{16}\u{3}\u{1}garbage\r\n\r\n",
            "GET /live/x.flv HTTP/1.1\r\nBad Header\r\n\r\n",
        ] {
            assert_eq!(peek_request(other.as_bytes()), Peeked::Other, "{other:?}");
        }
        // more headers than are looked at: hyper's
        let many = format!("GET /live/demo.flv HTTP/1.1\r\n{}\r\n", "X-A: b\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(peek_request(many.as_bytes()), Peeked::Other);
    }

    #[test]
    fn response_heads_are_well_formed() {
        let ok = super::super::flv::flv_response(Empty::new().boxed());
        let head = String::from_utf8(response_head(&ok, Length::Chunked)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: video/x-flv\r\n"), "{head}");
        assert!(head.contains("\r\ntransfer-encoding: chunked\r\n"), "{head}");
        assert!(
            head.contains("\r\ndate: ")
                && head.ends_with("\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n")
        );
        let refusal = super::super::response::text(StatusCode::FORBIDDEN, "forbidden\n");
        let head = String::from_utf8(response_head(&refusal, Length::Exactly(10))).unwrap();
        assert!(
            head.starts_with("HTTP/1.1 403 Forbidden\r\n") && head.contains("\r\ncontent-length: 10\r\n"),
            "{head}"
        );
        assert!(!head.contains("chunked"), "{head}");
    }
}
