//! Wires the components together and owns shutdown. The only place that
//! knows every component; each receives only its own configuration.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Authorizer;
use crate::config::{Config, LiveSettings, RtmpsConfig};
use crate::hls::HlsStore;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::server::http::HttpContext;
use crate::server::rtmp::RtmpContext;

/// Bound listeners, ready to serve.
pub struct Bound {
    pub rtmp: TcpListener,
    pub rtmps: Option<(TcpListener, TlsAcceptor)>,
    pub http: TcpListener,
    pub https: Option<(TcpListener, Arc<crate::server::http::tls::Certs>)>,
}

impl Bound {
    /// Binds the listeners (backlogs `rtmp.backlog`, `http.backlog`; RTMPS takes the RTMP one).
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        use crate::net::listener::bind;
        let rtmp = bind(config.rtmp.listen, config.rtmp.backlog, "RTMP")?;
        let http = bind(config.http.listen, config.http.backlog, "HTTP")?;
        let rtmps = match &config.rtmps {
            Some(c) => Some((bind(c.listen, config.rtmp.backlog, "RTMPS")?, tls_acceptor(c)?)),
            None => None,
        };
        let https = match &config.https {
            Some(c) => {
                let certs = Arc::new(crate::server::http::tls::Certs::load(c)?);
                Some((bind(c.listen, config.http.backlog, "HTTPS")?, certs))
            }
            None => None,
        };
        Ok(Self { rtmp, rtmps, http, https })
    }

    pub fn rtmp_addr(&self) -> std::io::Result<SocketAddr> {
        self.rtmp.local_addr()
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// The HTTPS listener's address, when `[https]` is on.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|(l, _)| l.local_addr().ok())
    }
}

fn tls_acceptor(c: &RtmpsConfig) -> anyhow::Result<TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&c.cert)
        .with_context(|| format!("reading rtmps.cert {}", c.cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing rtmps.cert {}", c.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "rtmps.cert {} holds no certificate", c.cert.display());
    let key = PrivateKeyDer::from_pem_file(&c.key).with_context(|| format!("reading rtmps.key {}", c.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let tls = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("rtmps certificate and key do not match")?;
    Ok(TlsAcceptor::from(Arc::new(tls)))
}

/// Reads the configuration again for a reload (SIGHUP): the file and flags the gateway
/// started with.
pub type Reload = Box<dyn Fn() -> anyhow::Result<Config> + Send + Sync>;

/// Runs the gateway until SIGINT/SIGTERM; SIGHUP reloads what [`crate::config::Settings`] holds.
pub async fn run(config: Config, reload: Reload) -> anyhow::Result<()> {
    let bound = Bound::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        signal.cancel();
    });
    serve(config, bound, shutdown, Some(reload)).await
}

/// Serves on already-bound listeners until `shutdown` is cancelled, then
/// stops accepting, ends viewers, flushes HLS and returns within the grace time.
pub async fn serve(
    config: Config,
    bound: Bound,
    shutdown: CancellationToken,
    reload: Option<Reload>,
) -> anyhow::Result<()> {
    info!(addr = %bound.rtmp_addr()?, "RTMP listening on {}", bound.rtmp_addr()?);
    info!(addr = %bound.http_addr()?, "HTTP listening on {}", bound.http_addr()?);
    warn_if_publishing_is_open(&config);
    let rtmp_port = bound.rtmp_addr()?.port();
    let rtmps_port = bound.rtmps.as_ref().and_then(|(l, _)| l.local_addr().ok()).map(|a| a.port());
    crate::net::listener::check_fd_budget(
        config.limits.max_rtmp_connections,
        config.limits.max_http_connections,
        config.limits.default_connection_limits(),
    );
    let metrics = Arc::new(Metrics::new());
    let settings = Arc::new(LiveSettings::new(config.settings()));
    let hub = Hub::with_limits(config.hub.clone(), config.limits.streams(), metrics.clone());
    let auth = Authorizer::with_max_concurrent(config.limits.max_concurrent_callbacks);
    let hls_store = HlsStore::new(config.hls.clone(), settings.clone(), metrics.clone());
    if let Some(addr) = bound.https_addr() {
        info!(addr = %addr, "HTTPS listening on {addr} (HTTP/2 and HTTP/1.1)");
    }
    if let Some(reload) = reload {
        let certs = bound.https.as_ref().map(|(_, c)| c.clone());
        tokio::spawn(reload_on_hangup(config.clone(), reload, settings.clone(), hub.clone(), auth.clone(), certs));
    }
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::hls::run(hub.clone(), hls_store.clone(), shutdown.clone()));
    // relays read what other servers send with the bound publishers have
    let relay = crate::relay::RelayConfig { max_message_size: config.rtmp.max_message_size, ..config.relay.clone() };
    let relays = crate::relay::Relays::new(hub.clone(), relay.clone(), metrics.clone(), shutdown.clone())?;
    tasks.spawn(crate::relay::run(relays.clone(), settings.clone(), shutdown.clone()));
    let tls = Some(crate::relay::tls_connector(relay.ca_file.as_deref())?);
    if let Some(t) = &tls {
        auth.jwt().set_tls(t.clone());
    }
    tasks.spawn(keep_jwks_loaded(auth.clone(), settings.clone(), shutdown.clone()));
    let pulls = crate::relay::Pulls::new(Arc::new(relay), tls);
    let hls_viewers = hls_store.clone();
    pulls.set_hls_viewers(Box::new(move |k| hls_viewers.viewers(k)));
    let outputs = crate::session::Outputs::new(&metrics);
    let recorder = crate::record::Recorder::new(hub.clone(), settings.clone(), metrics.clone(), auth.clone());
    let cluster =
        crate::cluster::Cluster::new(&config.cluster, bound.rtmp_addr()?, bound.http_addr()?, metrics.clone())?;
    if let Some(c) = &cluster {
        tasks.spawn(c.clone().run(hub.clone(), shutdown.clone()));
    }
    let svc = Arc::new(crate::session::Services {
        hub: hub.clone(),
        settings: settings.clone(),
        auth,
        metrics,
        outputs,
        shutdown: shutdown.clone(),
        pulls: pulls.clone(),
        relays: relays.clone(),
        recorder: recorder.clone(),
        cluster,
    });
    tasks.spawn(pulls.run_static(svc.clone()));
    tasks.spawn(crate::record::run(recorder.clone(), shutdown.clone()));
    let ingest = Arc::new(RtmpContext {
        config: config.rtmp.clone(),
        svc: svc.clone(),
        unpublished_budget: Arc::new(crate::server::rtmp::UnpublishedBudget::new(settings.clone())),
        connections: crate::net::listener::ConnectionLimiter::new(),
        http_port: bound.http_addr()?.port(),
    });
    tasks.spawn(crate::server::rtmp::serve(bound.rtmp, ingest.clone(), None));
    if let Some((listener, acceptor)) = bound.rtmps {
        info!("RTMPS listening on {}", listener.local_addr()?);
        tasks.spawn(crate::server::rtmp::serve(listener, ingest, Some(acceptor)));
    }
    let viewers = hub.clone();
    let http = HttpContext {
        config: config.http.clone(),
        admin_token: config.admin.token.clone(),
        svc,
        hls: hls_store,
        console: Default::default(),
        rtmp_port,
        rtmps_port,
    };
    tasks.spawn(crate::server::http::serve(bound.http, bound.https, http));
    shutdown.cancelled().await;
    viewers.end_for_viewers();
    let grace = Duration::from_millis(config.lifecycle.shutdown_grace_ms);
    let drained = tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!("shutdown grace of {grace:?} elapsed; exiting anyway");
    }
    info!("stopped");
    Ok(())
}

/// Loads the JWT key sets the settings name (`jwt_jwks`, of `[auth]` and every app) at
/// start, and those a reload adds within 30 s; each is refreshed when it is used and stale.
async fn keep_jwks_loaded(auth: Authorizer, settings: Arc<LiveSettings>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let s = settings.get();
        let mut sources: Vec<String> = s
            .apps
            .iter()
            .map(|(_, p)| &p.auth)
            .chain([&s.apps.get("").auth])
            .filter_map(|a| a.jwt_jwks.clone())
            .collect();
        sources.sort();
        sources.dedup();
        for source in sources.iter().filter(|s| !s.is_empty()) {
            auth.jwt().warm(source);
        }
    }
}

/// Says once, at start, when anyone who reaches the RTMP port may publish (the built-in
/// default), and which setting closes it.
fn warn_if_publishing_is_open(config: &Config) {
    let apps = config.apps();
    let open_apps: Vec<&str> =
        config.apps.keys().filter(|name| apps.get(name).auth.publishing_is_open()).map(String::as_str).collect();
    if config.auth.publishing_is_open() {
        warn!(
            "publishing is open to everyone: any client that reaches the RTMP port may publish any stream name (and \
             continue any stream whose publisher dropped, within the reconnect grace); set [auth] publish_keys (or \
             [auth] on_publish) to close it"
        );
    } else if !open_apps.is_empty() {
        warn!(
            "publishing is open to everyone for app(s) {}: set publish_keys (or on_publish) in their [apps.NAME.auth] \
             to close it",
            open_apps.join(", ")
        );
    }
}

/// On each SIGHUP: reads the configuration again and, when it is valid, swaps in its
/// [`crate::config::Settings`] (auth, per-app policies, limits); live streams and connections are left
/// alone. Changed settings that need a restart are named in the log and not applied.
async fn reload_on_hangup(
    mut running: Config,
    reload: Reload,
    settings: Arc<LiveSettings>,
    hub: Hub,
    auth: Authorizer,
    certs: Option<Arc<crate::server::http::tls::Certs>>,
) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                warn!("cannot watch SIGHUP, configuration reload is off: {e}");
                return;
            }
        };
        while hangup.recv().await.is_some() {
            // the HTTPS certificate and key are read again whatever the configuration says
            if let Some(c) = &certs {
                c.reload();
            }
            let new = match reload() {
                Ok(new) => new,
                Err(e) => {
                    warn!("configuration reload failed, the running configuration stays: {e:#}");
                    continue;
                }
            };
            let restart = running.restart_needed(&new);
            running = running.reloaded(new);
            settings.set(running.settings());
            hub.set_limits(running.limits.streams());
            auth.set_max_concurrent(running.limits.max_concurrent_callbacks);
            if restart.is_empty() {
                info!("configuration reloaded (auth, apps, limits)");
            } else {
                warn!(
                    "configuration reloaded (auth, apps, limits); changed {} only take effect after a restart",
                    restart.join(", ")
                );
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (running, reload, settings, hub, auth, certs);
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
