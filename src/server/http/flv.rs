//! HTTP-FLV: a live, endless FLV body per viewer. The body polls the viewer's
//! hub subscription itself whenever hyper can write more (no task or channel in
//! between), so it is written only as fast as the socket takes it; a small
//! watchdog task per viewer, asleep until the next instant a stall could be due,
//! disconnects one whose socket stays full.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::response::{not_found, refused, text};
use super::{Body, HttpContext};
use crate::auth::{Action, AuthRequest};
use crate::flv::FlvWriter;
use crate::hub::{HubEvent, Stream, StreamKey, Subscription};
use crate::metrics::reason;
use crate::session::{admit_viewer, Output, OutputGuard, Refusal, Viewer};
use crate::Piece;

/// Hub events taken per poll.
const BATCH: usize = 64;
/// Event and piece slots a viewer keeps reserved between batches.
const KEEP_EVENTS: usize = 8;
/// (a batch at `merge_write_ms` is a dozen pieces at 30 fps, 16 at 60)
const KEEP_PIECES: usize = 24;
/// The block hyper's path copies headers into.
const HYPER_SCRATCH: usize = 1024;

pub(crate) async fn serve(
    key: StreamKey,
    query: &str,
    head: bool,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    kill: CancellationToken,
) -> Response<Body> {
    let (stream, guard) = match admit(&key, query, peer, ctx, Output::HttpFlv).await {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    if head {
        // a HEAD asked the callback like a GET, so its callback server hears it leave too
        drop(DoneNotice { ctx: ctx.clone(), key, query: query.to_string(), peer, protocol: Output::HttpFlv });
        drop(guard);
        return flv_response(Empty::new().boxed());
    }
    let body = start(stream, guard, key, query, peer, ctx, kill, Output::HttpFlv);
    flv_response(body.boxed())
}

/// Admits a viewer of `key`'s FLV (HTTP-FLV or WebSocket-FLV, `protocol` as the auth
/// callback names it) through the session layer; else the refusal to answer (boxed: a
/// `Response` is 128 bytes, too large for an `Err` by clippy's result_large_err since
/// Rust 1.99).
pub(crate) async fn admit(
    key: &StreamKey,
    query: &str,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    protocol: Output,
) -> Result<(Arc<Stream>, OutputGuard), Box<Response<Body>>> {
    match admit_viewer(&ctx.svc, key, protocol, protocol.name(), peer, query).await {
        Ok(Viewer { stream, guard }) => Ok((stream, guard)),
        Err(refusal) => Err(Box::new(refusal_response(ctx, key, peer, label(protocol), &refusal))),
    }
}

/// The HTTP answer to a refused viewer (logged and counted, but for a stream that is not
/// there: a 404 is no event).
pub(crate) fn refusal_response(
    ctx: &HttpContext,
    key: &StreamKey,
    peer: SocketAddr,
    what: &str,
    refusal: &Refusal,
) -> Response<Body> {
    match refusal {
        Refusal::Disabled | Refusal::NotFound(_) | Refusal::BadName => not_found(),
        Refusal::Denied(denied) => {
            warn!(%peer, stream = %key, "{what} play denied: {denied}");
            refused(ctx, denied)
        }
        Refusal::ViewerLimit { .. } => {
            warn!(%peer, stream = %key, "{what} viewer refused: viewer limit reached");
            ctx.svc.metrics.rejected.get_or_create(&reason("viewer_limit")).inc();
            text(StatusCode::SERVICE_UNAVAILABLE, "viewer limit reached\n")
        }
        Refusal::Publish(_) | Refusal::Cluster(_) => text(StatusCode::SERVICE_UNAVAILABLE, "unavailable\n"),
    }
}

/// The endless FLV of an admitted viewer, and its stall watchdog (which cancels `kill`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn start(
    stream: Arc<Stream>,
    guard: OutputGuard,
    key: StreamKey,
    query: &str,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    kill: CancellationToken,
    protocol: Output,
) -> FlvBody {
    let watch = Arc::new(Watch::new());
    let gone = CancellationToken::new();
    let body = FlvBody {
        _gone: gone.clone().drop_guard(),
        sub: stream.subscribe(),
        writer: FlvWriter::new(),
        // grows to what a batch holds (a few events at merge_write_ms), not BATCH
        events: Vec::new(),
        pieces: Vec::new(),
        sent: 0,
        hyper_scratch: BytesMut::new(),
        watch: watch.clone(),
        finished: false,
        kill: kill.clone(),
        done: DoneNotice { ctx: ctx.clone(), key, query: query.to_string(), peer, protocol },
        guard,
    };
    info!(%peer, stream = %body.sub.stream().key(), "{} viewer joined", label(protocol));
    let stall = Duration::from_millis(ctx.config.viewer_stall_timeout_ms);
    tokio::spawn(watchdog(watch, stream, stall, kill, gone, peer));
    body
}

/// How the log names a protocol.
fn label(protocol: Output) -> &'static str {
    match protocol {
        Output::HttpFlv => "HTTP-FLV",
        Output::WsFlv => "WebSocket-FLV",
        other => other.name(),
    }
}

pub(crate) fn flv_response(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    r
}

/// What the body tells its watchdog.
#[derive(Debug)]
struct Watch {
    /// The instant `*_ms` fields count from.
    base: Instant,
    /// When hyper last asked for a new batch (it had written the previous one), in ms
    /// after `base`.
    drained_ms: AtomicU64,
    /// Pieces handed to hyper so far (hyper asks for more only once it could write).
    pieces: AtomicU64,
    /// The body waits for the stream, not for the socket.
    waiting: AtomicBool,
}

impl Watch {
    fn new() -> Self {
        Self { base: Instant::now(), drained_ms: AtomicU64::new(0), pieces: AtomicU64::new(0), waiting: false.into() }
    }

    fn note_drained(&self, now: Instant) {
        let ms = u64::try_from(now.saturating_duration_since(self.base).as_millis()).unwrap_or(u64::MAX);
        self.drained_ms.store(ms, Ordering::Relaxed);
    }

    fn drained_at(&self) -> Instant {
        self.base + Duration::from_millis(self.drained_ms.load(Ordering::Relaxed))
    }
}

/// What the watchdog decides when it wakes.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    Stalled,
    /// Look again at this instant.
    WakeAt(Instant),
}

/// The stall policy, with time as an input: a viewer is stalled when hyper has neither
/// taken a piece nor asked for a new batch for `stall` although the body had data for it.
/// `pieces_seen` is the piece count at the previous look (updated here).
fn check_stall(watch: &Watch, pieces_seen: &mut u64, now: Instant, stall: Duration) -> Check {
    let pieces = watch.pieces.load(Ordering::Relaxed);
    let moved = std::mem::replace(pieces_seen, pieces) != pieces;
    if watch.waiting.load(Ordering::Relaxed) {
        // nothing to write: not stalled; a stall can start no earlier than now
        return Check::WakeAt(now + stall);
    }
    if moved {
        // hyper is working through a large batch: it took a piece since the last look
        return Check::WakeAt(now + (stall / 4).max(Duration::from_millis(10)));
    }
    let deadline = watch.drained_at() + stall;
    if now >= deadline {
        Check::Stalled
    } else {
        Check::WakeAt(deadline)
    }
}

/// Disconnects the viewer when [`check_stall`] says so; sleeps until the next instant that
/// can matter (no ticking). Ends with the body.
async fn watchdog(
    watch: Arc<Watch>,
    stream: Arc<Stream>,
    stall: Duration,
    kill: CancellationToken,
    gone: CancellationToken,
    peer: SocketAddr,
) {
    let mut pieces_seen = watch.pieces.load(Ordering::Relaxed);
    let mut wake = Instant::now() + stall;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {}
            _ = kill.cancelled() => break,
            // the body is gone: let the stream (and its ring) go at once
            _ = gone.cancelled() => break,
        }
        match check_stall(&watch, &mut pieces_seen, Instant::now(), stall) {
            Check::WakeAt(at) => wake = at,
            Check::Stalled => {
                warn!(%peer, stream = %stream.key(), "HTTP-FLV viewer stalled for {stall:?}; disconnecting");
                stream.count_eviction();
                kill.cancel();
                break;
            }
        }
    }
}

/// Sends the `on_done` notification when the viewer goes.
struct DoneNotice {
    ctx: Arc<HttpContext>,
    key: StreamKey,
    query: String,
    peer: SocketAddr,
    protocol: Output,
}

impl Drop for DoneNotice {
    fn drop(&mut self) {
        info!(peer = %self.peer, stream = %self.key, "{} viewer left", label(self.protocol));
        let req = AuthRequest::for_stream(Action::Done, &self.key, self.peer, self.protocol.name(), &self.query);
        self.ctx.svc.auth.notify(&self.ctx.svc.settings.get().apps.get(&self.key.app).auth, req);
    }
}

/// The endless FLV body: polls the viewer's subscription directly whenever hyper (or the
/// WebSocket-FLV writer) can take more, so a viewer costs one task and no channel.
pub(crate) struct FlvBody {
    sub: Subscription,
    writer: FlvWriter,
    events: Vec<HubEvent>,
    /// The pieces of the last batch of events (the buffer is reused batch after batch)...
    pieces: Vec<Piece>,
    /// ...of which this many went to hyper.
    sent: usize,
    /// The block headers are copied into when hyper writes the body (it takes `Bytes`).
    hyper_scratch: BytesMut,
    watch: Arc<Watch>,
    finished: bool,
    kill: CancellationToken,
    /// Cancels the watchdog when the body goes.
    _gone: tokio_util::sync::DropGuard,
    /// Dropped with the body: logs the departure and sends `on_done`.
    done: DoneNotice,
    /// Counts the viewer (and the bytes sent to it) while the body lives.
    guard: OutputGuard,
}

impl FlvBody {
    /// Waits until the body has pieces to send, turning the next batch of events into pieces
    /// when none are left; `Ready(false)` when the body is over. The pieces are then taken
    /// with [`Self::take_pieces`] (one call per batch, where hyper's `poll_frame` takes a
    /// piece per call).
    pub(crate) fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        loop {
            if self.sent < self.pieces.len() {
                return Poll::Ready(true);
            }
            match self.poll_batch(cx) {
                Poll::Ready(true) => {}
                other => return other,
            }
        }
    }

    /// The current batch's pieces not sent yet, at most `max`, moved out: their length in
    /// bytes and the pieces (straight into the socket's queue: no buffer in between).
    pub(crate) fn take_pieces(&mut self, max: usize) -> (u64, impl Iterator<Item = Piece> + '_) {
        let (start, end) = (self.sent, self.pieces.len().min(self.sent.saturating_add(max.max(1))));
        self.watch.pieces.fetch_add((end - start) as u64, Ordering::Relaxed);
        self.sent = end;
        let pieces = &mut self.pieces[start..end];
        let len = pieces.iter().map(|p| p.len() as u64).sum();
        (len, pieces.iter_mut().map(std::mem::take))
    }

    /// Turns the next batch of events into pieces; `Ready(false)` when the body is over.
    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if self.finished {
            return Poll::Ready(false);
        }
        let mut out = std::mem::take(&mut self.pieces);
        out.clear();
        self.sent = 0;
        // a join's burst (a GOP's events and pieces) is not kept reserved for the viewer's life
        out.shrink_to(KEEP_PIECES);
        self.events.clear();
        self.events.shrink_to(KEEP_EVENTS);
        // hyper wrote the previous batch and asks for more
        self.watch.note_drained(Instant::now());
        // (at shutdown the stream ends for its viewers: `Hub::end_for_viewers`)
        match self.sub.poll_recv_many(cx, &mut self.events, BATCH) {
            Poll::Pending => {
                self.pieces = out;
                self.watch.waiting.store(true, Ordering::Relaxed);
                return Poll::Pending;
            }
            Poll::Ready(Ok(more)) => {
                for ev in self.events.drain(..) {
                    self.writer.push(ev, &mut out);
                }
                // the batch's last tag is whole on the wire (a player waits for its size)
                self.writer.end_batch(&mut out);
                if !more {
                    self.finished = true;
                    info!(stream = %self.sub.stream().key(), "{} stream ended", label(self.done.protocol));
                }
            }
            Poll::Ready(Err(e)) => {
                warn!(stream = %self.sub.stream().key(), "{} {e}", label(self.done.protocol));
                self.finished = true;
                self.kill.cancel();
                return Poll::Ready(false);
            }
        }
        self.watch.waiting.store(false, Ordering::Relaxed);
        let len: u64 = out.iter().map(|p| p.len() as u64).sum();
        self.guard.count_bytes_out(len);
        self.pieces = out;
        Poll::Ready(true)
    }
}

impl hyper::body::Body for FlvBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            let this = &mut *self;
            if let Some(piece) = this.pieces.get_mut(this.sent) {
                let data = match std::mem::take(piece) {
                    Piece::Shared(b) => b,
                    // (hyper's path: HTTP/1.0, a head split over reads) headers are carved
                    // from a block, not allocated one by one
                    header @ Piece::Inline(_) => {
                        if this.hyper_scratch.capacity() < header.len() {
                            this.hyper_scratch.reserve(HYPER_SCRATCH);
                        }
                        this.hyper_scratch.extend_from_slice(&header);
                        this.hyper_scratch.split().freeze()
                    }
                };
                this.sent += 1;
                self.watch.pieces.fetch_add(1, Ordering::Relaxed);
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            match self.poll_batch(cx) {
                Poll::Ready(true) => {}
                Poll::Ready(false) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.finished && self.sent == self.pieces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stall_policy_steps_through_time() {
        // time is an input: step it, no sleeping
        let stall = Duration::from_secs(10);
        let w = Watch::new();
        let t0 = w.base;
        let mut seen = 0;
        w.note_drained(t0);
        assert_eq!(check_stall(&w, &mut seen, t0 + Duration::from_secs(3), stall), Check::WakeAt(t0 + stall));
        assert_eq!(check_stall(&w, &mut seen, t0 + stall, stall), Check::Stalled, "nothing taken for 10 s");
        // hyper takes pieces of a long batch: not stalled, look again soon
        w.pieces.fetch_add(1, Ordering::Relaxed);
        let t = t0 + Duration::from_secs(11);
        assert_eq!(check_stall(&w, &mut seen, t, stall), Check::WakeAt(t + stall / 4));
        // it drains the batch and asks for more; then the socket stays full
        w.note_drained(t);
        assert_eq!(check_stall(&w, &mut seen, t + stall / 4, stall), Check::WakeAt(t + stall));
        assert_eq!(check_stall(&w, &mut seen, t + stall, stall), Check::Stalled);
        // waiting for the stream is never a stall, however long
        w.waiting.store(true, Ordering::Relaxed);
        let late = t + Duration::from_secs(3600);
        assert_eq!(check_stall(&w, &mut seen, late, stall), Check::WakeAt(late + stall));
    }
}
