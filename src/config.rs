//! Typed configuration. Built-in defaults equal `config/livegate.toml`;
//! unknown keys are rejected; each component receives only its own section.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::auth::{AuthConfig, AuthOverride};
use crate::hub::{GopCacheConfig, HubConfig};

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rtmp: RtmpConfig,
    /// RTMP over TLS; off unless this section is present.
    pub rtmps: Option<RtmpsConfig>,
    pub http: HttpConfig,
    /// Every route of the HTTP port over TLS, HTTP/2 and HTTP/1.1; off unless present.
    pub https: Option<crate::server::http::tls::HttpsConfig>,
    pub hub: HubConfig,
    pub hls: HlsConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub admin: AdminConfig,
    pub lifecycle: LifecycleConfig,
    /// Push relays (restream): targets for every app and how pushes behave.
    pub relay: crate::relay::RelayConfig,
    /// Recording of every app's streams (`[apps.NAME.record]` replaces it for one app).
    pub record: crate::record::RecordConfig,
    /// The stream directory shared by several nodes (off unless `redis` is set).
    pub cluster: crate::cluster::ClusterConfig,
    /// Per-application overrides: `[apps.NAME]`. `auth` is merged key by key over the
    /// global `[auth]`; any other section given for an app replaces the global one for that
    /// app (its unset keys take built-in defaults).
    pub apps: BTreeMap<String, AppConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RtmpsConfig {
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Concurrent RTMP and RTMPS connections together; more are refused at accept. With
    /// `max_http_connections` scaled down in proportion when both do not fit the open-file
    /// limit.
    pub max_rtmp_connections: usize,
    /// Concurrent HTTP connections; more are refused at accept.
    pub max_http_connections: usize,
    /// Concurrent RTMP + RTMPS connections from one client address; 0: no such limit.
    pub max_rtmp_connections_per_ip: usize,
    /// Concurrent HTTP connections from one client address; 0: no such limit.
    pub max_http_connections_per_ip: usize,
    /// Live publishes (streams with a publisher); further publishes are refused. A
    /// multitrack publish counts once (its track streams ride on it); a stream waiting for
    /// its publisher in the reconnect grace does not count (see `max_waiting_streams`).
    pub max_streams: usize,
    /// Streams waiting for their publisher to come back (the reconnect grace), in all; when
    /// a publisher leaves past it, the oldest waiting stream of the address that has the most
    /// waiting ends early.
    pub max_waiting_streams: usize,
    /// Streams waiting for their publisher, per address of the publisher that left; past
    /// it, that address's oldest waiting stream ends early. 0: no such limit.
    pub max_waiting_streams_per_ip: usize,
    /// Viewers per stream over HTTP-FLV and RTMP play; further viewers are refused.
    pub max_viewers_per_stream: usize,
    /// Auth callbacks (and leave notifications) in flight at once, all apps together; more
    /// wait within their callback timeout, then are refused (HTTP 503, an RTMP error status).
    pub max_concurrent_callbacks: usize,
    /// Bytes that unfinished RTMP messages of connections that do not publish (before
    /// `publish`, players, idle clients) may hold together, all listeners included; a
    /// message that would go past it closes its connection. Each connection may hold at most
    /// 2 × `rtmp.max_message_size` in unfinished messages whatever this says.
    pub unpublished_message_bytes: usize,
}

impl LimitsConfig {
    /// What the hub's registry takes.
    pub fn streams(&self) -> crate::hub::StreamLimits {
        crate::hub::StreamLimits {
            max_streams: self.max_streams,
            max_waiting_streams: self.max_waiting_streams,
            max_waiting_streams_per_ip: self.max_waiting_streams_per_ip,
        }
    }

    /// Whether both connection limits are the built-in defaults (a ceiling that is scaled
    /// to the open-file limit without a warning, see `listener::check_fd_budget`).
    pub fn default_connection_limits(&self) -> bool {
        let d = Self::default();
        (self.max_rtmp_connections, self.max_http_connections) == (d.max_rtmp_connections, d.max_http_connections)
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_rtmp_connections: 10_000,
            max_http_connections: 10_000,
            max_rtmp_connections_per_ip: 0,
            max_http_connections_per_ip: 0,
            max_streams: 1_000,
            max_waiting_streams: 1_000,
            max_waiting_streams_per_ip: 0,
            max_viewers_per_stream: 10_000,
            unpublished_message_bytes: 64 * 1024 * 1024,
            max_concurrent_callbacks: crate::auth::DEFAULT_MAX_CONCURRENT_CALLBACKS,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token for the admin API (`DELETE /api/streams/APP/STREAM`). Unset: admin API off.
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// On SIGTERM/SIGINT: time allowed to flush HLS, end viewers and close sessions before exiting.
    pub shutdown_grace_ms: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self { shutdown_grace_ms: 5000 }
    }
}

/// Overrides for one application.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AppConfig {
    /// Serve HTTP-FLV for this app.
    pub http_flv: Option<bool>,
    pub hls: Option<HlsConfig>,
    pub gop_cache: Option<GopCacheConfig>,
    /// Overrides `[hub] reconnect_grace_ms` for this app's streams.
    pub reconnect_grace_ms: Option<u64>,
    /// Merged key by key over `[auth]` (see [`AuthOverride`]).
    pub auth: Option<AuthOverride>,
    /// Push targets of this app's streams; replaces `[relay] push` for it (`[]`: none).
    pub push: Option<Vec<String>>,
    /// The origin this app's streams are pulled from when a viewer asks for one that is not
    /// live here: `rtmp://HOST[:PORT]/APP`, `rtmps://…` or `http://HOST[:PORT]/APP`
    /// (HTTP-FLV), the stream name appended.
    pub pull: Option<String>,
    /// A pull stops this long after its last viewer (default `[relay] pull_idle_ms`).
    pub pull_idle_ms: Option<u64>,
    /// Streams of this app pulled from the start and kept, viewers or not.
    pub pull_always: Option<Vec<String>>,
    /// Replaces `[record]` for this app.
    pub record: Option<crate::record::RecordConfig>,
}

/// The settings that apply to one application.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPolicy {
    pub http_flv: bool,
    pub hls: HlsConfig,
    pub gop_cache: GopCacheConfig,
    /// How long a stream waits for its publisher to come back (`[hub] reconnect_grace_ms`).
    pub reconnect_grace: std::time::Duration,
    pub auth: AuthConfig,
    /// Push targets (URL templates) started when a stream of this app goes live.
    pub push: Vec<String>,
    /// The origin streams are pulled from on demand.
    pub pull: Option<crate::relay::PullUrl>,
    /// How long a pull outlives its last viewer.
    pub pull_idle: std::time::Duration,
    /// Streams pulled from the start and kept.
    pub pull_always: Vec<String>,
    /// Recording.
    pub record: crate::record::RecordConfig,
}

/// Resolves the policy of any application name.
#[derive(Debug, Clone, PartialEq)]
pub struct Apps {
    default: AppPolicy,
    apps: HashMap<String, AppPolicy>,
}

impl Apps {
    pub fn get(&self, app: &str) -> &AppPolicy {
        self.apps.get(app).unwrap_or(&self.default)
    }

    /// The apps configured by name (`[apps.NAME]`) and their policies.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &AppPolicy)> {
        self.apps.iter().map(|(n, p)| (n.as_str(), p))
    }
}

/// What the running gateway reads per connection or request, and SIGHUP replaces without
/// touching live streams: per-application policies (auth, HLS, GOP cache, HTTP-FLV; HLS and
/// GOP cache settings apply to streams that start afterwards) and limits.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub apps: Apps,
    pub limits: LimitsConfig,
}

/// The current [`Settings`], swapped whole on reload; readers take a snapshot.
#[derive(Debug)]
pub struct LiveSettings(RwLock<Arc<Settings>>);

impl LiveSettings {
    pub fn new(settings: Settings) -> Self {
        Self(RwLock::new(Arc::new(settings)))
    }

    pub fn get(&self) -> Arc<Settings> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, settings: Settings) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(settings);
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address of the RTMP listener (publish and play).
    pub listen: SocketAddr,
    /// A client must finish the handshake within this time.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed (publishers that stop sending, idle clients).
    pub idle_timeout_ms: u64,
    /// Largest RTMP message accepted, in bytes; larger declared lengths close the connection.
    pub max_message_size: u32,
    /// Chunk size announced to clients for what we send.
    pub out_chunk_size: u32,
    /// An RTMP viewer whose socket accepts nothing for this long is disconnected.
    pub viewer_stall_timeout_ms: u64,
    /// A publish on a live key takes the stream over when its current publisher has sent
    /// nothing for this long (a dead or half-open encoder connection the encoder is
    /// replacing). A publisher that is sending is never replaced. 0: never take over.
    pub takeover_idle_ms: u64,
    /// Listen backlog of the RTMP (and RTMPS) listener: connections the kernel queues
    /// before they are accepted (capped by `net.core.somaxconn`).
    pub backlog: u32,
    /// RTMP play of an Enhanced RTMP codec (HEVC, AV1, VP9, Opus, FLAC, AC-3, E-AC-3) only
    /// to clients that announced it in `connect`'s `fourCcList`. Off: clients that announced
    /// nothing get it too (ffmpeg 9 plays E-RTMP without announcing); a client whose list
    /// lacks the codec is refused either way, with a status saying why.
    pub only_announced_codecs: bool,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_message_size: 8 * 1024 * 1024,
            out_chunk_size: 65_536,
            viewer_stall_timeout_ms: 10_000,
            takeover_idle_ms: 2_000,
            backlog: 4096,
            only_announced_codecs: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener (HTTP-FLV, HLS, API, metrics).
    pub listen: SocketAddr,
    /// An HTTP-FLV viewer whose socket accepts nothing for this long is disconnected.
    pub viewer_stall_timeout_ms: u64,
    /// Value of `Access-Control-Allow-Origin` on every response.
    pub cors_allow_origin: String,
    /// Listen backlog of the HTTP listener (capped by `net.core.somaxconn`).
    pub backlog: u32,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            viewer_stall_timeout_ms: 10_000,
            cors_allow_origin: "*".to_string(),
            backlog: 4096,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Serve every live stream as HLS at /APP/STREAM.m3u8.
    pub enabled: bool,
    /// The segment container: `mpegts` (`.ts`, every HLS player, old set-top boxes and TVs),
    /// `fmp4` (fragmented MP4 `.m4s` with an `EXT-X-MAP` initialization segment) or
    /// `lowlatency` (fMP4 cut into parts, Low-Latency HLS with blocking playlist reload).
    pub variant: HlsVariant,
    /// `lowlatency`: the longest a part lasts (`EXT-X-PART-INF:PART-TARGET`).
    pub part_target_ms: u64,
    /// `lowlatency`: requests one stream holds waiting at once (blocking playlist reloads
    /// and hinted parts); past it they are answered 503 at once.
    pub max_blocked_requests: usize,
    /// Also write playlists and segments under this directory (`DIR/APP/STREAM.m3u8`).
    pub dir: Option<PathBuf>,
    /// Wanted segment duration; segments are cut at the first keyframe past it.
    pub target_duration_ms: u64,
    /// Minimum number of segments listed in the live playlist.
    pub window_segments: usize,
    /// Minimum media duration listed (at least 3 × target duration is always kept).
    pub min_window_ms: u64,
    /// After the publisher leaves, the ended playlist stays readable this long, and a
    /// republish within it continues the media sequence (with a discontinuity).
    pub hold_time_ms: u64,
    /// After the publisher leaves, wait this long before adding `EXT-X-ENDLIST`: players
    /// (hls.js) stop reloading an ended playlist for good, so an encoder that reconnects
    /// within this delay continues seamlessly (after a discontinuity). 0: at once.
    pub endlist_delay_ms: u64,
    /// A segment is cut before the frame that would make it larger than this (media time
    /// is the publisher's to choose; bytes are not).
    pub max_segment_bytes: usize,
    /// Bytes of segments one stream may hold (listed, and removed but still downloadable);
    /// past it the oldest go early.
    pub max_stream_bytes: usize,
    /// While the stream is recorded, `/APP/STREAM.m3u8?dvr` offers this many seconds of
    /// it as a live playlist a player can seek back in (served from the recording). 0: off.
    pub dvr_window_s: u64,
}

/// See [`HlsConfig::variant`].
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HlsVariant {
    Mpegts,
    Fmp4,
    #[default]
    Lowlatency,
}

impl HlsVariant {
    pub fn container(self) -> livegate_proto::hls::Container {
        match self {
            HlsVariant::Mpegts => livegate_proto::hls::Container::MpegTs,
            HlsVariant::Fmp4 | HlsVariant::Lowlatency => livegate_proto::hls::Container::Fmp4,
        }
    }
}

impl HlsConfig {
    /// The part target when parts are made (`lowlatency`).
    pub fn parts(&self) -> Option<u64> {
        (self.variant == HlsVariant::Lowlatency).then_some(self.part_target_ms)
    }

    fn validate(&self, section: &str) -> anyhow::Result<()> {
        let bad_part =
            !(100..=2000).contains(&self.part_target_ms) || self.part_target_ms * 2 > self.target_duration_ms;
        if self.variant == HlsVariant::Lowlatency && bad_part {
            bail!(
                "{section}.part_target_ms must be within 100..=2000 and at most half of target_duration_ms, got {}",
                self.part_target_ms
            );
        }
        if !(500..=30_000).contains(&self.target_duration_ms) {
            bail!("{section}.target_duration_ms must be within 500..=30000, got {}", self.target_duration_ms);
        }
        if !(3..=100).contains(&self.window_segments) {
            bail!("{section}.window_segments must be within 3..=100, got {}", self.window_segments);
        }
        if !(1..=1_000_000).contains(&self.max_blocked_requests) {
            bail!("{section}.max_blocked_requests must be within 1..=1000000, got {}", self.max_blocked_requests);
        }
        if self.min_window_ms > 3_600_000 {
            bail!("{section}.min_window_ms must be at most 3600000 (one hour), got {}", self.min_window_ms);
        }
        if self.max_segment_bytes < 64 * 1024 {
            bail!("{section}.max_segment_bytes must be at least 65536, got {}", self.max_segment_bytes);
        }
        if self.dvr_window_s > 7 * 86_400 {
            bail!("{section}.dvr_window_s must be at most 604800 (7 days), got {}", self.dvr_window_s);
        }
        if self.max_stream_bytes < 2 * self.max_segment_bytes {
            bail!(
                "{section}.max_stream_bytes ({}) must be at least 2 × max_segment_bytes ({})",
                self.max_stream_bytes,
                self.max_segment_bytes
            );
        }
        Ok(())
    }
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            variant: HlsVariant::Lowlatency,
            part_target_ms: 333,
            max_blocked_requests: 10_000,
            dir: None,
            target_duration_ms: 2000,
            window_segments: 6,
            min_window_ms: 0,
            hold_time_ms: 60_000,
            endlist_delay_ms: 10_000,
            max_segment_bytes: 16 * 1024 * 1024,
            max_stream_bytes: 64 * 1024 * 1024,
            dvr_window_s: 0,
        }
    }
}

/// The `[relay]` settings but its targets (which a reload changes for streams that start
/// afterwards).
#[derive(PartialEq)]
struct RelayLimits(crate::relay::RelayConfig);

impl RelayLimits {
    fn of(c: &Config) -> Self {
        Self(crate::relay::RelayConfig { push: Vec::new(), ..c.relay.clone() })
    }
}

/// Upper bound of the timeouts (one day, in ms).
const DAY_MS: u64 = 86_400_000;

impl Config {
    /// The part of the configuration a reload can change (see [`Settings`]).
    pub fn settings(&self) -> Settings {
        Settings { apps: self.apps(), limits: self.limits.clone() }
    }

    /// The sections that differ in `new` but only take effect after a restart (listeners,
    /// TLS, hub buffers, the HLS directory, the admin token, shutdown).
    pub fn restart_needed(&self, new: &Config) -> Vec<&'static str> {
        let hub =
            |c: &Config| HubConfig { gop_cache: GopCacheConfig::default(), reconnect_grace_ms: 0, ..c.hub.clone() };
        let mut out = Vec::new();
        let mut differs = |name, changed: bool| {
            if changed {
                out.push(name);
            }
        };
        differs("rtmp", self.rtmp != new.rtmp);
        differs("rtmps", self.rtmps != new.rtmps);
        differs("http", self.http != new.http);
        // (the certificate and key files are read again on every reload)
        differs("https", self.https.as_ref().map(|h| h.listen) != new.https.as_ref().map(|h| h.listen));
        differs("hub", hub(self) != hub(new));
        differs("hls.dir", self.hls.dir != new.hls.dir);
        differs("admin", self.admin != new.admin);
        differs("lifecycle", self.lifecycle != new.lifecycle);
        differs("relay", RelayLimits::of(self) != RelayLimits::of(new));
        out
    }

    /// What runs after a reload to `new`: its reloadable sections (see [`Settings`]), the rest
    /// as started (the complement of [`Self::restart_needed`]).
    pub fn reloaded(self, new: Config) -> Config {
        Config {
            auth: new.auth,
            apps: new.apps,
            limits: new.limits,
            relay: crate::relay::RelayConfig { push: new.relay.push, ..self.relay },
            record: new.record,
            hub: HubConfig { gop_cache: new.hub.gop_cache, reconnect_grace_ms: new.hub.reconnect_grace_ms, ..self.hub },
            hls: HlsConfig { dir: self.hls.dir, ..new.hls },
            ..self
        }
    }

    /// Per-application policies: the global sections, overridden by `[apps.NAME]`.
    pub fn apps(&self) -> Apps {
        let default = AppPolicy {
            http_flv: true,
            hls: self.hls.clone(),
            gop_cache: self.hub.gop_cache.clone(),
            reconnect_grace: std::time::Duration::from_millis(self.hub.reconnect_grace_ms),
            auth: self.auth.clone(),
            push: self.relay.push.clone(),
            pull: None,
            pull_idle: std::time::Duration::from_millis(self.relay.pull_idle_ms),
            pull_always: Vec::new(),
            record: self.record.clone(),
        };
        let apps = self
            .apps
            .iter()
            .map(|(name, a)| {
                let policy = AppPolicy {
                    http_flv: a.http_flv.unwrap_or(default.http_flv),
                    hls: a
                        .hls
                        .clone()
                        .map_or_else(|| default.hls.clone(), |h| HlsConfig { dir: self.hls.dir.clone(), ..h }),
                    gop_cache: a.gop_cache.clone().unwrap_or_else(|| default.gop_cache.clone()),
                    reconnect_grace: a
                        .reconnect_grace_ms
                        .map_or(default.reconnect_grace, std::time::Duration::from_millis),
                    auth: a.auth.as_ref().map_or_else(|| default.auth.clone(), |o| o.apply(&default.auth)),
                    push: a.push.clone().unwrap_or_else(|| default.push.clone()),
                    // (checked by `validate`)
                    pull: a.pull.as_deref().and_then(|u| crate::relay::PullUrl::parse(u).ok()),
                    pull_idle: a.pull_idle_ms.map_or(default.pull_idle, std::time::Duration::from_millis),
                    pull_always: a.pull_always.clone().unwrap_or_default(),
                    record: a.record.clone().unwrap_or_else(|| default.record.clone()),
                };
                (name.clone(), policy)
            })
            .collect();
        Apps { default, apps }
    }

    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rtmp.out_chunk_size < 128 || self.rtmp.out_chunk_size > 0x00ff_ffff {
            bail!("rtmp.out_chunk_size must be within 128..=16777215, got {}", self.rtmp.out_chunk_size);
        }
        if self.rtmp.max_message_size < 64 * 1024 || self.rtmp.max_message_size > 0x00ff_ffff {
            bail!("rtmp.max_message_size must be within 65536..=16777215, got {}", self.rtmp.max_message_size);
        }
        for (name, v) in [
            ("rtmp.handshake_timeout_ms", self.rtmp.handshake_timeout_ms),
            ("rtmp.idle_timeout_ms", self.rtmp.idle_timeout_ms),
            ("rtmp.viewer_stall_timeout_ms", self.rtmp.viewer_stall_timeout_ms),
            ("http.viewer_stall_timeout_ms", self.http.viewer_stall_timeout_ms),
            ("relay.connect_timeout_ms", self.relay.connect_timeout_ms),
            ("relay.stall_timeout_ms", self.relay.stall_timeout_ms),
        ] {
            if v == 0 || v > DAY_MS {
                bail!("{name} must be within 1..={DAY_MS}, got {v}");
            }
        }
        if self.rtmp.takeover_idle_ms > self.rtmp.idle_timeout_ms {
            bail!(
                "rtmp.takeover_idle_ms ({}) must not exceed rtmp.idle_timeout_ms ({}): the idle timeout frees the key first",
                self.rtmp.takeover_idle_ms,
                self.rtmp.idle_timeout_ms
            );
        }
        self.hls.validate("hls")?;
        self.auth.validate("auth")?;
        if self.relay.queue_bytes < 64 * 1024 {
            bail!("relay.queue_bytes must be at least 65536 (a keyframe must fit), got {}", self.relay.queue_bytes);
        }
        crate::relay::RelayConfig::validate_targets(&self.relay.push).context("relay.push")?;
        for (name, app) in &self.apps {
            crate::relay::RelayConfig::validate_targets(app.push.iter().flatten())
                .with_context(|| format!("apps.{name}.push"))?;
            if let Some(url) = &app.pull {
                crate::relay::PullUrl::parse(url).with_context(|| format!("apps.{name}.pull"))?;
            }
            if app.pull_always.as_ref().is_some_and(|a| !a.is_empty()) && app.pull.is_none() {
                bail!("apps.{name}.pull_always needs apps.{name}.pull (the origin)");
            }
            for stream in app.pull_always.iter().flatten() {
                if !crate::hub::valid_name(stream) {
                    bail!("apps.{name}.pull_always: {stream:?} is not a valid stream name");
                }
            }
        }
        self.record.validate("record")?;
        self.cluster.validate()?;
        for (name, app) in &self.apps {
            if let Some(r) = &app.record {
                r.validate(&format!("apps.{name}.record"))?;
            }
        }
        if self.relay.max_pulls_per_origin == 0 {
            bail!("relay.max_pulls_per_origin must be at least 1");
        }
        for (name, app) in &self.apps {
            if !crate::hub::valid_name(name) {
                bail!("apps.{name}: not a valid app name (1-128 of A-Z a-z 0-9 _ . -)");
            }
            if let Some(h) = &app.hls {
                h.validate(&format!("apps.{name}.hls"))?;
                if h.dir.is_some() {
                    bail!("apps.{name}.hls.dir: the HLS directory is global; set it in [hls]");
                }
            }
            if let Some(a) = &app.auth {
                a.apply(&self.auth).validate(&format!("apps.{name}.auth"))?;
            }
        }
        if self.lifecycle.shutdown_grace_ms == 0 {
            bail!("lifecycle.shutdown_grace_ms must be greater than 0");
        }
        if !(1..=1_000_000).contains(&self.limits.max_concurrent_callbacks) {
            bail!(
                "limits.max_concurrent_callbacks must be within 1..=1000000, got {}",
                self.limits.max_concurrent_callbacks
            );
        }
        if self.limits.max_rtmp_connections == 0 || self.limits.max_http_connections == 0 {
            bail!("limits.max_rtmp_connections and limits.max_http_connections must be greater than 0");
        }
        if self.admin.token.as_deref().is_some_and(|t| t.len() < 16) {
            bail!("admin.token must be at least 16 characters");
        }
        if self.hub.ring_events < 16 {
            bail!("hub.ring_events must be at least 16, got {}", self.hub.ring_events);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_takes_the_reloadable_sections_and_keeps_the_rest() {
        let running = Config::default();
        let mut new = Config::default();
        new.auth.play_keys = vec!["k".into()];
        new.limits.max_streams = 7;
        new.hls.target_duration_ms = 4000;
        new.hls.dir = Some("/tmp/elsewhere".into());
        new.hub.gop_cache.max_frames = 10;
        new.hub.max_lag_ms = 1;
        new.rtmp.idle_timeout_ms = 1;
        let restart = running.restart_needed(&new);
        assert_eq!(restart, vec!["rtmp", "hub", "hls.dir"]);
        let after = running.clone().reloaded(new.clone());
        let expected = Config { hls: HlsConfig { dir: None, ..new.hls.clone() }, ..new.clone() };
        assert_eq!(after.settings(), expected.settings(), "auth, apps, limits, HLS but its dir, GOP cache as reloaded");
        assert_eq!(after.restart_needed(&new), restart, "the restart-only changes still wait for a restart");
        assert_eq!((after.rtmp, after.hub.max_lag_ms), (running.rtmp, running.hub.max_lag_ms));
    }

    #[test]
    fn shipped_config_file_equals_defaults() {
        let text = include_str!("../config/livegate.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = Config::parse("[rtmp]\nlisten = \"0.0.0.0:1\"\nbogus = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
        assert!(Config::parse("[nope]\n").is_err());
        assert!(Config::parse("[rtmp]\nout_chunk_size = 0\n").is_err());
        assert!(Config::parse("[rtmp]\nlisten = \"not an address\"\n").is_err());
        assert!(Config::parse("[apps.live.hls]\ndir = \"/x\"\n").is_err());
        assert!(Config::parse("[apps.\"bad name\"]\n").is_err());
        assert!(Config::parse("[admin]\ntoken = \"short\"\n").is_err());
    }

    #[test]
    fn app_auth_is_merged_key_by_key_over_the_global_one() {
        let c = Config::parse(
            "[auth]\nplay_keys = [\"watch\"]\npublish_keys = [\"pub\"]\non_play = \"http://127.0.0.1:1/p\"\n             [apps.a.auth]\npublish_keys = [\"other\"]\n             [apps.open.auth]\nplay_keys = []\non_play = \"\"\n",
        )
        .unwrap();
        let apps = c.apps();
        let a = &apps.get("a").auth;
        assert_eq!(a.publish_keys, vec!["other".to_string()]);
        assert_eq!(a.play_keys, vec!["watch".to_string()], "play_keys inherited");
        assert_eq!(a.on_play.as_deref(), Some("http://127.0.0.1:1/p"), "on_play inherited");
        let open = &apps.get("open").auth;
        assert!(open.play_keys.is_empty(), "an explicit empty list opens playing");
        assert_eq!(open.on_play, None, "an empty URL turns the callback off");
        assert_eq!(open.publish_keys, vec!["pub".to_string()]);
    }

    #[test]
    fn apps_override_the_global_sections() {
        let c = Config::parse(
            "[auth]\npublish_keys = [\"k\"]\n[apps.open]\nhttp_flv = false\n[apps.open.auth]\n[apps.open.hls]\ntarget_duration_ms = 1000\n",
        )
        .unwrap();
        let apps = c.apps();
        assert_eq!(apps.get("live").auth.publish_keys, vec!["k".to_string()]);
        assert!(apps.get("live").http_flv);
        let open = apps.get("open");
        assert_eq!(open.auth.publish_keys, vec!["k".to_string()], "an empty [apps.open.auth] inherits everything");
        assert!(!open.http_flv);
        assert_eq!(open.hls.target_duration_ms, 1000);
        assert_eq!(open.hls.window_segments, 6);
    }
}
