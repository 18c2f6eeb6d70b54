//! The stream hub: registry of live streams, per-stream codec config, GOP
//! cache and a bounded fan-out ring. Publishers never wait; viewers that lag
//! skip to the latest keyframe and are evicted if they keep lagging.
//!
//! Fan-out is by `Bytes` reference: an event is stored once in the stream's
//! ring and every viewer clones the handle, never the payload.

mod gop;
mod stream;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::Deserialize;
use thiserror::Error;
use tokio::sync::broadcast;

use crate::media::{CodecConfig, Frame};
use crate::metrics::Metrics;

pub use gop::GopCacheConfig;
pub use stream::{Evicted, Protocol, Publisher, Stream, StreamStats, Subscription, ViewerGuard};

/// What flows from a publisher to its viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
    /// `onMetaData` as an AMF0-encoded script data body: the string
    /// "onMetaData" followed by its object / ECMA array.
    Metadata(Bytes),
    /// New codec configuration (sent before the first frame and whenever it changes).
    Config(CodecConfig),
    Frame(Frame),
    /// The timeline breaks here (e.g. timestamps jumped); outputs restart their clocks.
    Discontinuity,
    /// The publisher left.
    EndOfStream,
}

impl HubEvent {
    /// Approximate heap bytes this event keeps alive.
    pub fn weight(&self) -> usize {
        let payload = match self {
            HubEvent::Metadata(b) => b.len(),
            HubEvent::Frame(f) => f.payload_len(),
            _ => 0,
        };
        payload + 64
    }
}

/// `APP/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub app: String,
    pub name: String,
}

impl StreamKey {
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        Self { app: app.into(), name: name.into() }
    }

    /// A key from client input, or `None` unless both parts are safe names (see [`valid_name`]).
    pub fn parse(app: &str, name: &str) -> Option<Self> {
        (valid_name(app) && valid_name(name)).then(|| Self::new(app, name))
    }
}

/// Names usable as app and stream: 1 to 128 of `[A-Za-z0-9_.-]`, not starting
/// with a dot. They become URL path segments, file names and metric labels.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

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
}

#[derive(Debug, Error)]
#[error("stream {0} is not live")]
pub struct NotFound(pub StreamKey);

/// The registry of live streams. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    config: HubConfig,
    max_streams: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    new_streams: broadcast::Sender<Arc<Stream>>,
}

impl Hub {
    /// A hub with no stream limit and its own metrics (tests, tools).
    pub fn new(config: HubConfig) -> Self {
        Self::with_limits(config, usize::MAX, Arc::new(Metrics::new()))
    }

    pub fn with_limits(config: HubConfig, max_streams: usize, metrics: Arc<Metrics>) -> Self {
        let (new_streams, _) = broadcast::channel(256);
        Self {
            inner: Arc::new(HubInner {
                config,
                max_streams: max_streams.into(),
                metrics,
                streams: Mutex::new(HashMap::new()),
                new_streams,
            }),
        }
    }

    /// Changes the live-stream limit (configuration reload); streams beyond it keep running.
    pub fn set_max_streams(&self, max: usize) {
        self.inner.max_streams.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Registers a publisher for `key` with the default GOP cache settings.
    pub fn publish(&self, key: StreamKey, peer: SocketAddr) -> Result<Publisher, PublishError> {
        self.publish_with(key, peer, self.inner.config.gop_cache.clone())
    }

    /// Registers a publisher for `key`. Fails while another publisher holds it
    /// or when the stream limit is reached.
    pub fn publish_with(
        &self,
        key: StreamKey,
        peer: SocketAddr,
        gop: GopCacheConfig,
    ) -> Result<Publisher, PublishError> {
        let stream = {
            let mut streams = lock(&self.inner.streams);
            if streams.contains_key(&key) {
                return Err(PublishError::AlreadyPublishing(key));
            }
            let max = self.inner.max_streams.load(std::sync::atomic::Ordering::Relaxed);
            if streams.len() >= max {
                return Err(PublishError::TooManyStreams(max));
            }
            let config = HubConfig { gop_cache: gop, ..self.inner.config.clone() };
            let stream = Arc::new(Stream::new(key.clone(), peer, config, self.inner.metrics.clone()));
            streams.insert(key, stream.clone());
            stream
        };
        let _ = self.inner.new_streams.send(stream.clone());
        let hub = Arc::downgrade(&self.inner);
        Ok(Publisher::new(
            stream,
            Box::new(move |s: &Arc<Stream>| {
                if let Some(inner) = hub.upgrade() {
                    let mut streams = lock(&inner.streams);
                    if streams.get(s.key()).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                        streams.remove(s.key());
                    }
                }
            }),
        ))
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

    /// Notifies of every stream that starts from now on (for outputs that follow all streams, like HLS).
    pub fn watch_new_streams(&self) -> broadcast::Receiver<Arc<Stream>> {
        self.inner.new_streams.subscribe()
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
