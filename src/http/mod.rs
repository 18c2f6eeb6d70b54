//! The HTTP edge (hyper 1): HTTP-FLV, HLS playlists and segments, the API, metrics and health. Thin: it
//! routes requests and pumps hub events through the sans-IO FLV writer.

mod api;
mod flv;
mod player;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::HttpConfig;
use crate::hls::HlsStore;
use crate::hub::Hub;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) struct HttpState {
    pub config: HttpConfig,
    pub hub: Hub,
    pub hls: HlsStore,
    pub shutdown: CancellationToken,
}

/// Accepts HTTP connections until `shutdown`.
pub async fn serve(listener: TcpListener, config: HttpConfig, hub: Hub, hls: HlsStore, shutdown: CancellationToken) {
    let state = Arc::new(HttpState { config, hub, hls, shutdown: shutdown.clone() });
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    tokio::spawn(connection(sock, peer, state.clone()));
                }
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn connection(sock: tokio::net::TcpStream, peer: SocketAddr, state: Arc<HttpState>) {
    // Cancelled to drop the connection outright (a stalled HTTP-FLV viewer).
    let kill = CancellationToken::new();
    let svc_state = state.clone();
    let svc_kill = kill.clone();
    let svc = service_fn(move |req| {
        let state = svc_state.clone();
        let kill = svc_kill.clone();
        async move { Ok::<_, Infallible>(routes::handle(req, peer, state, kill).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10))
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(sock), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
        }
        _ = kill.cancelled() => debug!(%peer, "HTTP connection dropped"),
        _ = state.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
