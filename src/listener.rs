//! The accept loop shared by the RTMP, RTMPS and HTTP listeners: connection
//! limit, counting, backoff on accept errors, and waiting for the
//! connections to finish after shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{warn, Instrument};

use crate::metrics::{protocol, reason, Metrics};

/// Accepts connections until `shutdown`, refusing those beyond `limit()`
/// concurrent ones (logged and counted; asked per connection, so a reload applies), and runs `handle` for each in its own
/// task with a span named after `proto`. Returns once every connection ended.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    proto: &'static str,
    limit: impl Fn() -> usize,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let (sock, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    warn!(error = %e, "{proto} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let limit = limit();
        if connections.len() >= limit {
            warn!(%peer, limit, "{proto} connection refused: connection limit reached");
            metrics.rejected.get_or_create(&reason("connection_limit")).inc();
            continue;
        }
        metrics.connections.get_or_create(&protocol(proto)).inc();
        let _ = sock.set_nodelay(true);
        let span = tracing::info_span!("conn", proto, %peer);
        let conn = handle(sock, peer);
        connections.spawn(conn.instrument(span));
    }
    // connections watch the same shutdown token and say goodbye on their own
    connections.close();
    connections.wait().await;
}
