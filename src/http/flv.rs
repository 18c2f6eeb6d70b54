//! HTTP-FLV: a live, endless FLV body per viewer. A pump task turns hub
//! events into FLV pieces and hands them to the body through a small bounded
//! channel, one batch (all pieces of one wake-up) per message, so the body is
//! written only as fast as the socket takes it; a viewer whose socket stays
//! full is disconnected.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::routes::{not_found, refused, text};
use super::{Body, HttpContext};
use crate::auth::{Action, AuthRequest};
use crate::flv::FlvWriter;
use crate::hub::{Protocol, StreamKey, Subscription, ViewerGuard};
use crate::metrics::reason;

/// Batches (one per pump wake-up) buffered between the pump and the socket, per viewer.
const CHANNEL_BATCHES: usize = 16;
/// Hub events taken per wake-up.
const BATCH: usize = 64;

pub(crate) async fn serve(
    key: StreamKey,
    query: &str,
    head: bool,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    kill: CancellationToken,
) -> Response<Body> {
    let policy = ctx.apps.get(&key.app);
    if !policy.http_flv {
        return not_found();
    }
    let req = AuthRequest {
        action: Action::Play,
        app: &key.app,
        stream: &key.name,
        client: peer,
        protocol: "http_flv",
        query,
    };
    let check = if head { ctx.auth.check_keys(&policy.auth, &req) } else { ctx.auth.check(&policy.auth, &req).await };
    if let Err(denied) = check {
        warn!(%peer, stream = %key, "HTTP-FLV play denied: {denied}");
        return refused(ctx, &denied);
    }
    let Some(stream) = ctx.hub.get(&key) else {
        return not_found();
    };
    let viewers = stream.stats.viewers(Protocol::RtmpPlay) + stream.stats.viewers(Protocol::HttpFlv);
    if viewers >= ctx.limits.max_viewers_per_stream {
        warn!(%peer, stream = %key, "HTTP-FLV viewer refused: viewer limit reached");
        ctx.hub.metrics().rejected.get_or_create(&reason("viewer_limit")).inc();
        return text(StatusCode::SERVICE_UNAVAILABLE, "viewer limit reached\n");
    }
    let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
    if !head {
        let guard = stream.viewer_guard(Protocol::HttpFlv);
        let sub = stream.subscribe();
        let stall = Duration::from_millis(ctx.config.viewer_stall_timeout_ms);
        info!(%peer, stream = %key, "HTTP-FLV viewer joined");
        let ctx = ctx.clone();
        let query = query.to_string();
        tokio::spawn(async move {
            pump(sub, tx, guard, stall, kill, ctx.shutdown.clone(), peer).await;
            let req = AuthRequest {
                action: Action::Done,
                app: &key.app,
                stream: &key.name,
                client: peer,
                protocol: "http_flv",
                query: &query,
            };
            ctx.auth.notify(&ctx.apps.get(&key.app).auth, req);
        });
    }
    let mut r = Response::new(FlvBody { rx, batch: Vec::new().into_iter() }.boxed());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    r
}

async fn pump(
    mut sub: Subscription,
    tx: mpsc::Sender<Vec<Bytes>>,
    _guard: ViewerGuard,
    stall: Duration,
    kill: CancellationToken,
    shutdown: CancellationToken,
    peer: SocketAddr,
) {
    let stream = sub.stream().clone();
    let mut writer = FlvWriter::new();
    let mut events = Vec::with_capacity(BATCH);
    let mut open = true;
    while open {
        events.clear();
        tokio::select! {
            _ = shutdown.cancelled() => open = false,
            got = sub.recv_many(&mut events, BATCH) => match got {
                Ok(more) => open = more,
                Err(e) => {
                    warn!(%peer, stream = %stream.key(), "HTTP-FLV {e}");
                    kill.cancel();
                    return;
                }
            },
        }
        let mut pieces = Vec::with_capacity(events.len() * 2 + 1);
        for ev in &events {
            writer.push(ev, &mut pieces);
        }
        if !open {
            writer.finish(&mut pieces);
        }
        if pieces.is_empty() {
            continue;
        }
        let len: u64 = pieces.iter().map(|p| p.len() as u64).sum();
        match tokio::time::timeout(stall, tx.send(pieces)).await {
            Ok(Ok(())) => stream.count_bytes_out(Protocol::HttpFlv, len),
            Ok(Err(_)) => {
                info!(%peer, stream = %stream.key(), "HTTP-FLV viewer left");
                return;
            }
            Err(_) => {
                warn!(%peer, stream = %stream.key(), "HTTP-FLV viewer stalled for {stall:?}; disconnecting");
                stream.count_eviction();
                kill.cancel();
                return;
            }
        }
    }
    info!(%peer, stream = %stream.key(), "HTTP-FLV stream ended");
}

struct FlvBody {
    rx: mpsc::Receiver<Vec<Bytes>>,
    /// What is left of the batch being written.
    batch: std::vec::IntoIter<Bytes>,
}

impl hyper::body::Body for FlvBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        loop {
            if let Some(piece) = self.batch.next() {
                return Poll::Ready(Some(Ok(Frame::data(piece))));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => self.batch = batch.into_iter(),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
