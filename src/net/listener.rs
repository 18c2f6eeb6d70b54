//! The accept loop shared by the RTMP, RTMPS and HTTP listeners: binding with a
//! configurable backlog, connection limits (in all and per client address, shared
//! by the listeners that share a [`ConnectionLimiter`]), accepting in batches,
//! backoff on accept errors, and waiting for the connections to finish after
//! shutdown. Also the process's open-file limit, which every connection uses.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use futures_util::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::metrics::{protocol, reason, Metrics};

/// Connections taken from the accept queue per wake-up at most, before the loop yields:
/// a join storm is drained quickly, without starving the connections' own tasks.
const ACCEPT_BATCH: usize = 128;

/// Open files kept free of connection limits (listeners, HLS files, callbacks, logs).
const RESERVED_FDS: u64 = 256;

/// Binds a TCP listener on `addr` with a listen backlog of `backlog` (the kernel caps it at
/// `net.core.somaxconn`; the log says when it does).
pub fn bind(addr: SocketAddr, backlog: u32, what: &str) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP))
        .with_context(|| format!("creating the {what} socket"))?;
    socket.set_reuse_address(true).with_context(|| format!("{what}: SO_REUSEADDR"))?;
    socket.set_nonblocking(true).with_context(|| format!("{what}: non-blocking"))?;
    socket.bind(&addr.into()).with_context(|| format!("binding {what} listener on {addr}"))?;
    let backlog = backlog.clamp(1, i32::MAX as u32);
    socket.listen(backlog as i32).with_context(|| format!("{what}: listen"))?;
    if let Some(max) = somaxconn().filter(|&m| m < backlog) {
        warn!(backlog, somaxconn = max, "{what} listen backlog capped at {max} by net.core.somaxconn");
    }
    TcpListener::from_std(socket.into()).with_context(|| format!("{what}: registering the listener"))
}

fn somaxconn() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok()?.trim().parse().ok()
}

/// The process's open-file limit after [`raise_nofile_limit`], or `None` where unknown.
static NOFILE: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft open-file limit to the hard one (every connection is a file) and
/// remembers it for [`fd_limited`]. Returns (soft before, soft now).
pub fn raise_nofile_limit() -> Option<(u64, u64)> {
    #[cfg(unix)]
    {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit write/read a plain struct we own.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
            return None;
        }
        let before = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            // SAFETY: as above.
            if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
                lim.rlim_cur = lim.rlim_max;
            }
        }
        let now = lim.rlim_cur;
        NOFILE.store(usize::try_from(now).unwrap_or(usize::MAX), Ordering::Relaxed);
        Some((before, now))
    }
    #[cfg(not(unix))]
    None
}

/// The connection limits that fit the open-file limit: when `rtmp + http` (plus the
/// files kept in reserve) exceed it, both are scaled down in proportion, so that idle HTTP
/// viewers cannot take the files RTMP publishers need. Returns (rtmp, http).
pub fn fd_limited(rtmp: usize, http: usize) -> (usize, usize) {
    let nofile = NOFILE.load(Ordering::Relaxed);
    if nofile == 0 {
        return (rtmp, http);
    }
    let budget = nofile.saturating_sub(RESERVED_FDS as usize).max(2);
    let want = rtmp.saturating_add(http);
    if want <= budget {
        return (rtmp, http);
    }
    let share = |n: usize| ((n as u128 * budget as u128 / want as u128) as usize).max(1);
    (share(rtmp), share(http))
}

/// Logs whether the connection limits fit the open-file limit: a warning when configured
/// ones do not, a line of information when the built-in defaults (`defaults`, a ceiling
/// meant to be scaled to the machine) are scaled down.
pub fn check_fd_budget(rtmp: usize, http: usize, defaults: bool) {
    let nofile = NOFILE.load(Ordering::Relaxed);
    let (r, h) = fd_limited(rtmp, http);
    if (r, h) != (rtmp, http) && defaults {
        info!(
            nofile,
            "the default connection limits ({rtmp} RTMP + {http} HTTP) are scaled to the open-file limit of \
             {nofile} (less {RESERVED_FDS} kept free): {r} RTMP and {h} HTTP connections"
        );
    } else if (r, h) != (rtmp, http) {
        warn!(
            nofile,
            "limits.max_rtmp_connections ({rtmp}) + limits.max_http_connections ({http}) do not fit the open-file \
             limit of {nofile} (less {RESERVED_FDS} kept free): using {r} RTMP and {h} HTTP connections; raise \
             LimitNOFILE / ulimit -n to serve more"
        );
    }
}

/// Live connections of one or more listeners, in all and per client address.
#[derive(Debug, Default)]
pub struct ConnectionLimiter {
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

/// One admitted connection; frees its place when dropped.
#[derive(Debug)]
pub struct Admitted {
    limiter: Arc<ConnectionLimiter>,
    ip: Option<IpAddr>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(ip) = self.ip {
            let mut map = self.limiter.per_ip.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
    }
}

impl ConnectionLimiter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Admits a connection from `ip` unless `limit` connections are open, or `per_ip` from
    /// that address (0: no per-address limit). Err: the metric reason.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limit: usize, per_ip: usize) -> Result<Admitted, &'static str> {
        if self.total.fetch_add(1, Ordering::Relaxed) >= limit {
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("connection_limit");
        }
        if per_ip == 0 {
            return Ok(Admitted { limiter: self.clone(), ip: None });
        }
        let mut map = self.per_ip.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(ip).or_insert(0);
        if *n >= per_ip {
            drop(map);
            self.total.fetch_sub(1, Ordering::Relaxed);
            return Err("connection_limit_per_ip");
        }
        *n += 1;
        Ok(Admitted { limiter: self.clone(), ip: Some(ip) })
    }
}

/// Accepts connections until `shutdown`, refusing those beyond `limits()` = (in all,
/// per client address) concurrent ones counted in `limiter` (logged and counted; asked
/// per connection, so a reload applies), and runs `handle` for each in its own task with a
/// span named after `proto`. Returns once every connection ended.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    proto: &'static str,
    limits: impl Fn() -> (usize, usize),
    limiter: Arc<ConnectionLimiter>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    mut handle: F,
) where
    F: FnMut(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let connections = TaskTracker::new();
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        // take what else is waiting in the accept queue now, up to a batch
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(accepted) = next.take() {
            taken += 1;
            match accepted {
                Ok((sock, peer)) => {
                    let (limit, per_ip) = limits();
                    match limiter.admit(peer.ip(), limit, per_ip) {
                        Ok(admitted) => {
                            metrics.connections.get_or_create(&protocol(proto)).inc();
                            let _ = sock.set_nodelay(true);
                            let span = tracing::info_span!("conn", proto, %peer);
                            // the slot is held as long as the connection runs (`map`, not an
                            // async block: one awaiting `conn` would lay it out twice)
                            let conn = handle(sock, peer).map(move |()| drop(admitted));
                            connections.spawn(conn.instrument(span));
                        }
                        Err(why) => {
                            if why == "connection_limit" {
                                warn!(%peer, limit, "{proto} connection refused: connection limit reached");
                            } else {
                                warn!(%peer, per_ip, "{proto} connection refused: per-address connection limit reached");
                            }
                            metrics.rejected.get_or_create(&reason(why)).inc();
                        }
                    }
                }
                Err(e) => {
                    // e.g. out of file descriptors: back off instead of spinning
                    warn!(error = %e, "{proto} accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    break;
                }
            }
            if taken < ACCEPT_BATCH {
                next = listener.accept().now_or_never();
            }
        }
    }
    info!("{proto} listener stopped");
    // connections watch the same shutdown token and say goodbye on their own
    connections.close();
    connections.wait().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_counts_in_all_and_per_address() {
        let l = ConnectionLimiter::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = l.admit(a, 3, 2).unwrap();
        let _a2 = l.admit(a, 3, 2).unwrap();
        assert_eq!(l.admit(a, 3, 2).unwrap_err(), "connection_limit_per_ip");
        let _b1 = l.admit(b, 3, 2).unwrap();
        assert_eq!(l.admit(b, 3, 2).unwrap_err(), "connection_limit");
        assert_eq!(l.len(), 3);
        drop(a1);
        assert_eq!(l.len(), 2);
        let _a3 = l.admit(a, 3, 2).unwrap();
        // no per-address limit
        let l = ConnectionLimiter::new();
        let all: Vec<_> = (0..5).map(|_| l.admit(a, 5, 0).unwrap()).collect();
        assert_eq!(l.len(), 5);
        drop(all);
        assert!(l.is_empty());
        assert!(l.per_ip.lock().unwrap().is_empty());
    }

    #[test]
    fn connection_limits_are_scaled_into_the_open_file_limit() {
        NOFILE.store(1256, Ordering::Relaxed);
        assert_eq!(fd_limited(10_000, 10_000), (500, 500));
        assert_eq!(fd_limited(100, 300), (100, 300));
        assert_eq!(fd_limited(2_000, 6_000), (250, 750));
        NOFILE.store(0, Ordering::Relaxed);
        assert_eq!(fd_limited(10_000, 10_000), (10_000, 10_000));
    }
}
