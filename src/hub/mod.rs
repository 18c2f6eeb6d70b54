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

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use thiserror::Error;
use tokio::sync::mpsc;

pub use gop::GopCacheConfig;
pub use observer::{HubObserver, NoObserver};
pub use stream::{Evicted, Protocol, Publisher, Stream, StreamStats, Subscription, ViewerGuard};

/// The event vocabulary lives in the sans-IO core (`livegate_proto::media::Event`); the
/// hub keeps its historical name for it.
pub use livegate_proto::media::Event as HubEvent;
pub use livegate_proto::{valid_name, StreamKey, Track};

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
    observer: Arc<dyn HubObserver>,
    streams: Mutex<HashMap<StreamKey, Arc<Stream>>>,
    /// Woken whenever a stream key is freed (a publisher left), for publishes waiting on a key.
    released: tokio::sync::Notify,
    /// Outputs that follow every stream (HLS): told of each new one, losslessly.
    watchers: Mutex<Vec<mpsc::UnboundedSender<Arc<Stream>>>>,
}

impl Hub {
    /// A hub with no stream limit that reports to nobody (tests, tools).
    pub fn new(config: HubConfig) -> Self {
        Self::with_limits(config, usize::MAX, Arc::new(NoObserver))
    }

    /// A hub of at most `max_streams` live streams that reports its counts to `observer`.
    pub fn with_limits(config: HubConfig, max_streams: usize, observer: Arc<dyn HubObserver>) -> Self {
        Self {
            inner: Arc::new(HubInner {
                config,
                max_streams: max_streams.into(),
                observer,
                streams: Mutex::new(HashMap::new()),
                released: tokio::sync::Notify::new(),
                watchers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Changes the live-stream limit (configuration reload); streams beyond it keep running.
    pub fn set_max_streams(&self, max: usize) {
        self.inner.max_streams.store(max, std::sync::atomic::Ordering::Relaxed);
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
            let stream = Arc::new(Stream::new(key.clone(), peer, config, self.inner.observer.clone()));
            streams.insert(key, stream.clone());
            stream
        };
        // every watcher hears of every stream (a closed watcher is dropped); the channel
        // holds at most the streams started before the watcher read them
        lock(&self.inner.watchers).retain(|w| w.send(stream.clone()).is_ok());
        let hub = Arc::downgrade(&self.inner);
        Ok(Publisher::new(
            stream,
            Box::new(move |s: &Arc<Stream>| {
                if let Some(inner) = hub.upgrade() {
                    let mut streams = lock(&inner.streams);
                    if streams.get(s.key()).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
                        streams.remove(s.key());
                        drop(streams);
                        inner.released.notify_waiters();
                    }
                }
            }),
        ))
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

    /// Notifies of every stream that starts from now on (for outputs that follow all
    /// streams, like HLS). Lossless: a watcher that is slow to read misses nothing.
    pub fn watch_new_streams(&self) -> mpsc::UnboundedReceiver<Arc<Stream>> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.inner.watchers).push(tx);
        rx
    }
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
