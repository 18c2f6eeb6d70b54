//! Relays: pushing live streams to other servers (restream). A push is a reader of its
//! stream, like a viewer: the hub knows nothing of it. The driver ([`run`]) is told of every
//! stream that starts and starts one task per push target of its application
//! (`[relay] push`, or `[apps.NAME] push`); the admin API adds and removes targets of a
//! live stream ([`Relays::add`], [`Relays::remove`]). A stream's pushes end with it (after
//! its reconnect grace).

pub mod pull;
pub mod push;
pub mod target;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::LiveSettings;
use crate::hub::{lock, Hub, Stream, StreamKey};
pub use pull::{PullScheme, PullUrl, Pulls};
pub use push::{PushHandle, PushStatus};
pub use target::{PushUrl, TargetError};

/// `[relay]`: push targets for every app and how pushes behave.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Push targets of every app's streams (`{app}` and `{stream}` are replaced); an app's
    /// own `[apps.NAME] push` replaces this list for it.
    pub push: Vec<String>,
    /// Bytes a target's queue may hold; a frame that does not fit is dropped with what
    /// follows up to the next keyframe (a skip).
    pub queue_bytes: usize,
    /// TCP connect, TLS handshake and each step of the RTMP flow must finish within this.
    pub connect_timeout_ms: u64,
    /// A target that takes no byte for this long while bytes wait is reconnected.
    pub stall_timeout_ms: u64,
    /// Pushes per live stream, wherever they come from (config, API, callback).
    pub max_pushes_per_stream: usize,
    /// PEM file of CA certificates RTMPS targets are checked against, besides the
    /// platform's roots.
    pub ca_file: Option<PathBuf>,
    /// A viewer of a stream being pulled waits this long for its first keyframe, then gets
    /// not-found.
    pub pull_wait_ms: u64,
    /// A pull stops this long after its last viewer left (per app: `[apps.NAME]
    /// pull_idle_ms`).
    pub pull_idle_ms: u64,
    /// Streams pulled from one origin (host:port) at once; more get not-found.
    pub max_pulls_per_origin: usize,
    /// The largest RTMP message a target or origin may send: `rtmp.max_message_size`,
    /// handed down at start (not a setting of its own).
    #[serde(skip)]
    pub max_message_size: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            push: Vec::new(),
            queue_bytes: 8 << 20,
            connect_timeout_ms: 10_000,
            stall_timeout_ms: 10_000,
            max_pushes_per_stream: 16,
            ca_file: None,
            pull_wait_ms: 5_000,
            pull_idle_ms: 10_000,
            max_pulls_per_origin: 100,
            max_message_size: 8 << 20,
        }
    }
}

impl RelayConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }

    pub fn stall_timeout(&self) -> Duration {
        Duration::from_millis(self.stall_timeout_ms.max(1))
    }

    /// Checks every target template (with sample names), so a bad URL stops the start or
    /// reload with its reason.
    pub fn validate_targets<'a>(targets: impl IntoIterator<Item = &'a String>) -> anyhow::Result<()> {
        for t in targets {
            PushUrl::parse(t, "app", "stream")?;
        }
        Ok(())
    }
}

/// The live pushes of every stream. Cheap to clone.
#[derive(Clone)]
pub struct Relays {
    inner: Arc<RelaysInner>,
}

struct RelaysInner {
    hub: Hub,
    metrics: Arc<crate::metrics::Metrics>,
    config: Arc<RelayConfig>,
    tls: Option<tokio_rustls::TlsConnector>,
    /// For targets whose URL says `tls_verify=0`: no certificate check.
    tls_unverified: tokio_rustls::TlsConnector,
    shutdown: CancellationToken,
    next_id: AtomicU64,
    pushes: Mutex<HashMap<StreamKey, Vec<Arc<PushHandle>>>>,
}

/// Why a push could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error("stream {0} is not live")]
    NotLive(StreamKey),
    #[error("stream {0} already has {1} pushes (relay.max_pushes_per_stream)")]
    TooMany(StreamKey, usize),
}

impl Relays {
    pub fn new(
        hub: Hub,
        config: RelayConfig,
        metrics: Arc<crate::metrics::Metrics>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let tls = Some(tls_connector(config.ca_file.as_deref())?);
        Ok(Self {
            inner: Arc::new(RelaysInner {
                hub,
                metrics,
                config: Arc::new(config),
                tls,
                tls_unverified: tls_connector_unverified()?,
                shutdown,
                next_id: AtomicU64::new(1),
                pushes: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Starts a push of the live stream `key` to `template` (`{app}`/`{stream}` replaced).
    pub fn add(&self, key: &StreamKey, template: &str, source: &'static str) -> Result<PushStatus, AddError> {
        let stream = self.inner.hub.get(key).filter(|s| !s.is_ended()).ok_or_else(|| AddError::NotLive(key.clone()))?;
        self.start(stream, template, source)
    }

    fn start(&self, stream: Arc<Stream>, template: &str, source: &'static str) -> Result<PushStatus, AddError> {
        let key = stream.key().clone();
        let url = PushUrl::parse(template, &key.app, &key.name)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = PushHandle::new(id, &key, &url, source);
        {
            let mut pushes = lock(&self.inner.pushes);
            let list = pushes.entry(key.clone()).or_default();
            list.retain(|h| lock(&h.status).state != "stopped");
            // a callback answers again when a publisher comes back within the grace: a
            // target the stream already goes to is not pushed twice
            if let Some(same) = list.iter().find(|h| source == "callback" && h.target == url) {
                return Ok(same.snapshot());
            }
            let max = self.inner.config.max_pushes_per_stream;
            if list.len() >= max {
                return Err(AddError::TooMany(key, max));
            }
            list.push(handle.clone());
        }
        let status = handle.snapshot();
        handle.report(&self.inner.metrics, &status);
        let url_tls_verify = url.tls_verify;
        if !url_tls_verify {
            warn!(stream = %key, target = %url, "push target with tls_verify=0: its certificate is not checked");
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            push::run(
                inner.hub.clone(),
                stream,
                url,
                handle.clone(),
                inner.config.clone(),
                inner.metrics.clone(),
                if url_tls_verify { inner.tls.clone() } else { Some(inner.tls_unverified.clone()) },
                inner.shutdown.clone(),
            )
            .await;
            // forget it once stopped (the stream ended or the push was removed)
            let mut pushes = lock(&inner.pushes);
            if let Some(list) = pushes.get_mut(&key) {
                list.retain(|h| !Arc::ptr_eq(h, &handle));
                if list.is_empty() {
                    pushes.remove(&key);
                }
            }
        });
        Ok(status)
    }

    /// Stops push `id` of `key`; false when there is none.
    pub fn remove(&self, key: &StreamKey, id: u64) -> bool {
        let pushes = lock(&self.inner.pushes);
        let Some(h) = pushes.get(key).and_then(|l| l.iter().find(|h| lock(&h.status).id == id)) else {
            return false;
        };
        h.stop.cancel();
        true
    }

    /// The pushes of `key`, for `/api/streams`.
    pub fn statuses(&self, key: &StreamKey) -> Vec<PushStatus> {
        let pushes = lock(&self.inner.pushes);
        pushes.get(key).map(|l| l.iter().map(|h| h.snapshot()).collect()).unwrap_or_default()
    }

    /// Every push's status, for `/metrics`: (stream, status).
    pub fn all(&self) -> Vec<(StreamKey, PushStatus)> {
        let pushes = lock(&self.inner.pushes);
        pushes.iter().flat_map(|(k, l)| l.iter().map(move |h| (k.clone(), h.snapshot()))).collect()
    }
}

/// Starts the configured pushes of every stream that starts, until `shutdown`.
pub async fn run(relays: Relays, settings: Arc<LiveSettings>, shutdown: CancellationToken) {
    let mut new_streams = relays.inner.hub.watch_new_streams();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = new_streams.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        // the tracks of a multitrack publish are pushed only when a target asks (?track=N)
        if stream.key().split_track().is_some() {
            continue;
        }
        let targets = settings.get().apps.get(&stream.key().app).push.clone();
        for t in &targets {
            match relays.start(stream.clone(), t, "config") {
                Ok(s) => info!(stream = %stream.key(), target = %s.url, "push added from the configuration"),
                Err(e) => warn!(stream = %stream.key(), "push not started: {e}"),
            }
        }
    }
}

/// The client session and `connect` of a relay connection (a push publishes, a pull plays
/// `name`): livegate's codecs announced in `fourCcList` (it can send and ingest all of
/// them: a target answers with its own list, an Enhanced RTMP origin may send them), what
/// the other server sends bounded by `rtmp.max_message_size`.
pub(crate) fn relay_client(
    config: &RelayConfig,
    role: crate::rtmp::ClientRole,
    tc_url: String,
    app: String,
    name: String,
) -> (crate::rtmp::ClientSession, crate::rtmp::ConnectParams) {
    let client = crate::rtmp::ClientSession::new(crate::rtmp::ClientConfig {
        rng_seed: rand::random(),
        max_message_size: config.max_message_size,
        ..crate::rtmp::ClientConfig::default()
    });
    let mut params = crate::rtmp::ConnectParams::new(role, tc_url, app, name);
    params.response_timeout = config.connect_timeout();
    params.fourcc_list = crate::rtmp::session::VIDEO_FOURCCS
        .iter()
        .chain(&crate::rtmp::session::AUDIO_FOURCCS)
        .map(|s| s.to_string())
        .collect();
    (client, params)
}

/// TLS for RTMPS targets: the platform's root certificates and `ca_file`'s, SNI, the
/// certificate checked against the target's host name.
pub(crate) fn tls_connector(ca_file: Option<&std::path::Path>) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        warn!("reading the platform's root certificates: {e}");
    }
    let (added, _ignored) = roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .with_context(|| format!("reading relay.ca_file {}", path.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing relay.ca_file {}", path.display()))?;
        anyhow::ensure!(!certs.is_empty(), "relay.ca_file {} holds no certificate", path.display());
        for c in certs {
            roots.add(c).with_context(|| format!("relay.ca_file {}", path.display()))?;
        }
    } else if added == 0 {
        warn!("no platform root certificates found: RTMPS push targets will fail their certificate check (set relay.ca_file)");
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// TLS for RTMPS targets that opted out of the certificate check (`tls_verify=0`): the
/// handshake's signatures are still verified, the certificate chain and name are not.
fn tls_connector_unverified() -> anyhow::Result<tokio_rustls::TlsConnector> {
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyCertificate(provider.clone()));
    let tls = tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

#[derive(Debug)]
struct AnyCertificate(Arc<tokio_rustls::rustls::crypto::CryptoProvider>);

impl tokio_rustls::rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls_pki_types::CertificateDer<'_>,
        _intermediates: &[rustls_pki_types::CertificateDer<'_>],
        _server_name: &rustls_pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls_pki_types::UnixTime,
    ) -> Result<tokio_rustls::rustls::client::danger::ServerCertVerified, tokio_rustls::rustls::Error> {
        Ok(tokio_rustls::rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &tokio_rustls::rustls::DigitallySignedStruct,
    ) -> Result<tokio_rustls::rustls::client::danger::HandshakeSignatureValid, tokio_rustls::rustls::Error> {
        tokio_rustls::rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<tokio_rustls::rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
