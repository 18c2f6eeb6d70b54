//! The session layer between the edges and the hub: what it takes to publish a stream or
//! to watch one, whatever the protocol. An edge (an RTMP connection, an HTTP request, a
//! relay) turns its protocol into these calls and maps a [`Refusal`] back to its protocol
//! (`NetStream.*` codes, HTTP statuses); the checks, their order and their logging of
//! auth live here once.
//!
//! - [`admit_viewer`]: keys → [`find`] → the `on_play` callback → the viewer limit, for every
//!   output.
//! - [`admit_publisher`]: keys and the `on_publish` callback, then the key (a publisher
//!   that is leaving, a silent one to take over, the reconnect grace), giving an [`Ingest`].
//! - [`find`]: the live stream of a key, here or (for an app with `pull`) from its origin.

mod codecs;
mod ingest;
pub mod output;
mod publish;

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio_util::sync::CancellationToken;

use crate::auth::{Action, AuthRequest, Authorizer, Denied};
use crate::config::LiveSettings;
use crate::hub::{Hub, PublishError, Stream, StreamKey};
use crate::metrics::Metrics;
pub use codecs::unannounced_codec;
pub use ingest::{Ingest, MAX_TRACKS};
pub use output::{Output, OutputGuard, Outputs};
pub use publish::{admit_publisher, PublishOptions};

/// What every edge and relay works with (one instance per gateway). Settings are read
/// through [`LiveSettings`] (replaced on reload); each component takes only its part.
pub struct Services {
    pub hub: Hub,
    /// Per-app policies and limits (replaced on reload).
    pub settings: Arc<LiveSettings>,
    pub auth: Authorizer,
    pub metrics: Arc<Metrics>,
    /// Viewers and bytes per output.
    pub outputs: Outputs,
    pub shutdown: CancellationToken,
    /// Streams pulled from origins on demand (`[apps.NAME] pull`).
    pub pulls: crate::relay::Pulls,
    /// Pushes of live streams to other servers.
    pub relays: crate::relay::Relays,
    /// Recordings.
    pub recorder: crate::record::Recorder,
    /// The stream directory shared with other nodes (`[cluster]`).
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Why a publish or a play was refused. Each edge maps it to its protocol.
#[derive(Debug, Error)]
pub enum Refusal {
    #[error("invalid app or stream name")]
    BadName,
    /// The app does not serve this output (e.g. `http_flv = false`).
    #[error("this app does not serve that")]
    Disabled,
    #[error("{0}")]
    Denied(Denied),
    #[error("stream {0} is not live")]
    NotFound(StreamKey),
    #[error("stream {key} has reached its limit of {max} viewers")]
    ViewerLimit { key: StreamKey, max: usize },
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The cluster directory: another node has the key, or the directory is unreachable.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClaimError),
}

impl Refusal {
    /// The `reason` label of `livegate_rejected_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadName => "bad_name",
            Refusal::Disabled | Refusal::NotFound(_) => "not_found",
            Refusal::Denied(d) => d.reason(),
            Refusal::ViewerLimit { .. } => "viewer_limit",
            Refusal::Publish(PublishError::AlreadyPublishing(_)) => "already_publishing",
            Refusal::Publish(PublishError::WaitingForPublisher(_)) => "waiting_for_publisher",
            Refusal::Publish(PublishError::ShuttingDown) => "shutting_down",
            Refusal::Publish(PublishError::TooManyStreams(_)) => "stream_limit",
            Refusal::Cluster(crate::cluster::ClaimError::Owned { .. }) => "cluster_owned",
            Refusal::Cluster(crate::cluster::ClaimError::Unavailable(_)) => "cluster_unavailable",
        }
    }
}

/// An admitted viewer: the stream, and its place among the stream's viewers (counted, by
/// the hub and per output, until dropped; it counts the bytes sent too).
pub struct Viewer {
    pub stream: Arc<Stream>,
    pub guard: OutputGuard,
}

/// Admits a viewer of `key` on `output` (`via`: the protocol as the auth callback names
/// it, e.g. `rtmps`). One order for every output: the keys (they tell nothing about
/// liveness), then [`find`] (a stream that is not live costs no callback), then the
/// `on_play` callback, then the stream's viewer limit.
pub async fn admit_viewer(
    svc: &Arc<Services>,
    key: &StreamKey,
    output: Output,
    via: &str,
    peer: SocketAddr,
    query: &str,
) -> Result<Viewer, Refusal> {
    let settings = svc.settings.get();
    let policy = settings.apps.get(&key.app);
    if matches!(output, Output::HttpFlv | Output::WsFlv) && !policy.http_flv {
        return Err(Refusal::Disabled);
    }
    let req = AuthRequest::for_stream(Action::Play, key, peer, via, query);
    svc.auth.check_keys(&policy.auth, &req).map_err(Refusal::Denied)?;
    find(svc, key, query).await.ok_or_else(|| Refusal::NotFound(key.clone()))?;
    svc.auth.check(&policy.auth, &req).await.map_err(Refusal::Denied)?;
    // (the stream may have ended, or been replaced, while the callback answered)
    let stream = svc.hub.get(key).ok_or_else(|| Refusal::NotFound(key.clone()))?;
    let max = settings.limits.max_viewers_per_stream;
    let guard =
        svc.outputs.admit(&stream, output, max).ok_or_else(|| Refusal::ViewerLimit { key: key.clone(), max })?;
    Ok(Viewer { stream, guard })
}

/// The live stream of `key`: the hub's, else, for an app that pulls from an origin, the
/// pulled one once it has its first keyframe (a pull is started, or joined, here). `query`
/// is the viewer's (it names the relays a pull from another livegate came through).
pub async fn find(svc: &Arc<Services>, key: &StreamKey, query: &str) -> Option<Arc<Stream>> {
    if let Some(s) = svc.hub.get(key) {
        return Some(s);
    }
    svc.pulls.find(svc, key, query).await
}
