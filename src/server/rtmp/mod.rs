//! The RTMP edge: accepts TCP (and TLS) connections and drives one sans-IO
//! `rtmp::ServerSession` per connection, connecting publishers and RTMP
//! viewers to the hub. Protocol logic lives in `rtmp`, demuxing in `flv`,
//! fan-out in `hub`, decisions in `auth`. Here: the listener and the budget of
//! unfinished messages of connections that do not publish; `conn` is one
//! connection's `select!` loop, `publish` and `play` what each role does (writes go
//! through `net::writer`).

mod conn;
mod play;
mod publish;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::warn;

use crate::config::{LiveSettings, RtmpConfig};
use conn::Connection;

/// What an RTMP listener needs; shared by its connections.
pub struct RtmpContext {
    pub config: RtmpConfig,
    /// Hub, settings, auth, metrics, shutdown.
    pub svc: Arc<crate::session::Services>,
    /// The budget of unfinished messages of connections that do not publish, all listeners
    /// together (`limits.unpublished_message_bytes`).
    pub unpublished_budget: Arc<UnpublishedBudget>,
    /// Open RTMP and RTMPS connections together (one `limits.max_rtmp_connections`).
    pub connections: Arc<crate::net::listener::ConnectionLimiter>,
    /// The HTTP listener's port, for the page answering HTTP on the RTMP port.
    pub http_port: u16,
}

/// Accepts RTMP connections (RTMPS when `tls` is given) until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, tls: Option<TlsAcceptor>) {
    let proto: &'static str = if tls.is_some() { "rtmps" } else { "rtmp" };
    let (metrics, shutdown) = (ctx.svc.metrics.clone(), ctx.svc.shutdown.clone());
    let settings = ctx.svc.settings.clone();
    let limits = move || {
        let l = &settings.get().limits;
        let (rtmp, _) = crate::net::listener::fd_limited(l.max_rtmp_connections, l.max_http_connections);
        (rtmp, l.max_rtmp_connections_per_ip)
    };
    let limiter = ctx.connections.clone();
    crate::net::listener::accept_loop(listener, proto, limits, limiter, metrics, shutdown, |sock, peer| {
        let ctx = ctx.clone();
        let tls = tls.clone();
        async move {
            let local = sock.local_addr().ok();
            let Some(acceptor) = tls else {
                return Connection::new(sock, peer, local, proto, ctx).run().await;
            };
            // boxed: the TLS state would otherwise size every plain connection's task
            let timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
            match tokio::time::timeout(timeout, Box::pin(acceptor.accept(sock))).await {
                Ok(Ok(tls)) => Box::pin(Connection::new(tls, peer, local, proto, ctx).run()).await,
                Ok(Err(e)) => {
                    ctx.svc.metrics.handshake_failures.inc();
                    warn!(%peer, "closing RTMPS connection: TLS handshake failed: {e}");
                }
                Err(_) => {
                    ctx.svc.metrics.handshake_failures.inc();
                    warn!(%peer, "closing RTMPS connection: TLS handshake timed out");
                }
            }
        }
    })
    .await
}

/// The process-wide budget of unfinished RTMP messages of connections that do not
/// publish (`limits.unpublished_message_bytes`, read at each reservation so a reload
/// applies).
#[derive(Debug)]
pub struct UnpublishedBudget {
    used: AtomicUsize,
    settings: Arc<LiveSettings>,
}

impl UnpublishedBudget {
    pub fn new(settings: Arc<LiveSettings>) -> Self {
        Self { used: AtomicUsize::new(0), settings }
    }
}

impl crate::rtmp::chunk::SharedBudget for UnpublishedBudget {
    fn try_reserve(&self, bytes: usize) -> bool {
        let limit = self.settings.get().limits.unpublished_message_bytes;
        self.used
            .try_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(bytes).filter(|&n| n <= limit))
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}
