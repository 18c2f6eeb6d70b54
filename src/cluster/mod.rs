//! More than one machine: origins and edges that find each other through a stream
//! directory in Redis (`[cluster]`, off unless `redis` is set; a single livegate needs none).
//!
//! - **Claims.** A publish claims its `APP/STREAM` before the hub takes it (atomic `SET NX
//!   PX` in a Lua script, [`store`]), carrying the node, a secret token and a fencing epoch.
//!   The claim is refreshed every `ttl_ms / 3` by a compare-and-set on the token, so no node
//!   ever overwrites another's. A publish of a key another node holds live is refused,
//!   naming that node (`NetStream.Publish.BadName`). While this node's stream waits for its
//!   publisher (the reconnect grace) its claim says `waiting`, and a publish on another node
//!   takes it over: this node then finds its claim gone at the next refresh (within ~200 ms:
//!   claims are looked at every [`TICK`]) and ends its stream. A claim found taken is never
//!   taken back.
//! - **Lookups.** A viewer of a key that is not live here is pulled from the node that
//!   claims it (`advertise_rtmp`, else `advertise_http`) by the pull machinery of
//!   `crate::relay::pull`, shared by all of this node's viewers; when that origin goes away
//!   the pull looks the key up again and follows the stream to its new node.
//! - **Redis faults.** Every call is bounded by `timeout_ms`. While Redis is unreachable,
//!   streams and pulls go on; new publishes are refused unless `fail_open` (then they are
//!   claimed when Redis is back, unless another node took the key meanwhile); lookups fail
//!   fast (not found). A claim that Redis lost (restarted empty) is written again at the
//!   next refresh.
//! - Nodes heartbeat (streams, viewers, bytes out) with the same TTL; `GET /api/cluster`
//!   lists nodes and claims.

mod store;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context};
use serde::Deserialize;
use serde_json::json;
use tracing::{info, warn};

use crate::hub::{lock, Hub, Stream, StreamKey};
use crate::metrics::Metrics;
use crate::relay::PullUrl;
pub use store::ClaimValue;
use store::{ClaimOutcome, Refreshed, Store};

/// How often claims are looked at (a state change is written at once; a refresh is due
/// every `ttl_ms / 3`).
pub const TICK: Duration = Duration::from_millis(200);

/// `[cluster]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// `redis://[:PASSWORD@]HOST:PORT/DB` (`rediss://` for TLS); unset: no cluster.
    pub redis: Option<String>,
    /// This node's name in the directory (default: the host name).
    pub node: Option<String>,
    /// Where other nodes reach this one: `rtmp://HOST:PORT` (pulls use it first) and
    /// `http://HOST:PORT`. Default: the RTMP listener's address, when it is not a wildcard.
    pub advertise_rtmp: Option<String>,
    pub advertise_http: Option<String>,
    /// A claim or heartbeat not refreshed for this long is gone.
    pub ttl_ms: u64,
    /// Each Redis command waits at most this long.
    pub timeout_ms: u64,
    /// Publish while Redis is unreachable (claimed when it is back) instead of refusing.
    pub fail_open: bool,
    /// Prefix of every key livegate writes.
    pub prefix: String,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            redis: None,
            node: None,
            advertise_rtmp: None,
            advertise_http: None,
            ttl_ms: 5000,
            timeout_ms: 1000,
            fail_open: false,
            prefix: "livegate".into(),
        }
    }
}

impl ClusterConfig {
    pub fn validate(&self) -> anyhow::Result<()> {
        let Some(url) = &self.redis else { return Ok(()) };
        redis::Client::open(url.as_str()).context("cluster.redis")?;
        if let Some(node) = &self.node {
            if !crate::hub::valid_name(node) {
                bail!("cluster.node must be 1 to 128 of [A-Za-z0-9_.-], got {node:?}");
            }
        }
        if !(1000..=60_000).contains(&self.ttl_ms) {
            bail!("cluster.ttl_ms must be within 1000..=60000, got {}", self.ttl_ms);
        }
        if !(50..=10_000).contains(&self.timeout_ms) || self.timeout_ms * 3 > self.ttl_ms {
            bail!("cluster.timeout_ms must be within 50..=10000 and at most a third of ttl_ms");
        }
        if !crate::hub::valid_name(&self.prefix) {
            bail!("cluster.prefix must be 1 to 128 of [A-Za-z0-9_.-]");
        }
        if let Some(u) = &self.advertise_rtmp {
            let p = PullUrl::parse(&format!("{}/x", u.trim_end_matches('/'))).context("cluster.advertise_rtmp")?;
            if p.scheme == crate::relay::PullScheme::HttpFlv {
                bail!("cluster.advertise_rtmp must be rtmp:// or rtmps://");
            }
        }
        if let Some(u) = &self.advertise_http {
            let p = PullUrl::parse(&format!("{}/x", u.trim_end_matches('/'))).context("cluster.advertise_http")?;
            if p.scheme != crate::relay::PullScheme::HttpFlv {
                bail!("cluster.advertise_http must be http://");
            }
        }
        Ok(())
    }
}

/// Why the directory refused a publish.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("stream {key} is published on node {node}")]
    Owned { key: StreamKey, node: String },
    #[error("the cluster directory is unavailable ({0}); publishing is refused until it is back")]
    Unavailable(String),
}

/// A claim this node holds (or is taking).
struct Claim {
    /// Which claim of the key this is (a new one for each claim taken in Redis): what
    /// guards, the tend loop and releases compare, so nothing about an older claim of the
    /// key touches a newer one.
    generation: u64,
    /// As written in Redis; its token is this claim's own (the process's prefix and the
    /// generation).
    value: ClaimValue,
    /// The stream it is for (None until the hub took the publish).
    stream: Option<Weak<Stream>>,
    /// Publishes admitted under it that have not reached the hub yet (see [`ClaimGuard`]).
    holders: usize,
    /// Redis answered the claim (or, with `fail_open`, could not: `pending`).
    confirmed: bool,
    /// Taken while Redis was unreachable (`fail_open`): to be claimed when it is back.
    pending: bool,
    refreshed: Option<Instant>,
}

impl Claim {
    /// The stream it was for has ended.
    fn ended(&self) -> bool {
        self.stream.as_ref().is_some_and(|w| w.upgrade().is_none_or(|s| s.is_ended()))
    }

    fn waiting(&self) -> bool {
        self.stream.as_ref().and_then(Weak::upgrade).is_some_and(|s| s.waiting_since().is_some())
    }
}

/// A publish's hold on its key's claim, from [`Cluster::claim`] until the hub takes the
/// publish ([`Self::attach`]); dropped before that (refused, cancelled), it lets go of the
/// claim (released in Redis when nothing else holds it).
pub struct ClaimGuard {
    cluster: Cluster,
    key: StreamKey,
    generation: u64,
    attached: bool,
}

impl ClaimGuard {
    /// The hub took the publish: the claim is the stream's from now on. False when the
    /// claim is gone meanwhile (then the stream has no claim and must not go on).
    pub fn attach(mut self, stream: &Arc<Stream>) -> bool {
        self.attached = true;
        let mut claims = lock(&self.cluster.inner.claims);
        match claims.get_mut(&self.key).filter(|c| c.generation == self.generation) {
            Some(c) => {
                c.stream = Some(Arc::downgrade(stream));
                c.holders = c.holders.saturating_sub(1);
                true
            }
            None => false,
        }
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.attached {
            self.cluster.let_go(&self.key, self.generation);
        }
    }
}

/// The stream directory of this node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    node: String,
    /// What every claim token of this process starts with.
    token_prefix: String,
    rtmp: String,
    http: String,
    ttl: Duration,
    timeout: Duration,
    fail_open: bool,
    store: Store,
    claims: Mutex<HashMap<StreamKey, Claim>>,
    next_generation: std::sync::atomic::AtomicU64,
    redis_up: AtomicBool,
    metrics: Arc<Metrics>,
    started: u64,
    /// `/api/cluster` answered within the last second (a flood costs Redis nothing more).
    overview: Mutex<Option<(Instant, serde_json::Value)>>,
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The host name, if it is a valid node name.
fn host_name() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates (the last byte is kept 0).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(0);
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    crate::hub::valid_name(&name).then_some(name)
}

/// What a claim attempt found in this node's own claims.
enum Local {
    /// Another publish here is taking the claim: wait for its answer.
    Busy,
    /// A claim of this node: its generation, and whether its stream waits for its publisher.
    Held(u64, bool),
    None,
}

impl Cluster {
    /// The directory of `config` (None when `redis` is unset). `rtmp`/`http`: the bound
    /// listeners (the advertised URLs' defaults).
    pub fn new(
        config: &ClusterConfig,
        rtmp: SocketAddr,
        http: SocketAddr,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(url) = &config.redis else { return Ok(None) };
        let node =
            config.node.clone().or_else(host_name).unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
        let default_url = |scheme: &str, a: SocketAddr| (!a.ip().is_unspecified()).then(|| format!("{scheme}://{a}"));
        let rtmp_url = config.advertise_rtmp.clone().or_else(|| default_url("rtmp", rtmp)).unwrap_or_default();
        let http_url = config.advertise_http.clone().or_else(|| default_url("http", http)).unwrap_or_default();
        if rtmp_url.is_empty() && http_url.is_empty() {
            warn!(node, "cluster: no advertised URL (cluster.advertise_rtmp / advertise_http) and the listeners are wildcards: other nodes cannot pull this node's streams");
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let store = Store::new(url, &config.prefix, timeout)?;
        info!(node, rtmp = %rtmp_url, http = %http_url, "cluster: stream directory in Redis");
        metrics.set_cluster_redis_up(true);
        Ok(Some(Self {
            inner: Arc::new(Inner {
                node,
                token_prefix: format!("{:016x}{:08x}-", rand::random::<u64>(), rand::random::<u32>()),
                rtmp: rtmp_url.trim_end_matches('/').to_string(),
                http: http_url.trim_end_matches('/').to_string(),
                ttl: Duration::from_millis(config.ttl_ms),
                timeout,
                fail_open: config.fail_open,
                store,
                claims: Mutex::new(HashMap::new()),
                next_generation: std::sync::atomic::AtomicU64::new(1),
                redis_up: AtomicBool::new(true),
                metrics,
                started: unix_ms(),
                overview: Mutex::new(None),
            }),
        }))
    }

    pub fn node(&self) -> &str {
        &self.inner.node
    }

    fn set_up(&self, up: bool, why: &str) {
        let was = self.inner.redis_up.swap(up, Ordering::Relaxed);
        self.inner.metrics.set_cluster_redis_up(up);
        if was && !up {
            warn!(
                "cluster: Redis is unreachable ({why}); live streams go on, new publishes are {}",
                if self.inner.fail_open { "taken (fail_open) and claimed when it is back" } else { "refused" }
            );
        } else if !was && up {
            info!("cluster: Redis is reachable again");
        }
    }

    fn value(&self, generation: u64, since: u64, epoch: u64, state: &str) -> ClaimValue {
        ClaimValue {
            node: self.inner.node.clone(),
            token: format!("{}{generation:x}", self.inner.token_prefix),
            epoch,
            state: state.to_string(),
            rtmp: self.inner.rtmp.clone(),
            http: self.inner.http.clone(),
            since,
        }
    }

    /// This node's own claim of `key`, if any (a claim whose stream ended is dropped here,
    /// the key claimed anew).
    fn local(&self, key: &StreamKey) -> Local {
        let mut claims = lock(&self.inner.claims);
        match claims.get_mut(key) {
            Some(c) if c.ended() && c.holders == 0 => {
                claims.remove(key);
                Local::None
            }
            Some(c) if !c.confirmed => Local::Busy,
            Some(c) => {
                c.holders += 1;
                Local::Held(c.generation, c.waiting())
            }
            None => Local::None,
        }
    }

    /// Claims `key` for a publish on this node. A key this node holds already is its own
    /// (the hub then decides between its publishers); one whose stream waits for its
    /// publisher is checked in Redis first, where another node may have taken it over.
    pub async fn claim(&self, key: &StreamKey) -> Result<ClaimGuard, ClaimError> {
        let guard = |generation| ClaimGuard { cluster: self.clone(), key: key.clone(), generation, attached: false };
        let deadline = Instant::now() + self.inner.timeout * 2;
        loop {
            match self.local(key) {
                Local::Busy if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(10)).await,
                Local::Busy => {
                    return Err(ClaimError::Unavailable("another publish of the key is being claimed".into()))
                }
                Local::Held(generation, waiting) => {
                    let g = guard(generation);
                    if waiting {
                        self.confirm_still_ours(key, generation).await?;
                    }
                    return Ok(g);
                }
                Local::None => break,
            }
        }
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let mine = self.value(generation, unix_ms(), 0, "live");
        lock(&self.inner.claims).insert(
            key.clone(),
            Claim {
                generation,
                value: mine.clone(),
                stream: None,
                holders: 1,
                confirmed: false,
                pending: false,
                refreshed: None,
            },
        );
        // from here the guard lets go of the claim if this publish goes no further
        let g = guard(generation);
        let outcome = self.inner.store.claim(key, &mine, &self.inner.token_prefix, self.inner.ttl).await;
        let (epoch, pending) = match outcome {
            Ok(ClaimOutcome::Claimed(epoch)) => {
                self.set_up(true, "");
                (epoch, false)
            }
            Ok(ClaimOutcome::TookOver { epoch, from }) => {
                self.set_up(true, "");
                if from != self.inner.node {
                    info!(stream = %key, from, epoch, "cluster: took the stream over (its claim was waiting for its publisher, or unreadable)");
                    let ev = json!({ "stream": key.to_string(), "took_over_from": from, "epoch": epoch });
                    self.inner.metrics.events.emit("cluster", ev);
                }
                (epoch, false)
            }
            Ok(ClaimOutcome::Owned(node)) => {
                self.set_up(true, "");
                self.forget(key, generation);
                return Err(ClaimError::Owned { key: key.clone(), node });
            }
            Err(e) => {
                self.set_up(false, &e);
                if !self.inner.fail_open {
                    self.forget(key, generation);
                    return Err(ClaimError::Unavailable(e));
                }
                warn!(stream = %key, "cluster: publishing without a claim (fail_open): {e}");
                (0, true)
            }
        };
        let mut claims = lock(&self.inner.claims);
        if let Some(c) = claims.get_mut(key).filter(|c| c.generation == generation) {
            c.value.epoch = epoch;
            c.confirmed = true;
            c.pending = pending;
            c.refreshed = Some(Instant::now());
        }
        self.inner.metrics.set_cluster_claims(claims.len());
        Ok(g)
    }

    /// A publish continuing this node's waiting stream: the claim must still be this one's
    /// (another node may have taken the key over since the last refresh). When it is not,
    /// the stream ends here and the publish is refused.
    async fn confirm_still_ours(&self, key: &StreamKey, generation: u64) -> Result<(), ClaimError> {
        let value = lock(&self.inner.claims).get(key).filter(|c| c.generation == generation).map(|c| c.value.clone());
        let Some(mut value) = value else { return Ok(()) };
        value.state = "live".into();
        match self.inner.store.refresh(key, &value, self.inner.ttl).await {
            Ok(Refreshed::Lost(node)) => {
                self.set_up(true, "");
                self.lost(key, generation, &node, None);
                Err(ClaimError::Owned { key: key.clone(), node })
            }
            Ok(_) => {
                self.set_up(true, "");
                self.refreshed(key, generation, Some("live"));
                Ok(())
            }
            // Redis down: the stream is this node's as far as anyone can tell
            Err(e) => {
                self.set_up(false, &e);
                Ok(())
            }
        }
    }

    /// A claim no publish got anywhere with: gone from this node's claims, not from Redis.
    fn forget(&self, key: &StreamKey, generation: u64) {
        let mut claims = lock(&self.inner.claims);
        if claims.get(key).is_some_and(|c| c.generation == generation) {
            claims.remove(key);
        }
        self.inner.metrics.set_cluster_claims(claims.len());
    }

    /// A [`ClaimGuard`] dropped before its publish reached the hub: when nothing else holds
    /// the claim, it is released.
    fn let_go(&self, key: &StreamKey, generation: u64) {
        let mut claims = lock(&self.inner.claims);
        let Some(c) = claims.get_mut(key).filter(|c| c.generation == generation) else { return };
        c.holders = c.holders.saturating_sub(1);
        if c.holders > 0 || c.stream.as_ref().is_some_and(|w| w.strong_count() > 0) {
            return;
        }
        let (confirmed, pending, token) = (c.confirmed, c.pending, c.value.token.clone());
        claims.remove(key);
        self.inner.metrics.set_cluster_claims(claims.len());
        drop(claims);
        if confirmed && !pending {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (me, key) = (self.clone(), key.clone());
                rt.spawn(async move {
                    let _ = me.inner.store.release(&key, &token).await;
                });
            }
        }
    }

    /// The claim `generation` of `key` is another node's now: it is dropped and its stream
    /// (`stream`, or the one attached) ended here.
    fn lost(&self, key: &StreamKey, generation: u64, owner: &str, hub: Option<&Hub>) {
        let stream = {
            let mut claims = lock(&self.inner.claims);
            let Some(c) = claims.get(key).filter(|c| c.generation == generation) else { return };
            let s = c.stream.as_ref().and_then(Weak::upgrade);
            claims.remove(key);
            self.inner.metrics.set_cluster_claims(claims.len());
            s
        };
        self.inner.metrics.cluster_claims_lost.inc();
        warn!(stream = %key, owner, "cluster: another claim holds the stream now; ending it here");
        if let Some(s) = stream {
            let ended = hub.is_some_and(|h| h.end_waiting(key));
            if !ended {
                s.kick_and_end("the stream is published on another node now");
            }
        }
    }

    /// Where to pull `key` from: its owner's advertised URL, for a key another node
    /// claims. None when nobody (or this node) claims it, or Redis does not answer.
    pub async fn origin_of(&self, key: &StreamKey) -> Option<PullUrl> {
        let main = key.split_track().map_or_else(|| key.clone(), |(m, _)| m);
        let claim = match self.inner.store.lookup(&main).await {
            Ok(c) => c?,
            Err(e) => {
                self.set_up(false, &e);
                return None;
            }
        };
        if claim.node == self.inner.node {
            return None;
        }
        let base = if claim.rtmp.is_empty() { &claim.http } else { &claim.rtmp };
        match PullUrl::parse(&format!("{}/{}", base.trim_end_matches('/'), key.app)) {
            Ok(url) => Some(url),
            Err(e) => {
                warn!(stream = %key, node = claim.node, "cluster: the owner's advertised URL is unusable: {e}");
                None
            }
        }
    }

    /// Looks after the claims (state, refresh, release) and the heartbeat until shutdown;
    /// then releases every claim and the heartbeat (within a few Redis timeouts).
    pub async fn run(self, hub: Hub, shutdown: tokio_util::sync::CancellationToken) {
        let refresh_every = self.inner.ttl / 3;
        let mut last_beat: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.cancelled() => break,
            }
            self.tend_claims(&hub, refresh_every).await;
            if last_beat.is_none_or(|t| t.elapsed() >= refresh_every) {
                last_beat = Some(Instant::now());
                self.heartbeat(&hub).await;
            }
        }
        let held: Vec<(StreamKey, String)> =
            lock(&self.inner.claims).drain().filter(|(_, c)| !c.pending).map(|(k, c)| (k, c.value.token)).collect();
        let store = &self.inner.store;
        let releases = futures_util::future::join_all(held.iter().map(|(k, t)| store.release(k, t)));
        let _ = tokio::time::timeout(self.inner.timeout * 2, releases).await;
        let _ = store.forget_node(&self.inner.node).await;
    }

    /// One pass over the claims, their Redis calls at once: released when their stream
    /// ended, written when their state changed or a refresh is due (a waiting claim every
    /// [`TICK`]: a takeover elsewhere is seen at once), claimed when taken without Redis; a
    /// claim found taken by another node ends its stream here.
    async fn tend_claims(&self, hub: &Hub, refresh_every: Duration) {
        enum Due {
            Release(String),
            Refresh(ClaimValue),
            Claim(ClaimValue),
        }
        let mut due: Vec<(StreamKey, u64, Due)> = Vec::new();
        {
            let mut claims = lock(&self.inner.claims);
            let mut gone = Vec::new();
            for (key, c) in claims.iter_mut() {
                if !c.confirmed || c.holders > 0 {
                    continue;
                }
                if c.ended() || c.stream.is_none() {
                    gone.push(key.clone());
                    if !c.pending {
                        due.push((key.clone(), c.generation, Due::Release(c.value.token.clone())));
                    }
                    continue;
                }
                let state = if c.waiting() { "waiting" } else { "live" };
                let changed = c.value.state != state;
                c.value.state = state.to_string();
                let every = if state == "waiting" { TICK } else { refresh_every };
                let stale = c.refreshed.is_none_or(|t| t.elapsed() >= every);
                if c.pending {
                    due.push((key.clone(), c.generation, Due::Claim(c.value.clone())));
                } else if changed || stale {
                    due.push((key.clone(), c.generation, Due::Refresh(c.value.clone())));
                }
            }
            for k in gone {
                claims.remove(&k);
            }
            self.inner.metrics.set_cluster_claims(claims.len());
        }
        let store = &self.inner.store;
        let ttl = self.inner.ttl;
        let calls = due.into_iter().map(|(key, generation, d)| async move {
            match d {
                Due::Release(token) => match store.release(&key, &token).await {
                    Ok(_) => info!(stream = %key, "cluster: claim released"),
                    Err(e) => self.set_up(false, &e),
                },
                Due::Refresh(value) => match store.refresh(&key, &value, ttl).await {
                    Ok(Refreshed::Held) => {
                        self.set_up(true, "");
                        self.refreshed(&key, generation, None);
                    }
                    Ok(Refreshed::Restored) => {
                        self.set_up(true, "");
                        info!(stream = %key, epoch = value.epoch, "cluster: claim written again (Redis had lost it)");
                        self.refreshed(&key, generation, None);
                    }
                    Ok(Refreshed::Lost(owner)) => {
                        self.set_up(true, "");
                        self.lost(&key, generation, &owner, Some(hub));
                    }
                    Err(e) => self.set_up(false, &e),
                },
                Due::Claim(value) => match store.claim(&key, &value, &self.inner.token_prefix, ttl).await {
                    Ok(ClaimOutcome::Claimed(epoch) | ClaimOutcome::TookOver { epoch, .. }) => {
                        self.set_up(true, "");
                        info!(stream = %key, epoch, "cluster: claimed a stream published while Redis was unreachable");
                        let mut claims = lock(&self.inner.claims);
                        if let Some(c) = claims.get_mut(&key).filter(|c| c.generation == generation) {
                            c.value.epoch = epoch;
                            c.pending = false;
                            c.refreshed = Some(Instant::now());
                        }
                    }
                    Ok(ClaimOutcome::Owned(owner)) => {
                        self.set_up(true, "");
                        self.lost(&key, generation, &owner, Some(hub));
                    }
                    Err(e) => self.set_up(false, &e),
                },
            }
        });
        futures_util::future::join_all(calls).await;
    }

    fn refreshed(&self, key: &StreamKey, generation: u64, state: Option<&str>) {
        if let Some(c) = lock(&self.inner.claims).get_mut(key).filter(|c| c.generation == generation) {
            c.refreshed = Some(Instant::now());
            if let Some(s) = state {
                c.value.state = s.to_string();
            }
        }
    }

    async fn heartbeat(&self, hub: &Hub) {
        let streams = hub.live_publishes();
        let viewers: usize = hub.streams().iter().map(|s| s.viewers()).sum();
        let metrics = &self.inner.metrics;
        let bytes_out: u64 = (crate::session::Output::ALL.iter())
            .map(|o| metrics.bytes_out.get_or_create(&crate::metrics::protocol(o.name())).get())
            .sum();
        let value = json!({
            "node": self.inner.node,
            "rtmp": self.inner.rtmp,
            "http": self.inner.http,
            "streams": streams,
            "viewers": viewers,
            "bytes_out": bytes_out,
            "started": self.inner.started,
            "at": unix_ms(),
            "version": env!("CARGO_PKG_VERSION"),
        });
        match self.inner.store.heartbeat(&self.inner.node, value.to_string(), self.inner.ttl).await {
            Ok(()) => self.set_up(true, ""),
            Err(e) => self.set_up(false, &e),
        }
    }

    /// `GET /api/cluster`: this node, the nodes that heartbeat, and who owns which stream.
    pub async fn overview(&self) -> serde_json::Value {
        if let Some((at, v)) = lock(&self.inner.overview).as_ref() {
            if at.elapsed() < Duration::from_secs(1) {
                return v.clone();
            }
        }
        let v = self.read_overview().await;
        *lock(&self.inner.overview) = Some((Instant::now(), v.clone()));
        v
    }

    async fn read_overview(&self) -> serde_json::Value {
        let store = &self.inner.store;
        let (nodes, streams) = match (store.list("node").await, store.list("stream").await) {
            (Ok(n), Ok(s)) => (n, s),
            (Err(e), _) | (_, Err(e)) => {
                self.set_up(false, &e);
                return json!({ "enabled": true, "node": self.inner.node, "redis": "down", "error": e,
                    "claims_here": self.local_claims() });
            }
        };
        let nodes: Vec<serde_json::Value> = nodes
            .into_iter()
            .filter_map(|(name, raw)| {
                let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
                let num = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
                let text = |k: &str| {
                    v.get(k).and_then(serde_json::Value::as_str).map(|s| s.chars().take(512).collect::<String>())
                };
                crate::hub::valid_name(&name).then(|| {
                    json!({ "node": name, "rtmp": text("rtmp"), "http": text("http"), "streams": num("streams"),
                        "viewers": num("viewers"), "bytes_out": num("bytes_out"), "started": num("started"),
                        "version": text("version") })
                })
            })
            .collect();
        let streams: Vec<serde_json::Value> = streams
            .into_iter()
            .filter_map(|(key, raw)| {
                let c = ClaimValue::parse(&raw)?;
                Some(json!({ "stream": key, "node": c.node, "epoch": c.epoch, "state": c.state, "since": c.since }))
            })
            .collect();
        json!({
            "enabled": true,
            "node": self.inner.node,
            "redis": "up",
            "ttl_ms": self.inner.ttl.as_millis() as u64,
            "fail_open": self.inner.fail_open,
            "nodes": nodes,
            "streams": streams,
            "claims_here": self.local_claims(),
        })
    }

    fn local_claims(&self) -> Vec<serde_json::Value> {
        let claims = lock(&self.inner.claims);
        let mut out: Vec<serde_json::Value> = claims
            .iter()
            .map(|(k, c)| json!({ "stream": k.to_string(), "epoch": c.value.epoch, "state": c.value.state, "pending": c.pending }))
            .collect();
        out.sort_by(|a, b| a["stream"].as_str().cmp(&b["stream"].as_str()));
        out
    }
}
