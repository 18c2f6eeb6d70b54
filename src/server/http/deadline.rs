//! The deadlines of an HTTP connection, whatever path serves it:
//!
//! - the first request head must be in within [`HEADER_READ_TIMEOUT`] of the connection's
//!   first moment: the peek of [`super::direct`] and hyper's read of the head count against
//!   one deadline (hyper's own `header_read_timeout` restarts when hyper gets the socket,
//!   and times the heads of later requests on a kept-alive connection);
//! - every write waits for the client at most `http.viewer_stall_timeout_ms`, the stall
//!   timeout HTTP-FLV viewers have: a client that takes no byte for that long is closed
//!   ([`WriteStall`]). A response holds what it sends (an HLS segment, part or playlist the
//!   store may have dropped since) only while its client takes it.
//!
//! HTTP-FLV and WebSocket-FLV bodies are left to their own stall watchdog (see `flv`),
//! which counts the eviction for the stream.

use std::future::Future;
use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tracing::warn;

use crate::metrics::Metrics;

/// How long a connection may take to send a request head (the first one from the moment
/// it is accepted).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What the requests of a hyper connection tell its deadlines.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// A request head came in: the first-head deadline is over.
    head_seen: AtomicBool,
    /// An HTTP-FLV or WebSocket-FLV viewer has the connection: its stall watchdog times it.
    flv: AtomicBool,
}

impl ConnState {
    pub(crate) fn note_request(&self) {
        self.head_seen.store(true, Ordering::Relaxed);
    }

    pub(crate) fn note_flv(&self) {
        self.flv.store(true, Ordering::Relaxed);
    }
}

/// Ends when `deadline` passes before the connection's first request head came in;
/// pending forever once it did.
pub(crate) async fn first_head_missed(deadline: Instant, state: &ConnState) {
    tokio::time::sleep_until(deadline).await;
    if state.head_seen.load(Ordering::Relaxed) {
        std::future::pending::<()>().await;
    }
}

/// A connection's socket whose writes may wait for the client at most `stall`: when the
/// socket has taken nothing for that long, the write fails (`TimedOut`) and hyper drops the
/// connection with what it was sending.
pub(crate) struct WriteStall<S> {
    io: S,
    stall: Duration,
    /// Armed `stall` after the first write the socket did not take; kept for the next wait.
    timer: Option<Pin<Box<Sleep>>>,
    /// The last write was not taken (the timer runs).
    blocked: bool,
    state: Arc<ConnState>,
    peer: SocketAddr,
    metrics: Arc<Metrics>,
}

impl<S> WriteStall<S> {
    pub(crate) fn new(io: S, stall: Duration, state: Arc<ConnState>, peer: SocketAddr, metrics: Arc<Metrics>) -> Self {
        Self { io, stall, timer: None, blocked: false, state, peer, metrics }
    }

    /// The socket took bytes (or failed): the client is not stalled.
    fn moved<T>(&mut self, cx: &mut Context<'_>, r: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if r.is_ready() {
            self.blocked = false;
            return r;
        }
        if self.state.flv.load(Ordering::Relaxed) {
            return Poll::Pending;
        }
        let stall = self.stall;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        if !std::mem::replace(&mut self.blocked, true) {
            timer.as_mut().reset(Instant::now() + stall);
        }
        match timer.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                self.metrics.limit_hit("http_write_stall");
                if log_now() {
                    warn!(peer = %self.peer, "HTTP client took nothing of a response for {stall:?}; closing (logged at most once a second)");
                }
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "client stalled")))
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteStall<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteStall<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write(cx, buf);
        self.moved(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.moved(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_flush(cx);
        self.moved(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.io).poll_shutdown(cx);
        self.moved(cx, r)
    }
}

/// At most one stall is logged a second (a flood of stalled clients logs once a second;
/// each is counted); HTTP/2 abuse closes share it.
pub(crate) fn log_now() -> bool {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let last = LAST.load(Ordering::Relaxed);
    last != now && LAST.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
}
