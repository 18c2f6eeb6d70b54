//! Wires the components together and owns shutdown. The only place that
//! knows every component; each receives only its own configuration.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::config::Config;
use crate::hls::HlsStore;
use crate::hub::Hub;

/// Bound listeners, ready to serve.
pub struct Bound {
    pub rtmp: TcpListener,
    pub http: TcpListener,
}

impl Bound {
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let rtmp = TcpListener::bind(config.rtmp.listen)
            .await
            .with_context(|| format!("binding RTMP listener on {}", config.rtmp.listen))?;
        let http = TcpListener::bind(config.http.listen)
            .await
            .with_context(|| format!("binding HTTP listener on {}", config.http.listen))?;
        Ok(Self { rtmp, http })
    }

    pub fn rtmp_addr(&self) -> std::io::Result<SocketAddr> {
        self.rtmp.local_addr()
    }

    pub fn http_addr(&self) -> std::io::Result<SocketAddr> {
        self.http.local_addr()
    }
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let bound = Bound::bind(&config).await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested");
        signal.cancel();
    });
    serve(config, bound, shutdown).await
}

/// Serves on already-bound listeners until `shutdown` is cancelled.
pub async fn serve(config: Config, bound: Bound, shutdown: CancellationToken) -> anyhow::Result<()> {
    info!(addr = %bound.rtmp_addr()?, "RTMP listening on {}", bound.rtmp_addr()?);
    info!(addr = %bound.http_addr()?, "HTTP listening on {}", bound.http_addr()?);
    let hub = Hub::new(config.hub.clone());
    let hls_store = HlsStore::new(config.hls.clone());
    let hls = tokio::spawn(crate::hls::service::run(hub.clone(), hls_store.clone(), shutdown.clone()));
    let rtmp = tokio::spawn(crate::ingest::serve(bound.rtmp, config.rtmp.clone(), hub.clone(), shutdown.clone()));
    let http =
        tokio::spawn(crate::http::serve(bound.http, config.http.clone(), hub.clone(), hls_store, shutdown.clone()));
    shutdown.cancelled().await;
    let grace = std::time::Duration::from_secs(5);
    let _ = tokio::time::timeout(grace, async {
        let _ = rtmp.await;
        let _ = hls.await;
        let _ = http.await;
    })
    .await;
    info!("stopped");
    Ok(())
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
