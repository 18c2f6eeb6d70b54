//! Pulls: an edge serves a stream it does not have by reading it from an origin
//! (`[apps.NAME] pull = "rtmp://origin:1935/live"` or `"http://origin:8080/live"`, the stream
//! name appended). A pull is a publisher that happens to read from another server: it goes
//! through the same publish seam ([`crate::session::admit_publisher`]), so HLS, the GOP
//! cache, viewer auth, metrics and the reconnect grace apply to a pulled stream as to any.
//!
//! - The first viewer of a key that is not live here, on any output, starts one pull
//!   ([`Pulls::find`], called by [`crate::session::find`]); everyone else joins it. A viewer
//!   waits for the first keyframe up to `relay.pull_wait_ms`, then gets not-found.
//! - The pull stops `pull_idle_ms` after its last viewer (HLS clients count while they
//!   fetch). `[apps.NAME] pull_always` names streams pulled from the start, whatever their
//!   viewers.
//! - When the origin goes away (its publisher left and did not come back, a network
//!   failure), the stream waits out its reconnect grace here while the pull tries again
//!   with backoff; viewers stay on one timeline when it comes back.
//! - Loops: a pull names the chain of livegate nodes it comes through in its request
//!   (`livegate_via=NODE,...` in the play query); a node never pulls for a request that
//!   already went through it, nor through more than [`MAX_HOPS`] nodes.
//! - Bounds: pulls are publishers (`limits.max_streams`), at most
//!   `relay.max_pulls_per_origin` per origin, and what an origin sends meets the bounds of any
//!   publisher (`rtmp.max_message_size`, the same demuxer).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{info, warn};

use super::RelayConfig;
use crate::flv::file::TagReader;
use crate::hub::{lock, Stream, StreamKey};
use crate::rtmp::{ClientEvent, ClientRole, MediaKind};
use crate::session::{admit_publisher, Ingest, PublishOptions, Services};

/// The query parameter naming the livegate nodes a pull came through.
pub const VIA: &str = "livegate_via";
/// Livegate nodes a pull may come through (origin → edge → edge ... ).
pub const MAX_HOPS: usize = 4;
/// How often a pull looks at its viewers.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// Backoff between attempts while the stream waits out its grace.
const RETRY_MIN: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// The same for a pull the cluster directory resolved: each attempt is a lookup first
/// (one Redis round trip), and a stream that moved is found sooner.
const RETRY_MAX_RESOLVED: Duration = Duration::from_millis(500);
/// How often a resolved pull asks the cluster directory whether its stream moved, and how
/// long it waits for the answer.
const MOVED_CHECK: Duration = Duration::from_secs(1);
const MOVED_LOOKUP: Duration = Duration::from_millis(100);
/// An origin that sends nothing for this long while playing is dropped and tried again.
const ORIGIN_SILENT: Duration = Duration::from_secs(10);
/// Bytes of an origin's HTTP answer head.
const MAX_HEAD: usize = 16 * 1024;

/// Where an app's streams are pulled from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullUrl {
    pub scheme: PullScheme,
    pub host: String,
    pub port: u16,
    /// The origin's application (RTMP) or path prefix (HTTP-FLV), without slashes at the ends.
    pub app: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullScheme {
    Rtmp,
    Rtmps,
    /// HTTP-FLV: `GET /APP/STREAM.flv`.
    HttpFlv,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("pull origin {url:?}: {why}")]
pub struct PullUrlError {
    url: String,
    why: &'static str,
}

impl PullUrl {
    /// `rtmp://HOST[:PORT]/APP`, `rtmps://HOST[:PORT]/APP` or `http://HOST[:PORT]/PATH`.
    pub fn parse(url: &str) -> Result<Self, PullUrlError> {
        let err = |why| PullUrlError { url: url.to_string(), why };
        if url.len() > 2048 || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(err("longer than 2048 bytes or holds spaces or control characters"));
        }
        let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("rtmp://") {
            (PullScheme::Rtmp, r, 1935)
        } else if let Some(r) = url.strip_prefix("rtmps://") {
            (PullScheme::Rtmps, r, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (PullScheme::HttpFlv, r, 80)
        } else {
            return Err(err("the scheme must be rtmp://, rtmps:// or http://"));
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        // `[v6]:port`, `[v6]`, `host:port`, `host`
        let (host, port) = match authority.strip_prefix('[').and_then(|a| a.split_once(']')) {
            Some((h, "")) => (h, None),
            Some((h, p)) => (h, Some(p.strip_prefix(':').ok_or_else(|| err("bad host"))?)),
            None => match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| err("the port must be 1 to 65535"))?,
            None => default_port,
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', '/', '?', '#']) {
            return Err(err("no host"));
        }
        let app = path.trim_matches('/');
        if app.is_empty() || app.contains(['?', '#']) {
            return Err(err("the path must name the origin's app: /APP"));
        }
        Ok(Self { scheme, host: host.to_string(), port, app: app.to_string() })
    }

    fn origin(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for PullUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = match self.scheme {
            PullScheme::Rtmp => "rtmp",
            PullScheme::Rtmps => "rtmps",
            PullScheme::HttpFlv => "http",
        };
        write!(f, "{scheme}://{}:{}/{}", self.host, self.port, self.app)
    }
}

/// A pull's progress, as its viewers wait for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Starting,
    /// The stream has its first keyframe here.
    Live,
    /// The pull is over (the origin does not have the stream, or it ended).
    Over,
}

struct Pull {
    origin: String,
    phase: watch::Sender<Phase>,
    /// A publisher of the key came to this node: the pull hands the stream over.
    yield_to_publisher: Arc<tokio::sync::Notify>,
    /// The origin came from the cluster directory (only such pulls yield).
    resolved: bool,
}

/// The pulls of this gateway. Cheap to clone.
#[derive(Clone)]
pub struct Pulls {
    inner: Arc<PullsInner>,
}

/// How many HLS clients a stream has (the HLS store knows).
pub type HlsViewers = Box<dyn Fn(&StreamKey) -> usize + Send + Sync>;

struct PullsInner {
    /// This node's name in relay chains (random per process).
    node: String,
    config: Arc<RelayConfig>,
    tls: Option<tokio_rustls::TlsConnector>,
    active: Mutex<HashMap<StreamKey, Pull>>,
    hls_viewers: OnceLock<HlsViewers>,
}

impl Pulls {
    pub fn new(config: Arc<RelayConfig>, tls: Option<tokio_rustls::TlsConnector>) -> Self {
        Self {
            inner: Arc::new(PullsInner {
                node: format!("{:016x}", rand::random::<u64>()),
                config,
                tls,
                active: Mutex::new(HashMap::new()),
                hls_viewers: OnceLock::new(),
            }),
        }
    }

    /// A publisher of `key` came to this node (the cluster directory gave it the key): the
    /// pull of `key`, if any, lets go of the stream, which waits for its publisher (its
    /// viewers stay, and the new publisher continues it). Waits up to a second for that.
    /// (The pulls of its track streams `NAME~N` end too: the publisher brings its tracks.)
    pub async fn yield_to_publisher(&self, hub: &crate::hub::Hub, key: &StreamKey) {
        let yielding: Vec<StreamKey> = {
            let active = lock(&self.inner.active);
            let ours = |k: &StreamKey| k == key || k.split_track().is_some_and(|(main, _)| &main == key);
            let keys: Vec<StreamKey> =
                active.iter().filter(|(k, p)| p.resolved && ours(k)).map(|(k, _)| k.clone()).collect();
            keys.iter().filter_map(|k| active.get(k)).for_each(|p| p.yield_to_publisher.notify_one());
            keys
        };
        if !yielding.contains(key) {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline && hub.get(key).is_some_and(|s| s.waiting_since().is_none() && !s.is_ended()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        info!(stream = %key, "pull: a publisher of the stream came here; it takes the stream over");
    }

    /// Tells pulls how to count a stream's HLS clients (they hold no connection).
    pub fn set_hls_viewers(&self, f: HlsViewers) {
        let _ = self.inner.hls_viewers.set(f);
    }

    /// Streams being pulled now.
    pub fn active(&self) -> usize {
        lock(&self.inner.active).len()
    }

    /// The stream `key` pulled from its app's origin, starting the pull or joining the one
    /// under way; None when the app does not pull, the request came through this node
    /// already (a loop) or through too many, the pull could not start, or the first
    /// keyframe did not come within `relay.pull_wait_ms`.
    pub async fn find(&self, svc: &Arc<Services>, key: &StreamKey, query: &str) -> Option<Arc<Stream>> {
        let settings = svc.settings.get();
        let policy = settings.apps.get(&key.app);
        // the app's origin, else the node the cluster directory says publishes the key
        // (looked up again whenever the pull loses its origin)
        let (url, resolved) = match policy.pull.clone() {
            Some(url) => (Some(url), false),
            // (a pull under way is joined: no lookup)
            None if lock(&self.inner.active).contains_key(key) => (None, true),
            None => (Some(svc.cluster.as_ref()?.origin_of(key).await?), true),
        };
        let shown = url.as_ref().map_or_else(|| "(the cluster's)".to_string(), |u| u.to_string());
        let chain: Vec<&str> = crate::auth::query_param(query, VIA)
            .map(|v| v.split(',').filter(|n| !n.is_empty()).collect())
            .unwrap_or_default();
        if chain.contains(&self.inner.node.as_str()) {
            warn!(stream = %key, origin = %shown, "not pulling: the request came through this node already (a pull loop)");
            return None;
        }
        if chain.len() >= MAX_HOPS {
            warn!(stream = %key, origin = %shown, hops = chain.len(), "not pulling: the request came through {MAX_HOPS} relays already");
            return None;
        }
        // (a stream of `pull_always` that a viewer asks for first is always-on all the same)
        let always = policy.pull_always.contains(&key.name);
        let mut phase = self.start(svc, key, url.as_ref(), &chain, always, resolved)?;
        let wait = Duration::from_millis(self.inner.config.pull_wait_ms);
        let live = tokio::time::timeout(wait, phase.wait_for(|p| *p != Phase::Starting)).await;
        match live {
            Ok(Ok(p)) if *p == Phase::Live => svc.hub.get(key),
            Ok(_) => None,
            Err(_) => {
                info!(stream = %key, origin = %shown, "pull: no keyframe within {wait:?}; the viewer gets not-found");
                None
            }
        }
    }

    /// Starts (or joins) the pull of `key`; the receiver of its phase.
    fn start(
        &self,
        svc: &Arc<Services>,
        key: &StreamKey,
        url: Option<&PullUrl>,
        chain: &[&str],
        always: bool,
        resolved: bool,
    ) -> Option<watch::Receiver<Phase>> {
        let mut active = lock(&self.inner.active);
        if let Some(p) = active.get(key) {
            return Some(p.phase.subscribe());
        }
        // (the pull that was to be joined ended meanwhile)
        let url = url?;
        let origin = url.origin();
        let max = self.inner.config.max_pulls_per_origin;
        if active.values().filter(|p| p.origin == origin).count() >= max {
            svc.metrics.limit_hit("pulls_per_origin");
            warn!(stream = %key, origin = %url, "not pulling: {max} pulls from this origin already (relay.max_pulls_per_origin)");
            return None;
        }
        let (tx, rx) = watch::channel(Phase::Starting);
        let yielded = Arc::new(tokio::sync::Notify::new());
        active.insert(key.clone(), Pull { origin, phase: tx, yield_to_publisher: yielded.clone(), resolved });
        let mut via: Vec<String> = chain.iter().map(|s| s.to_string()).collect();
        via.push(self.inner.node.clone());
        let (pulls, svc, key, url) = (self.clone(), svc.clone(), key.clone(), url.clone());
        tokio::spawn(async move {
            info!(stream = %key, origin = %url, "pull starting");
            let st = PullRun {
                pulls: &pulls,
                svc: &svc,
                key: &key,
                url: url.clone(),
                always,
                resolved,
                yielded,
                ingest: None,
                live: false,
                unwatched_since: None,
                looked_up: None,
            };
            run(st, &via.join(",")).await;
            let mut active = lock(&pulls.inner.active);
            if let Some(p) = active.remove(&key) {
                let _ = p.phase.send(Phase::Over);
            }
            info!(stream = %key, origin = %url, "pull stopped");
        });
        Some(rx)
    }

    /// Starts the always-on pulls (`[apps.NAME] pull_always`) and starts them again when
    /// they end, until shutdown.
    pub async fn run_static(self, svc: Arc<Services>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = svc.shutdown.cancelled() => return,
            }
            let settings = svc.settings.get();
            for (app, policy) in settings.apps.iter() {
                let Some(url) = &policy.pull else { continue };
                for name in &policy.pull_always {
                    let key = StreamKey::new(app, name);
                    if svc.hub.get(&key).is_none() && !lock(&self.inner.active).contains_key(&key) {
                        let _ = self.start(&svc, &key, Some(url), &[], true, false);
                    }
                }
            }
        }
    }

    fn viewers(&self, stream: &Stream) -> usize {
        // (the viewers that hold a connection: HTTP-FLV, WebSocket-FLV, RTMP)
        let streaming = stream.viewers();
        let hls = self.inner.hls_viewers.get().map_or(0, |f| f(stream.key()));
        streaming + hls
    }

    fn set_phase(&self, key: &StreamKey, phase: Phase) {
        if let Some(p) = lock(&self.inner.active).get(key) {
            let _ = p.phase.send(phase);
        }
    }
}

/// How long the start of a connection to an origin is held for the other track's codec
/// configuration (see [`StartBuffer`]).
const START_WINDOW: Duration = Duration::from_millis(300);
/// What the start may hold at most.
const START_MAX_BYTES: usize = 8 << 20;

/// One message from an origin: media kind (None: metadata), timestamp, FLV tag body.
type Message = (Option<MediaKind>, u32, bytes::Bytes);

/// The start of a connection to an origin, held until both codec configurations are known.
/// nginx-rtmp sends each track's sequence header just before that track's first frame, so
/// the audio configuration can come after the first video frames: passed on as it comes,
/// HLS would cut a video-only first segment and then start over with a discontinuity,
/// which hls.js does not get past. The start is held until the stream has a video and an
/// audio configuration, or for [`START_WINDOW`] after its first audio or video message (a
/// stream with one track), and handed on metadata first, then the configurations, then the
/// rest in order.
#[derive(Debug, Default)]
struct StartBuffer {
    held: Vec<Message>,
    bytes: usize,
    video: bool,
    audio: bool,
    since: Option<Instant>,
    released: bool,
}

/// Whether `m` is a codec configuration (a sequence header).
fn is_config(m: &Message) -> bool {
    match (m.0, m.2.first().copied(), m.2.get(1).copied()) {
        // Enhanced RTMP: SequenceStart; legacy AVC (7) and HEVC (12): AVC packet type 0
        (Some(MediaKind::Video), Some(b0), b1) => {
            if b0 & 0x80 != 0 {
                b0 & 0x0f == 0
            } else {
                matches!(b0 & 0x0f, 7 | 12) && b1 == Some(0)
            }
        }
        // AAC (10): packet type 0; Enhanced RTMP audio (9): SequenceStart
        (Some(MediaKind::Audio), Some(b0), b1) => match b0 >> 4 {
            10 => b1 == Some(0),
            9 => b0 & 0x0f == 0,
            _ => false,
        },
        _ => false,
    }
}

impl StartBuffer {
    /// Takes a message; what to hand on now, in order.
    fn push(&mut self, m: Message, now: Instant) -> Vec<Message> {
        if self.released {
            return vec![m];
        }
        match (m.0, m.2.first()) {
            (Some(MediaKind::Video), Some(_)) => self.video |= is_config(&m),
            // audio formats with no configuration (MP3, …): their first frame says the
            // track is there
            (Some(MediaKind::Audio), Some(b0)) => self.audio |= is_config(&m) || !matches!(b0 >> 4, 9 | 10),
            _ => {}
        }
        // the window starts with the first audio or video (metadata comes at once on play,
        // media when the origin has it)
        if m.0.is_some() {
            self.since.get_or_insert(now);
        }
        self.bytes += m.2.len();
        self.held.push(m);
        let since = self.since.unwrap_or(now);
        let ready = (self.video && self.audio)
            || now.duration_since(since) >= START_WINDOW
            || self.bytes > START_MAX_BYTES
            || self.held.len() > 4096;
        if !ready {
            return Vec::new();
        }
        self.released = true;
        let (mut first, rest): (Vec<Message>, Vec<Message>) =
            std::mem::take(&mut self.held).into_iter().partition(|m| m.0.is_none() || is_config(m));
        // metadata before the configurations
        first.sort_by_key(|m| m.0.is_some());
        first.extend(rest);
        first
    }
}

/// How one connection to the origin ended.
enum Outcome {
    /// No viewer for `pull_idle_ms`, or shutdown: the pull is over.
    Done,
    /// A publisher of the key came to this node: the pull is over, the stream is its.
    Yield,
    /// The origin ended the stream or the connection failed.
    Lost(String),
}

/// The state of a pull across its connections to the origin.
struct PullRun<'a> {
    pulls: &'a Pulls,
    svc: &'a Arc<Services>,
    key: &'a StreamKey,
    /// The origin (another node's, when the cluster directory resolved it).
    url: PullUrl,
    always: bool,
    /// `url` came from the cluster directory, which is asked again whenever the origin is
    /// lost (the stream may have moved to another node).
    resolved: bool,
    /// Notified when a publisher of the key comes to this node.
    yielded: Arc<tokio::sync::Notify>,
    ingest: Option<Ingest>,
    /// The stream has its first keyframe (viewers were told).
    live: bool,
    /// Since when the stream has had no viewer.
    unwatched_since: Option<Instant>,
    /// When the cluster directory was last asked where the stream is (resolved pulls).
    looked_up: Option<Instant>,
}

async fn run(mut st: PullRun<'_>, via: &str) {
    let (pulls, svc, key, always, resolved) = (st.pulls, st.svc, st.key, st.always, st.resolved);
    let mut lost_at: Option<Instant> = None;
    let mut retry = RETRY_MIN;
    let mut last_error = String::new();
    loop {
        let outcome = match st.url.scheme {
            PullScheme::HttpFlv => pull_http(&mut st, via).await,
            PullScheme::Rtmp | PullScheme::Rtmps => pull_rtmp(&mut st, via).await,
        };
        let why = match outcome {
            Outcome::Done => break,
            Outcome::Yield => {
                // the stream waits for its publisher, which is on its way
                drop(st.ingest.take());
                break;
            }
            Outcome::Lost(why) => why,
        };
        // the publisher leaves: the stream waits out its reconnect grace, viewers stay
        let had_stream = st.ingest.take().is_some();
        if had_stream {
            // a connection that had the stream: a new loss; viewers that come meanwhile wait
            // for it to come back (up to pull_wait_ms) as for a new pull
            lost_at = Some(Instant::now());
            retry = RETRY_MIN;
            st.live = false;
            pulls.set_phase(key, Phase::Starting);
        }
        if !had_stream && lost_at.is_none() && !always {
            // never got the stream: the viewers waiting for it get not-found now
            warn!(stream = %key, origin = %st.url, "pull failed: {why}");
            break;
        }
        if why != last_error {
            warn!(stream = %key, origin = %st.url, "pull lost the origin: {why}; trying again");
            last_error = why;
        }
        let since = *lost_at.get_or_insert_with(Instant::now);
        let grace = svc.settings.get().apps.get(&key.app).reconnect_grace;
        if !always && since.elapsed() >= grace {
            warn!(stream = %key, origin = %st.url, "pull: the origin did not come back within the reconnect grace; the stream ends");
            break;
        }
        let nap = if always { retry } else { retry.min(grace.saturating_sub(since.elapsed())) };
        tokio::select! {
            _ = tokio::time::sleep(nap) => {}
            _ = svc.shutdown.cancelled() => break,
        }
        retry = (retry * 2).min(if resolved { RETRY_MAX_RESOLVED } else { RETRY_MAX });
        // the stream may have moved to another node (its encoder reconnected there)
        if let Some(moved) = match svc.cluster.as_ref().filter(|_| resolved) {
            Some(c) => c.origin_of(key).await.filter(|u| *u != st.url),
            None => None,
        } {
            info!(stream = %key, from = %st.url, to = %moved, "pull: the cluster directory names another origin now");
            st.url = moved;
            retry = RETRY_MIN;
        }
    }
    if let Some(ingest) = st.ingest.take() {
        // over for good (idle, shutdown): no grace
        ingest.stream().kick_and_end("pull stopped");
    }
}

impl PullRun<'_> {
    /// Hands a media message to the stream, publishing it first if needed; an error when
    /// the publish is refused.
    async fn media(
        &mut self,
        kind: Option<MediaKind>,
        timestamp: u32,
        payload: bytes::Bytes,
        peer: SocketAddr,
    ) -> Result<(), String> {
        if self.ingest.is_none() {
            let options = PublishOptions { takeover: Duration::ZERO, preauthorized: true };
            let ingest = admit_publisher(self.svc, self.key, peer, "pull", "", options)
                .await
                .map_err(|r| format!("the pulled stream could not be published here: {r}"))?;
            info!(stream = %self.key, origin = %self.url, "pull publishing");
            self.ingest = Some(ingest);
        }
        let Some(ingest) = self.ingest.as_mut() else { return Ok(()) };
        ingest.count_bytes(payload.len());
        match kind {
            Some(kind) => ingest.media(kind, timestamp, payload),
            None => ingest.metadata(payload),
        }
        if !self.live && ingest.stream().gop_cache_size().0 > 0 {
            self.live = true;
            self.pulls.set_phase(self.key, Phase::Live);
        }
        Ok(())
    }

    /// [`Self::media`] through the connection's start buffer.
    async fn media_held(&mut self, start: &mut StartBuffer, m: Message, peer: SocketAddr) -> Result<(), String> {
        for (kind, timestamp, payload) in start.push(m, Instant::now()) {
            self.media(kind, timestamp, payload, peer).await?;
        }
        Ok(())
    }

    /// For a pull the cluster directory resolved: whether the directory names another
    /// origin now (asked every [`MOVED_CHECK`], waiting at most [`MOVED_LOOKUP`]: a Redis
    /// that stalls does not hold the pull up). An origin that went away without closing the
    /// connection is left this way, well before [`ORIGIN_SILENT`].
    async fn moved(&mut self) -> bool {
        let Some(cluster) = self.svc.cluster.as_ref().filter(|_| self.resolved) else { return false };
        if self.looked_up.is_some_and(|t| t.elapsed() < MOVED_CHECK) {
            return false;
        }
        self.looked_up = Some(Instant::now());
        match tokio::time::timeout(MOVED_LOOKUP, cluster.origin_of(self.key)).await {
            Ok(Some(url)) => url != self.url,
            _ => false,
        }
    }

    /// Whether the pull has had no viewer for `pull_idle_ms` (never for an always-on pull).
    fn idle(&mut self) -> bool {
        if self.always {
            return false;
        }
        let Some(stream) = self.ingest.as_ref().map(|i| i.stream().clone()).or_else(|| self.svc.hub.get(self.key))
        else {
            return false;
        };
        if self.pulls.viewers(&stream) > 0 {
            self.unwatched_since = None;
            return false;
        }
        let idle = self.svc.settings.get().apps.get(&self.key.app).pull_idle;
        let since = *self.unwatched_since.get_or_insert_with(Instant::now);
        since.elapsed() >= idle
    }
}

async fn connect(url: &PullUrl, config: &RelayConfig) -> Result<(TcpStream, SocketAddr), String> {
    let tcp = tokio::time::timeout(config.connect_timeout(), TcpStream::connect((url.host.as_str(), url.port)))
        .await
        .map_err(|_| format!("connect to {}: no answer within {:?}", url.origin(), config.connect_timeout()))?
        .map_err(|e| format!("connect to {}: {e}", url.origin()))?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().map_err(|e| format!("connect to {}: {e}", url.origin()))?;
    Ok((tcp, peer))
}

async fn pull_rtmp(st: &mut PullRun<'_>, via: &str) -> Outcome {
    let (tcp, peer) = match connect(&st.url, &st.pulls.inner.config).await {
        Ok(c) => c,
        Err(e) => return Outcome::Lost(e),
    };
    if st.url.scheme == PullScheme::Rtmps {
        let Some(tls) = st.pulls.inner.tls.clone() else {
            return Outcome::Lost("TLS is not available (no root certificates loaded)".into());
        };
        let name = match rustls_pki_types::ServerName::try_from(st.url.host.clone()) {
            Ok(n) => n,
            Err(e) => return Outcome::Lost(format!("TLS server name {}: {e}", st.url.host)),
        };
        let timeout = st.pulls.inner.config.connect_timeout();
        match tokio::time::timeout(timeout, tls.connect(name, tcp)).await {
            Ok(Ok(s)) => play_rtmp(st, s, peer, via).await,
            Ok(Err(e)) => Outcome::Lost(format!("TLS: {e}")),
            Err(_) => Outcome::Lost("TLS: no handshake within the connect timeout".into()),
        }
    } else {
        play_rtmp(st, tcp, peer, via).await
    }
}

async fn play_rtmp<S: AsyncRead + AsyncWrite + Unpin>(
    st: &mut PullRun<'_>,
    io: S,
    peer: SocketAddr,
    via: &str,
) -> Outcome {
    let (mut rd, mut wr) = tokio::io::split(io);
    let tc_url = format!("rtmp://{}/{}", st.url.origin(), st.url.app);
    let name = format!("{}?{VIA}={via}", st.key.name);
    let (mut client, params) =
        super::relay_client(&st.pulls.inner.config, ClientRole::Play, tc_url, st.url.app.clone(), name);
    client.start(params, Instant::now());
    let mut start = StartBuffer::default();
    let mut inbuf = BytesMut::with_capacity(64 * 1024);
    let mut last_input = Instant::now();
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        while let Some(p) = client.poll_transmit() {
            if let Err(e) = wr.write_all(&p).await {
                return Outcome::Lost(format!("write: {e}"));
            }
        }
        while let Some(ev) = client.poll_event() {
            let r = match ev {
                ClientEvent::Media { kind, timestamp, payload } => {
                    st.media_held(&mut start, (Some(kind), timestamp, payload), peer).await
                }
                ClientEvent::Metadata { payload } => st.media_held(&mut start, (None, 0, payload), peer).await,
                ClientEvent::Failed(f) => Err(format!("the origin refused: {f}")),
                ClientEvent::Ended { code } => Err(format!("the origin ended the stream ({code})")),
                _ => Ok(()),
            };
            if let Err(why) = r {
                return Outcome::Lost(why);
            }
        }
        let deadline = client.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) => return Outcome::Lost("the origin closed the connection".into()),
                Ok(_) => {
                    last_input = Instant::now();
                    if let Err(e) = client.receive(&mut inbuf, Instant::now()) {
                        return Outcome::Lost(format!("bad RTMP from the origin: {e}"));
                    }
                    // what the session did not take (a partial chunk) stays small; a read
                    // buffer that grew for a burst is given back
                    if inbuf.is_empty() && inbuf.capacity() > 256 * 1024 {
                        inbuf = BytesMut::with_capacity(64 * 1024);
                    }
                }
                Err(e) => return Outcome::Lost(format!("read: {e}")),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(|| tokio::time::Instant::now() + IDLE_CHECK)), if deadline.is_some() => {
                client.handle_timeout(Instant::now());
            }
            _ = check.tick() => {
                if st.idle() {
                    info!(stream = %st.key, "pull: no viewer for pull_idle_ms; stopping");
                    client.close();
                    while let Some(p) = client.poll_transmit() {
                        let _ = wr.write_all(&p).await;
                    }
                    return Outcome::Done;
                }
                if last_input.elapsed() >= ORIGIN_SILENT {
                    return Outcome::Lost(format!("the origin sent nothing for {ORIGIN_SILENT:?}"));
                }
                if st.moved().await {
                    return Outcome::Lost("the cluster directory names another origin now".into());
                }
            }
            _ = st.svc.shutdown.cancelled() => return Outcome::Done,
            _ = st.yielded.notified() => return Outcome::Yield,
        }
    }
}

async fn pull_http(st: &mut PullRun<'_>, via: &str) -> Outcome {
    let (tcp, peer) = match connect(&st.url, &st.pulls.inner.config).await {
        Ok(c) => c,
        Err(e) => return Outcome::Lost(e),
    };
    let timeout = st.pulls.inner.config.connect_timeout();
    let io = hyper_util::rt::TokioIo::new(tcp);
    let handshake = hyper::client::conn::http1::Builder::new().max_buf_size(MAX_HEAD.max(8192)).handshake(io);
    let (mut sender, conn) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return Outcome::Lost(format!("HTTP: {e}")),
        Err(_) => return Outcome::Lost("HTTP: no handshake within the connect timeout".into()),
    };
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let _abort = AbortOnDrop(driver);
    let path = format!("/{}/{}.flv?{VIA}={via}", st.url.app, st.key.name);
    let req = match hyper::Request::get(&path)
        .header(hyper::header::HOST, st.url.origin())
        .header(hyper::header::USER_AGENT, concat!("livegate/", env!("CARGO_PKG_VERSION")))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
    {
        Ok(r) => r,
        Err(e) => return Outcome::Lost(format!("HTTP request {path}: {e}")),
    };
    let resp = match tokio::time::timeout(timeout, sender.send_request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Outcome::Lost(format!("HTTP: {e}")),
        Err(_) => return Outcome::Lost("HTTP: no answer within the connect timeout".into()),
    };
    if resp.status() != hyper::StatusCode::OK {
        return Outcome::Lost(format!("the origin answered {}", resp.status()));
    }
    let mut body = resp.into_body();
    let mut reader = TagReader::new(st.pulls.inner.config.max_message_size as usize);
    let mut start = StartBuffer::default();
    let mut check = tokio::time::interval(IDLE_CHECK);
    let mut last_input = Instant::now();
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                None => return Outcome::Lost("the origin ended the stream".into()),
                Some(Err(e)) => return Outcome::Lost(format!("read: {e}")),
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    last_input = Instant::now();
                    reader.push(&data);
                    loop {
                        let tag = match reader.next_tag() {
                            Ok(Some(t)) => t,
                            Ok(None) => break,
                            Err(e) => return Outcome::Lost(format!("bad FLV from the origin: {e}")),
                        };
                        let kind = match tag.tag_type {
                            8 => Some(MediaKind::Audio),
                            9 => Some(MediaKind::Video),
                            18 => None,
                            _ => continue,
                        };
                        if let Err(why) = st.media_held(&mut start, (kind, tag.timestamp, tag.body), peer).await {
                            return Outcome::Lost(why);
                        }
                    }
                }
            },
            _ = check.tick() => {
                if st.idle() {
                    info!(stream = %st.key, "pull: no viewer for pull_idle_ms; stopping");
                    return Outcome::Done;
                }
                if last_input.elapsed() >= ORIGIN_SILENT {
                    return Outcome::Lost(format!("the origin sent nothing for {ORIGIN_SILENT:?}"));
                }
                if st.moved().await {
                    return Outcome::Lost("the cluster directory names another origin now".into());
                }
            }
            _ = st.svc.shutdown.cancelled() => return Outcome::Done,
            _ = st.yielded.notified() => return Outcome::Yield,
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_held_until_both_configurations_are_known() {
        let t0 = Instant::now();
        let m = |kind, body: &'static [u8]| (kind, 0u32, bytes::Bytes::from_static(body));
        let (v, a) = (Some(MediaKind::Video), Some(MediaKind::Audio));
        // nginx-rtmp: video header, a keyframe, then the audio header
        let mut b = StartBuffer::default();
        assert!(b.push(m(None, b"meta"), t0).is_empty());
        // (the window starts with the first media, not with the metadata)
        let t0 = t0 + START_WINDOW * 2;
        assert!(b.push(m(v, &[0x17, 0]), t0).is_empty());
        assert!(b.push(m(v, &[0x17, 1, 9]), t0).is_empty());
        let out = b.push(m(a, &[0xaf, 0]), t0);
        let order: Vec<&[u8]> = out.iter().map(|m| &m.2[..]).collect();
        assert_eq!(order, [&b"meta"[..], &[0x17, 0], &[0xaf, 0], &[0x17, 1, 9]]);
        assert_eq!(b.push(m(a, &[0xaf, 1, 5]), t0).len(), 1, "then everything passes");
        // video only: held for the window, then handed on
        let mut b = StartBuffer::default();
        assert!(b.push(m(v, &[0x17, 0]), t0).is_empty());
        assert!(b.push(m(v, &[0x17, 1]), t0 + Duration::from_millis(100)).is_empty());
        assert_eq!(b.push(m(v, &[0x27, 1]), t0 + START_WINDOW).len(), 3);
        // MP3 needs no header: its first frame counts
        let mut b = StartBuffer::default();
        assert!(b.push(m(v, &[0x17, 0]), t0).is_empty());
        assert_eq!(b.push(m(a, &[0x2f, 1]), t0).len(), 2);
    }

    #[test]
    fn pull_urls_parse_or_say_why_not() {
        let u = PullUrl::parse("rtmp://origin.example/live").unwrap();
        assert_eq!(
            (u.scheme, u.host.as_str(), u.port, u.app.as_str()),
            (PullScheme::Rtmp, "origin.example", 1935, "live")
        );
        let u = PullUrl::parse("http://10.0.0.5:8080/live/").unwrap();
        assert_eq!((u.scheme, u.port, u.app.as_str()), (PullScheme::HttpFlv, 8080, "live"));
        assert_eq!(PullUrl::parse("rtmps://[::1]/a/b").unwrap().port, 443);
        for bad in [
            "ftp://x/live",
            "rtmp://x",
            "rtmp://x/",
            "rtmp://:1935/live",
            "rtmp://x:0/live",
            "rtmp://x:99999/live",
            "rtmp://x/li ve",
        ] {
            assert!(PullUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
