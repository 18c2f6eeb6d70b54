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
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
    #[error("the server is shutting down")]
    ShuttingDown,
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
    /// Shutting down: the streams ended for their viewers and no publish is taken.
    closing: std::sync::atomic::AtomicBool,
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
                closing: false.into(),
            }),
        }
    }

    /// Changes the live-stream limit (configuration reload); streams beyond it keep running.
    pub fn set_max_streams(&self, max: usize) {
        self.inner.max_streams.store(max, std::sync::atomic::Ordering::Relaxed);
    }

    /// Registers a publisher for `key` with the default GOP cache and reconnect grace.
    pub fn publish(&self, key: StreamKey, peer: SocketAddr) -> Result<Publisher, PublishError> {
        let grace = Duration::from_millis(self.inner.config.reconnect_grace_ms);
        self.publish_with(key, peer, self.inner.config.gop_cache.clone(), grace)
    }

    /// Registers a publisher for `key`: a new stream, or the stream of a publisher that
    /// left less than its reconnect grace ago (it continues, see [`Publisher`]). Fails
    /// while another publisher holds the key or when the stream limit is reached. When
    /// this publisher leaves, the stream waits `grace` for the next one.
    pub fn publish_with(
        &self,
        key: StreamKey,
        peer: SocketAddr,
        gop: GopCacheConfig,
        grace: Duration,
    ) -> Result<Publisher, PublishError> {
        let stream = {
            let mut streams = lock(&self.inner.streams);
            // under the registry lock, which `end_for_viewers` takes after setting it: no
            // stream starts (or resumes) that it would not end
            if self.inner.closing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(PublishError::ShuttingDown);
            }
            if let Some(waiting) = streams.get(&key) {
                // under the registry lock, so a grace that runs out cannot end it meanwhile
                if waiting.reattach(peer) {
                    return Ok(Publisher::new(waiting.clone(), Arc::downgrade(&self.inner), grace));
                }
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
        Ok(Publisher::new(stream, Arc::downgrade(&self.inner), grace))
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
        self.inner.closing.store(true, std::sync::atomic::Ordering::SeqCst);
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
}

impl HubInner {
    /// Frees `s`'s key (its publisher left and the stream ended).
    fn release(&self, s: &Arc<Stream>) {
        let mut streams = lock(&self.streams);
        if streams.get(s.key()).is_some_and(|cur| Arc::ptr_eq(cur, s)) {
            streams.remove(s.key());
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
}

/// Locks a mutex, recovering the data if another thread panicked while holding it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
