//! HTTPS (`[https]`): every route of the HTTP port over TLS (rustls), with ALPN `h2` and
//! `http/1.1` (hyper-util's `auto` builder serves either on the connection). LL-HLS
//! blocking requests of one player multiplex over one HTTP/2 connection; HTTP-FLV is
//! served over both; WebSocket-FLV over HTTP/1.1.
//!
//! - The certificate and key (PEM) are read again on SIGHUP ([`Certs::reload`]):
//!   connections open keep theirs, new ones get the new pair; a pair that does not load
//!   keeps the old one, logged.
//! - A TLS handshake counts against the connection's first-request-head deadline
//!   ([`super::HEADER_READ_TIMEOUT`]) and the HTTP connection limits (the accept loop).
//! - HTTP/2 is bounded per connection: [`H2_MAX_STREAMS`] concurrent streams, a
//!   [`H2_MAX_HEADER_LIST`] header list (CONTINUATION floods end there), at most
//!   [`H2_MAX_PENDING_RESETS`] streams reset before they were handled (rapid reset) and
//!   [`H2_MAX_ERROR_RESETS`] streams this side had to reset (then the connection is closed
//!   with GOAWAY), and a bounded send buffer per stream. SETTINGS floods are refused by h2
//!   itself (one unacknowledged SETTINGS at a time).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::HttpContext;

/// Concurrent streams of one HTTP/2 connection (a player's LL-HLS requests take a few).
pub const H2_MAX_STREAMS: u32 = 128;
/// Bytes of one request's header list over HTTP/2.
pub const H2_MAX_HEADER_LIST: u32 = 16 * 1024;
/// Streams a client may reset before the server handled them (CVE-2023-44487).
pub const H2_MAX_PENDING_RESETS: usize = 32;
/// Streams the server may have to reset (client errors) before the connection is closed.
pub const H2_MAX_ERROR_RESETS: usize = 256;
/// Bytes buffered for sending per HTTP/2 stream.
pub const H2_MAX_SEND_BUF: usize = 256 * 1024;

/// Whether a connection's error is h2 closing it for abuse: a GOAWAY it sent with
/// ENHANCE_YOUR_CALM (rapid reset, too many refused streams, a CONTINUATION flood).
pub(crate) fn h2_abuse(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away() && h2.is_library() && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        cur = e.source();
    }
    false
}

/// `[https]`.
#[derive(Debug, Clone, serde::Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The certificate and key HTTPS serves with, replaced on SIGHUP.
pub struct Certs {
    cert: PathBuf,
    key: PathBuf,
    acceptor: RwLock<TlsAcceptor>,
}

fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading https.cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing https.cert {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "https.cert {} holds no certificate", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading https.key {}", key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("https certificate and key do not match")?;
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

impl Certs {
    pub fn load(config: &HttpsConfig) -> anyhow::Result<Self> {
        Ok(Self {
            cert: config.cert.clone(),
            key: config.key.clone(),
            acceptor: RwLock::new(acceptor(&config.cert, &config.key)?),
        })
    }

    /// Reads the certificate and key again (SIGHUP); a pair that does not load keeps the
    /// one in use.
    pub fn reload(&self) {
        match acceptor(&self.cert, &self.key) {
            Ok(a) => {
                *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = a;
                info!(cert = %self.cert.display(), "HTTPS certificate reloaded");
            }
            Err(e) => warn!("HTTPS certificate not reloaded, the one in use stays: {e:#}"),
        }
    }

    fn current(&self) -> TlsAcceptor {
        self.acceptor.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Accepts HTTPS connections until shutdown (the HTTP port's connection limits apply to
/// this port too, counted apart).
pub async fn serve(listener: TcpListener, certs: Arc<Certs>, ctx: Arc<HttpContext>) {
    let (metrics, shutdown) = (ctx.svc.metrics.clone(), ctx.svc.shutdown.clone());
    let limits = super::connection_limits(&ctx);
    let limiter = crate::net::listener::ConnectionLimiter::new();
    crate::net::listener::accept_loop(listener, "https", limits, limiter, metrics, shutdown, |sock, peer| {
        connection(sock, peer, ctx.clone(), certs.clone())
    })
    .await
}

async fn connection(sock: tokio::net::TcpStream, peer: SocketAddr, ctx: Arc<HttpContext>, certs: Arc<Certs>) {
    let head_deadline = tokio::time::Instant::now() + super::HEADER_READ_TIMEOUT;
    let tls = match tokio::time::timeout_at(head_deadline, certs.current().accept(sock)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, "TLS handshake failed: {e}");
            return;
        }
        Err(_) => {
            ctx.svc.metrics.limit_hit("https_handshake_timeout");
            debug!(%peer, "no TLS handshake within {:?}; closing", super::HEADER_READ_TIMEOUT);
            return;
        }
    };
    Box::pin(super::with_hyper(tls, peer, ctx, head_deadline, true)).await
}
