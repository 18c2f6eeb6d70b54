//! HTTP-FLV: a live, endless FLV body per viewer. A pump task turns hub
//! events into FLV pieces and hands them to the body through a small bounded
//! channel, so the body is written only as fast as the socket takes it; a
//! viewer whose socket stays full is disconnected.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::Response;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::routes::not_found;
use super::{Body, HttpState};
use crate::flv::FlvWriter;
use crate::hub::{Protocol, StreamKey, Subscription, ViewerGuard};

/// Pieces buffered between the pump and the socket, per viewer.
const CHANNEL_PIECES: usize = 64;
/// Hub events taken per wake-up.
const BATCH: usize = 64;

pub(crate) fn serve(
    key: StreamKey,
    head: bool,
    peer: SocketAddr,
    state: &Arc<HttpState>,
    kill: CancellationToken,
) -> Response<Body> {
    let Ok(sub) = state.hub.subscribe(&key) else {
        return not_found();
    };
    let (tx, rx) = mpsc::channel(CHANNEL_PIECES);
    if !head {
        let guard = sub.stream().viewer_guard(Protocol::HttpFlv);
        let stall = Duration::from_millis(state.config.viewer_stall_timeout_ms);
        info!(%peer, stream = %key, "HTTP-FLV viewer joined");
        tokio::spawn(pump(sub, tx, guard, stall, kill, state.shutdown.clone(), peer));
    }
    let mut r = Response::new(FlvBody { rx }.boxed());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("video/x-flv"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-store"));
    r
}

async fn pump(
    mut sub: Subscription,
    tx: mpsc::Sender<Bytes>,
    _guard: ViewerGuard,
    stall: Duration,
    kill: CancellationToken,
    shutdown: CancellationToken,
    peer: SocketAddr,
) {
    let stream = sub.stream().clone();
    let mut writer = FlvWriter::new();
    let mut events = Vec::with_capacity(BATCH);
    let mut pieces = Vec::with_capacity(BATCH * 2);
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
        for ev in &events {
            writer.push(ev, &mut pieces);
        }
        if !open {
            writer.finish(&mut pieces);
        }
        for piece in pieces.drain(..) {
            let len = piece.len() as u64;
            match tokio::time::timeout(stall, tx.send(piece)).await {
                Ok(Ok(())) => {
                    stream.stats.bytes_out.fetch_add(len, Ordering::Relaxed);
                }
                Ok(Err(_)) => {
                    info!(%peer, stream = %stream.key(), "HTTP-FLV viewer left");
                    return;
                }
                Err(_) => {
                    warn!(%peer, stream = %stream.key(), "HTTP-FLV viewer stalled for {stall:?}; disconnecting");
                    stream.stats.evictions.fetch_add(1, Ordering::Relaxed);
                    kill.cancel();
                    return;
                }
            }
        }
    }
    info!(%peer, stream = %stream.key(), "HTTP-FLV stream ended");
}

struct FlvBody {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for FlvBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.rx.poll_recv(cx).map(|piece| piece.map(|b| Ok(Frame::data(b))))
    }
}
