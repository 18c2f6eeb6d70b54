//! The stream hub: registry of live streams, per-stream codec config, GOP
//! cache and a bounded fan-out ring. Publishers never wait; viewers that lag
//! skip to the latest keyframe and are evicted if they keep lagging.
//!
//! Fan-out is by `Bytes` reference: an event is stored once in the stream's
//! ring and every viewer clones the handle, never the payload.

mod fanout;
mod gop;
mod observer;
mod stream;
#[cfg(test)]
mod testutil;
mod timeline;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;

pub use gop::GopCacheConfig;
pub use observer::{HubObserver, Lifecycle, NoObserver};
use stream::Resume;
pub use stream::{Evicted, Publisher, Stream, StreamStats, Subscription, ViewerGuard};

/// The event vocabulary lives in the sans-IO core (`livegate_proto::media::Event`); the
/// hub keeps its historical name for it.
pub use livegate_proto::media::Event as HubEvent;
pub use livegate_proto::{valid_name, valid_stream_name, StreamKey, Track};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Events kept per stream for viewers to catch up from (the fan-out ring).
    pub ring_events: usize,
    /// Upper bound on payload bytes held by the ring.
    pub ring_bytes: usize,
    /// A viewer further behind live than this skips to the latest keyframe.
    pub max_lag_ms: u64,
    /// A viewer that had to skip this many times without catching up is evicted.
    pub max_lag_skips: u32,
    /// Viewers are woken (and their sockets written) once per this much video media time
    /// instead of once per frame: fewer task wake-ups and socket writes per viewer, at up to
    /// this much added delay. 0 wakes them for every video frame.
    pub merge_write_ms: u64,
    /// How long a stream whose publisher went away (closed, failed, timed out, taken
    /// over) stays for it to come back: viewers stay connected, new ones may join, and a
    /// publish on the same key within it continues the stream on one timeline. 0 ends
    /// the stream at once. Per app: `[apps.NAME] reconnect_grace_ms`.
    pub reconnect_grace_ms: u64,
    pub gop_cache: GopCacheConfig,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            ring_events: 2048,
            ring_bytes: 32 * 1024 * 1024,
            max_lag_ms: 5_000,
            max_lag_skips: 3,
            merge_write_ms: 50,
            reconnect_grace_ms: 10_000,
            gop_cache: GopCacheConfig::default(),
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("stream {0} is already being published")]
    AlreadyPublishing(StreamKey),
    #[error("the limit of {0} live streams is reached")]
    TooManyStreams(usize),
    #[error(
        "stream {0} waits for its publisher to come back (the reconnect grace): only the credential it was \
         published with continues it; another may publish it once the grace is over"
    )]
    WaitingForPublisher(StreamKey),
    #[error("the server is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Error)]
#[error("stream {0} is not live")]
pub struct NotFound(pub StreamKey);

/// How many streams the registry takes (`[limits]`; changed on reload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Publishes: streams with a publisher. The track streams of a multitrack publish
    /// (`NAME~TRACK`, at most 7 video and 7 audio) ride on it and are not counted.
    pub max_streams: usize,
    /// Streams waiting for their publisher to come back (the reconnect grace), in all; past
    /// it the oldest waiting stream of the address that has the most waiting ends early.
    pub max_waiting_streams: usize,
    /// Streams waiting for their publisher, per address of the publisher that left; past it
    /// that address's oldest waiting stream ends early. 0: no such limit.
    pub max_waiting_streams_per_ip: usize,
}

impl StreamLimits {
    pub const UNLIMITED: Self =
        Self { max_streams: usize::MAX, max_waiting_streams: usize::MAX, max_waiting_streams_per_ip: 0 };
}

/// What a publisher was admitted with (the publish key, the query an `on_publish` callback
/// allowed), kept as a keyed hash: a stream waiting for its publisher is continued, and a
/// silent publisher taken over, only by a publish with the same credential. Publishing
/// that needs no credential is [`Credential::OPEN`]: then anyone may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Credential(Option<u64>);

impl Credential {
    /// Publishing is open: nothing ties a stream to its publisher.
    pub const OPEN: Self = Self(None);

    /// The credential made of `parts`, hashed with a key chosen at random per process
    /// (nothing secret is kept, and comparing two reveals nothing about either).
    pub fn of(parts: &[&str]) -> Self {
        use std::hash::BuildHasher;
        static KEY: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
        Self(Some(KEY.get_or_init(std::collections::hash_map::RandomState::new).hash_one(parts)))
    }

    /// Whether a publisher admitted with `other` may continue (or take over) a stream
    /// published with this credential.
    pub fn admits(&self, other: &Credential) -> bool {
        self.0.is_none() || self == other
    }
}

/// The registry of live streams. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    limits: Mutex<StreamLimits>,
    /// Streams with a publisher, track streams not counted (see [`StreamLimits::max_streams`]).
    live: AtomicUsize,
    /// Waiting streams ended early by [`StreamLimits`] (for a rate-limited log).
    waiting_ended: AtomicU64,
    observer: Arc<dyn HubObserver>,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Woken whenever a stream key is freed (a publisher left), for publishes waiting on a key.
    released: tokio::sync::Notify,
    /// Outputs that follow every stream (HLS): told of each new one, losslessly.
    watchers: Mutex<Vec<mpsc::UnboundedSender<Arc<Stream>>>>,
    /// Shutting down: the streams ended for their viewers and no publish is taken.
    closing: std::sync::atomic::AtomicBool,
}

impl Hub {
    /// A hub with no stream limit that reports to nobody (tests, tools).
    pub fn new(config: HubConfig) -> Self {
        Self::with_limits(config, StreamLimits::UNLIMITED, Arc::new(NoObserver))
    }

    /// A hub that takes streams within `limits` and reports its counts to `observer`.
    pub fn with_limits(config: HubConfig, limits: StreamLimits, observer: Arc<dyn HubObserver>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                config,
                limits: Mutex::new(limits),
                live: AtomicUsize::new(0),
                waiting_ended: AtomicU64::new(0),
                observer,
                streams: Mutex::new(HashMap::new()),
                released: tokio::sync::Notify::new(),
                watchers: Mutex::new(Vec::new()),
                closing: false.into(),
            }),
        }
    }

    /// Changes the stream limits (configuration reload); streams beyond them keep running.
    pub fn set_limits(&self, limits: StreamLimits) {
        *lock(&self.inner.limits) = limits;
    }

    /// Streams with a publisher, a multitrack publish's track streams not counted (what
    /// [`StreamLimits::max_streams`] bounds).
    pub fn live_publishes(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Registers a publisher for `key` with the default GOP cache and reconnect grace, on
    /// open publishing.
    pub fn publish(&self, key: StreamKey, peer: SocketAddr) -> Result<Publisher, PublishError> {
        let grace = Duration::from_millis(self.inner.config.reconnect_grace_ms);
        self.publish_with(key, peer, Credential::OPEN, self.inner.config.gop_cache.clone(), grace)
    }

    /// Registers a publisher for `key`, admitted with `credential`: a new stream, or the
    /// stream of a publisher that left less than its reconnect grace ago when that one's
    /// credential admits this one (it continues, see [`Publisher`]). Fails while another
    /// publisher holds the key, while the stream waits for a publisher of another
    /// credential, or when [`StreamLimits::max_streams`] publishes are live (a multitrack
    /// publish's track keys, `NAME~TRACK`, are not counted). When this publisher leaves,
    /// the stream waits `grace` for the next one.
    pub fn publish_with(
        &self,
        key: StreamKey,
        peer: SocketAddr,
        credential: Credential,
        gop: GopCacheConfig,
        grace: Duration,
    ) -> Result<Publisher, PublishError> {
        let counted = key.split_track().is_none();
        let stream = {
            let mut streams = lock(&self.inner.streams);
            // under the registry lock, which `end_for_viewers` takes after setting it: no
            // stream starts (or resumes) that it would not end
            if self.inner.closing.load(Ordering::SeqCst) {
                return Err(PublishError::ShuttingDown);
            }
            let max = lock(&self.inner.limits).max_streams;
            // (the count changes under the registry lock but for departures, which only
            // make room: a publish checked here cannot pass the limit)
            let full = counted && self.inner.live.load(Ordering::Relaxed) >= max;
            if let Some(waiting) = streams.get(&key) {
                // under the registry lock, so a grace that runs out cannot end it meanwhile
                match waiting.resumable_by(&credential) {
                    Resume::Live => return Err(PublishError::AlreadyPublishing(key)),
                    Resume::OtherCredential => return Err(PublishError::WaitingForPublisher(key)),
                    Resume::Yes if full => return Err(PublishError::TooManyStreams(max)),
                    Resume::Yes => {
                        if !waiting.reattach(peer, credential) {
                            // (not reached: whatever ends a waiting stream holds the registry lock)
                            return Err(PublishError::AlreadyPublishing(key));
                        }
                        if counted {
                            self.inner.live.fetch_add(1, Ordering::Relaxed);
                            self.inner.observer.lifecycle(&key, Lifecycle::Resumed(peer));
                        }
                        return Ok(Publisher::new(waiting.clone(), Arc::downgrade(&self.inner), grace, counted));
                    }
                }
            }
            if full {
                return Err(PublishError::TooManyStreams(max));
            }
            let config = HubConfig { gop_cache: gop, ..self.inner.config.clone() };
            let stream = Arc::new(Stream::new(key.clone(), peer, credential, config, self.inner.observer.clone()));
            streams.insert(key, stream.clone());
            if counted {
                self.inner.live.fetch_add(1, Ordering::Relaxed);
            }
            stream
        };
        // every watcher hears of every stream (a closed watcher is dropped); the channel
        // holds at most the streams started before the watcher read them
        lock(&self.inner.watchers).retain(|w| w.send(stream.clone()).is_ok());
        if counted {
            self.inner.observer.lifecycle(stream.key(), Lifecycle::Published(peer));
        }
        Ok(Publisher::new(stream, Arc::downgrade(&self.inner), grace, counted))
    }

    /// Resolves the next time any stream key is freed (its publisher left). Call it before
    /// trying [`Self::publish_with`] and await it after a failure, so no release is missed
    /// in between (`Notify::notified` counts from its creation once enabled).
    pub fn key_released(&self) -> impl std::future::Future<Output = ()> + '_ {
        let mut notified = Box::pin(self.inner.released.notified());
        notified.as_mut().enable();
        notified
    }

    pub fn get(&self, key: &StreamKey) -> Option<Arc<Stream>> {
        lock(&self.inner.streams).get(key).cloned()
    }

    /// Subscribes to a live stream: codec config, metadata and the GOP cache first, then live events.
    pub fn subscribe(&self, key: &StreamKey) -> Result<Subscription, NotFound> {
        self.get(key).map(|s| s.subscribe()).ok_or_else(|| NotFound(key.clone()))
    }

    /// All live streams, sorted by key.
    pub fn streams(&self) -> Vec<Arc<Stream>> {
        let mut v: Vec<_> = lock(&self.inner.streams).values().cloned().collect();
        v.sort_by(|a, b| a.key().cmp(b.key()));
        v
    }

    /// At shutdown: every stream ends for its viewers (`EndOfStream` after what they have not
    /// read yet), so HTTP-FLV, WebSocket-FLV and RTMP viewers finish through their
    /// subscription instead of each polling the shutdown token on every batch.
    /// From then on no publish is taken (`PublishError::ShuttingDown`), so no stream
    /// starts that its viewers would wait on.
    pub fn end_for_viewers(&self) {
        self.inner.closing.store(true, Ordering::SeqCst);
        for stream in self.streams() {
            stream.push(HubEvent::EndOfStream);
        }
    }

    /// Notifies of every stream that starts from now on (for outputs that follow all
    /// streams, like HLS). Lossless: a watcher that is slow to read misses nothing.
    pub fn watch_new_streams(&self) -> mpsc::UnboundedReceiver<Arc<Stream>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.watchers).push(tx);
        rx
    }

    /// Ends the stream `key` now if it waits for its publisher (the cluster directory gave
    /// its key to another node): its viewers get the end of stream. False when it does not
    /// wait.
    pub fn end_waiting(&self, key: &StreamKey) -> bool {
        self.inner.end_waiting(key)
    }
}

impl HubInner {
    /// Frees `s`'s key (its publisher left and the stream ended).
    fn release(&self, s: &Arc<Stream>) {
        let mut streams = lock(&self.streams);
        if streams.get(s.key()).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            streams.remove(s.key());
            // under the registry lock: a publish of the key, taken once it is released,
            // is reported after this
            if s.key().split_track().is_none() {
                self.observer.lifecycle(s.key(), Lifecycle::Ended);
            }
            drop(streams);
            self.released.notify_waiters();
        }
    }

    /// The reconnect grace of `s`'s wait `epoch` ran out: unless a publisher came back,
    /// the stream ends and its key is freed.
    fn expire(&self, s: &Arc<Stream>, epoch: u64) {
        {
            let streams = lock(&self.streams);
            if !s.expire(epoch) {
                return;
            }
            drop(streams);
        }
        tracing::info!(stream = %s.key(), "no publisher came back within the reconnect grace; the stream ends");
        s.push(HubEvent::EndOfStream);
        self.release(s);
    }

    /// Whether the track stream `track` of a multitrack publish whose publisher left is to
    /// wait for it: only while the stream it belongs to waits too (or is live, leaving in a
    /// moment). A track whose stream ended (at the end of the grace, or early by the
    /// waiting-stream limits) ends at once.
    fn track_may_wait(&self, track: &StreamKey) -> bool {
        let Some((main, _)) = track.split_track() else { return true };
        lock(&self.streams).get(&main).is_some_and(|s| !s.expired())
    }

    /// `left`'s publisher went away and it waits for it: holds the waiting streams within
    /// [`StreamLimits::max_waiting_streams_per_ip`] (the oldest of `left`'s address end early)
    /// and [`StreamLimits::max_waiting_streams`] (the oldest of the address that has the most
    /// waiting end early). Logged (rate-limited) and counted
    /// (`livegate_limit_hits_total{limit="waiting_streams_per_ip"|"waiting_streams"}`).
    fn bound_waiting(&self, left: &Arc<Stream>) {
        let limits = *lock(&self.limits);
        let ip = left.publisher_addr().ip();
        let mut ended: Vec<(Arc<Stream>, &'static str)> = Vec::new();
        {
            let streams = lock(&self.streams);
            // the waiting publishes, oldest first (track streams follow theirs)
            let mut waiting: Vec<(Instant, IpAddr, &Arc<Stream>)> = streams
                .values()
                .filter(|s| s.key().split_track().is_none())
                .filter_map(|s| s.waiting_peer().map(|(since, peer)| (since, peer.ip(), s)))
                .collect();
            waiting.sort_by_key(|w| w.0);
            if limits.max_waiting_streams_per_ip > 0 {
                let mut over =
                    waiting.iter().filter(|w| w.1 == ip).count().saturating_sub(limits.max_waiting_streams_per_ip);
                waiting.retain(|w| {
                    if over > 0 && w.1 == ip {
                        over -= 1;
                        ended.push((w.2.clone(), "waiting_streams_per_ip"));
                        return false;
                    }
                    true
                });
            }
            while waiting.len() > limits.max_waiting_streams {
                let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
                for w in &waiting {
                    *per_ip.entry(w.1).or_default() += 1;
                }
                // the address with the most waiting streams (of equals, the one whose oldest is
                // oldest) gives up its oldest
                let most = per_ip.values().copied().max().unwrap_or(0);
                let Some(i) = waiting.iter().position(|w| per_ip.get(&w.1) == Some(&most)) else { break };
                ended.push((waiting.remove(i).2.clone(), "waiting_streams"));
            }
            // under the registry lock: none of them is continued meanwhile
            ended.retain(|(s, _)| s.end_waiting());
        }
        for (s, limit) in ended {
            self.observer.limit_hit(limit);
            let n = self.waiting_ended.fetch_add(1, Ordering::Relaxed) + 1;
            // the first few, then one in a thousand: a client cycling publishes cannot flood the log
            if n <= 3 || n.is_multiple_of(1000) {
                let (max, per_ip) = (limits.max_waiting_streams, limits.max_waiting_streams_per_ip);
                tracing::warn!(stream = %s.key(), publisher = %s.publisher_addr(), count = n,
                    "a stream waiting for its publisher ends early: more than limits.{} ({}) streams wait{}",
                    if limit == "waiting_streams" { "max_waiting_streams" } else { "max_waiting_streams_per_ip" },
                    if limit == "waiting_streams" { max } else { per_ip },
                    if limit == "waiting_streams" { " (the oldest of the address with the most ends)" } else { " for this address" });
            }
            self.finish_waiting(&s);
        }
    }

    fn end_waiting(&self, key: &StreamKey) -> bool {
        // under the registry lock: it is not continued meanwhile
        let s = lock(&self.streams).get(key).filter(|s| s.end_waiting()).cloned();
        s.map(|s| self.finish_waiting(&s)).is_some()
    }

    /// A waiting stream that [`Stream::end_waiting`] ended: its viewers are told and its key
    /// freed; its tracks' streams end with it.
    fn finish_waiting(&self, s: &Arc<Stream>) {
        s.push(HubEvent::EndOfStream);
        self.release(s);
        let tracks = s.tracks().into_iter().map(|t| s.key().track(t));
        for key in tracks.chain(s.audio_tracks().into_iter().map(|t| s.key().audio_track(t))) {
            // under the registry lock, as above
            let track = lock(&self.streams).get(&key).filter(|t| t.end_waiting()).cloned();
            if let Some(t) = track {
                t.push(HubEvent::EndOfStream);
                self.release(&t);
            }
        }
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
