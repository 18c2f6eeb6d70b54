//! The HTTP edge (hyper 1): HTTP-FLV, HLS playlists and segments, the API,
//! metrics and health.
//!
//! - `routes`: matches a request to its handler (and serves HLS playlists and segments
//!   from the store); imports handlers, never the reverse.
//! - `flv`: the HTTP-FLV body (polls the viewer's hub subscription through the sans-IO
//!   FLV writer) and its stall watchdog.
//! - `direct`: a connection whose first request is a plain HTTP-FLV GET is served off
//!   hyper (a peek decides; anything else goes to hyper untouched); `socket` writes an FLV
//!   body straight to a socket, as HTTP chunks or as WebSocket frames (`ws` answers the
//!   upgrade and hands the connection to `socket`; `ws_frames`, a sans-IO leaf, reads
//!   the client's frames for `socket`: the imports go `ws` → `socket` → `ws_frames`).
//! - `api`, `player`: the JSON API and admin kick; the built-in player page and assets.
//! - `console`: what the console reads besides the API (events, stats, keyframes).
//! - `deadline`: what every connection is timed by (its first request head from the
//!   moment it is accepted, every write by the stall timeout).
//! - `response`, `path`: leaf helpers (responses, safe path segments) shared by all.

mod api;
mod console;
mod deadline;
mod direct;
mod files;
mod flv;
mod path;
mod player;
mod recorded;
mod response;
mod routes;
mod socket;
pub mod tls;
mod ws;
mod ws_frames;
pub(crate) use routes::with_track;

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

pub(crate) type Body = BoxBody<Bytes, Infallible>;

pub(crate) use deadline::HEADER_READ_TIMEOUT;

/// What the HTTP edge needs.
pub struct HttpContext {
    pub config: HttpConfig,
    /// Bearer token of the admin API; `None` turns it off.
    pub admin_token: Option<String>,
    /// Hub, settings, auth, metrics, shutdown.
    pub svc: Arc<crate::session::Services>,
    pub hls: HlsStore,
    /// The console's stats and keyframe cache (made empty: `Default`).
    pub console: console::Console,
    /// The RTMP and RTMPS ports, for the publish and play URLs the console shows.
    pub rtmp_port: u16,
    pub rtmps_port: Option<u16>,
}

/// Accepts HTTP (and HTTPS, with `https`) connections until shutdown, then waits for them
/// to finish.
pub async fn serve(listener: TcpListener, https: Option<(TcpListener, Arc<tls::Certs>)>, ctx: HttpContext) {
    let ctx = Arc::new(ctx);
    tokio::spawn(console::run(ctx.clone()));
    let https = https.map(|(l, certs)| tokio::spawn(tls::serve(l, certs, ctx.clone())));
    let (metrics, shutdown) = (ctx.svc.metrics.clone(), ctx.svc.shutdown.clone());
    let limits = connection_limits(&ctx);
    let limiter = crate::net::listener::ConnectionLimiter::new();
    crate::net::listener::accept_loop(listener, "http", limits, limiter, metrics, shutdown, |sock, peer| {
        connection(sock, peer, ctx.clone())
    })
    .await;
    if let Some(h) = https {
        let _ = h.await;
    }
}

/// The HTTP connection limits of the settings in force (`max_http_connections` as the
/// open-file limit allows, and per address), for the HTTP and HTTPS ports.
fn connection_limits(ctx: &HttpContext) -> impl Fn() -> (usize, usize) + use<> {
    let settings = ctx.svc.settings.clone();
    move || {
        let l = &settings.get().limits;
        let (_, http) = crate::net::listener::fd_limited(l.max_rtmp_connections, l.max_http_connections);
        (http, l.max_http_connections_per_ip)
    }
}

async fn connection(sock: tokio::net::TcpStream, peer: SocketAddr, ctx: Arc<HttpContext>) {
    // the first request head is due this long after the connection came, on every path
    let head_deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    // an HTTP-FLV GET is served off hyper (see `direct`); the rest is hyper's
    let Some(sock) = direct::serve_or_pass(sock, peer, &ctx, head_deadline).await else {
        return;
    };
    // boxed: hyper's connection state would otherwise size every direct viewer's task too
    Box::pin(with_hyper(sock, peer, ctx, head_deadline, false)).await
}

/// Runs a hyper connection future until it ends, is killed (a stalled HTTP-FLV viewer),
/// misses its first request head, or shutdown (then gracefully, within 2 s).
macro_rules! drive {
    ($conn:ident, $peer:ident, $ctx:ident, $kill:ident, $head_deadline:ident, $state:ident) => {{
        let conn = $conn;
        let (peer, ctx, kill, head_deadline, state) = (&$peer, &$ctx, &$kill, $head_deadline, &$state);
        tokio::pin!(conn);
        tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                if tls::h2_abuse(&*e) {
                    ctx.svc.metrics.limit_hit("http2_abuse");
                    if deadline::log_now() {
                        warn!(%peer, "HTTP/2 client closed with ENHANCE_YOUR_CALM: too many reset or refused streams, or CONTINUATION frames (logged at most once a second)");
                    }
                } else {
                    debug!(%peer, error = %e, "HTTP connection ended with an error");
                }
            }
        }
        _ = kill.cancelled() => debug!(%peer, "HTTP connection dropped"),
        _ = deadline::first_head_missed(head_deadline, &state) => {
            ctx.svc.metrics.limit_hit("http_header_timeout");
            debug!(%peer, "no whole request head within {HEADER_READ_TIMEOUT:?}; closing");
        }
        _ = ctx.svc.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
        }
    }};
}

/// Serves a connection with hyper: HTTP/1.1, or (`h2`, a TLS connection whose client
/// chose it by ALPN) HTTP/2 too.
async fn with_hyper<S>(sock: S, peer: SocketAddr, ctx: Arc<HttpContext>, head_deadline: tokio::time::Instant, h2: bool)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Cancelled to drop the connection outright (a stalled HTTP-FLV viewer).
    let kill = CancellationToken::new();
    let state = Arc::new(deadline::ConnState::default());
    let stall = Duration::from_millis(ctx.config.viewer_stall_timeout_ms);
    let io = deadline::WriteStall::new(sock, stall, state.clone(), peer, ctx.svc.metrics.clone());
    let svc_ctx = ctx.clone();
    let svc_kill = kill.clone();
    let svc_state = state.clone();
    let svc = service_fn(move |req| {
        svc_state.note_request();
        let ctx = svc_ctx.clone();
        let kill = svc_kill.clone();
        let state = svc_state.clone();
        async move { Ok::<_, Infallible>(routes::handle(req, peer, ctx, kill, &state).await) }
    });
    if h2 {
        let mut builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(64 * 1024);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(tls::H2_MAX_STREAMS)
            .max_header_list_size(tls::H2_MAX_HEADER_LIST)
            .max_pending_accept_reset_streams(tls::H2_MAX_PENDING_RESETS)
            .max_local_error_reset_streams(tls::H2_MAX_ERROR_RESETS)
            .max_send_buf_size(tls::H2_MAX_SEND_BUF)
            // WebSocket-FLV over HTTP/2 (RFC 8441)
            .enable_connect_protocol();
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
        drive!(conn, peer, ctx, kill, head_deadline, state);
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(io), svc)
            // WebSocket-FLV takes the connection over after a 101
            .with_upgrades();
        drive!(conn, peer, ctx, kill, head_deadline, state);
    }
}
