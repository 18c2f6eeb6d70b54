//! One live stream: its state, the fan-out ring, publisher and subscriptions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

mod subscription;
#[cfg(test)]
mod tests;
mod viewers;

pub use subscription::{Evicted, Subscription};
pub use viewers::{Protocol, StreamStats, ViewerGuard};

use super::fanout::Fanout;
use super::{lock, HubConfig, HubEvent, HubObserver, StreamKey, Track};
use crate::flv::TrackLabel;
use crate::media::CodecConfig;

/// What the stream's lock guards: the fan-out core and the wakers of parked viewers.
#[derive(Debug)]
struct State {
    fanout: Fanout,
    /// Live subscriptions: bounds `waiters` (wakers of viewers that left are dropped).
    subscribers: usize,
    /// Viewers waiting for the next wake-up; registered under this lock, so none is missed.
    waiters: Vec<Waker>,
    /// Counts wake-ups: a viewer registered in the current epoch is not registered twice.
    wake_epoch: u64,
    /// Subscriptions woken by every event, not in batches (see [`Stream::subscribe_eager`]).
    eager: Vec<Waker>,
    /// Counts the events that woke `eager`.
    eager_epoch: u64,
}

#[derive(Debug)]
pub struct Stream {
    key: StreamKey,
    peer: SocketAddr,
    started: SystemTime,
    started_at: Instant,
    state: Mutex<State>,
    pub stats: StreamStats,
    observer: Arc<dyn HubObserver>,
    /// Milliseconds after `started_at` when the publisher last delivered bytes.
    last_input_ms: AtomicU64,
    kick: CancellationToken,
    kick_reason: std::sync::OnceLock<&'static str>,
    /// A multitrack publish: its other tracks, each served as a stream of its own
    /// (`NAME~TRACK`, `NAME~aTRACK`: `StreamKey::track`, `StreamKey::audio_track`).
    tracks: Mutex<Tracks>,
}

/// The other tracks of a multitrack publish.
#[derive(Debug, Default)]
struct Tracks {
    video: Vec<u8>,
    audio: Vec<u8>,
    labels: Vec<TrackLabel>,
}

impl Stream {
    pub(super) fn new(key: StreamKey, peer: SocketAddr, config: HubConfig, observer: Arc<dyn HubObserver>) -> Self {
        Self {
            key,
            peer,
            started: SystemTime::now(),
            started_at: Instant::now(),
            state: Mutex::new(State {
                fanout: Fanout::new(&config),
                subscribers: 0,
                waiters: Vec::new(),
                wake_epoch: 0,
                eager: Vec::new(),
                eager_epoch: 0,
            }),
            stats: StreamStats::default(),
            observer,
            last_input_ms: AtomicU64::new(0),
            kick: CancellationToken::new(),
            tracks: Mutex::new(Tracks::default()),
            kick_reason: std::sync::OnceLock::new(),
        }
    }

    /// Asks the publisher's connection to close (admin kick, takeover by a new publisher).
    pub fn kick(&self, reason: &'static str) {
        let _ = self.kick_reason.set(reason);
        self.kick.cancel();
    }

    /// Resolves when the stream was kicked, with the reason given to [`Self::kick`].
    pub async fn kicked(&self) -> &'static str {
        self.kick.cancelled().await;
        self.kick_reason.get().copied().unwrap_or("kicked")
    }

    /// How long the publisher has delivered no bytes (see [`Self::count_bytes_in`]).
    pub fn input_idle(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_input_ms.load(Ordering::Relaxed));
        self.started_at.elapsed().saturating_sub(last)
    }

    /// Counts `n` bytes sent to a viewer of `protocol`.
    pub fn count_bytes_out(&self, protocol: Protocol, n: u64) {
        self.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.observer.bytes_out(protocol, n);
    }

    /// Counts `n` bytes received from the publisher (and notes when, see [`Self::input_idle`]).
    pub fn count_bytes_in(&self, n: u64) {
        let now = u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_input_ms.store(now, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.observer.bytes_in(n);
    }

    /// Counts a viewer disconnected for stalling.
    pub fn count_eviction(&self) {
        self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        self.observer.eviction();
    }

    pub fn key(&self) -> &StreamKey {
        &self.key
    }

    pub fn publisher_addr(&self) -> SocketAddr {
        self.peer
    }

    pub fn started(&self) -> SystemTime {
        self.started
    }

    pub fn uptime(&self) -> std::time::Duration {
        self.started_at.elapsed()
    }

    /// The other video tracks of a multitrack publish, by track id.
    pub fn tracks(&self) -> Vec<u8> {
        lock(&self.tracks).video.clone()
    }

    /// The other audio tracks of a multitrack publish, by track id.
    pub fn audio_tracks(&self) -> Vec<u8> {
        lock(&self.tracks).audio.clone()
    }

    pub fn add_track(&self, track: Track) {
        let mut t = lock(&self.tracks);
        match track {
            Track::Video(id) => t.video.push(id),
            Track::Audio(id) => t.audio.push(id),
        }
    }

    /// The names and languages the publisher's metadata gave its audio tracks.
    pub fn audio_labels(&self) -> Vec<TrackLabel> {
        lock(&self.tracks).labels.clone()
    }

    pub fn set_audio_labels(&self, labels: Vec<TrackLabel>) {
        lock(&self.tracks).labels = labels;
    }

    pub fn codec(&self) -> CodecConfig {
        lock(&self.state).fanout.codec().clone()
    }

    pub fn metadata(&self) -> Option<Bytes> {
        lock(&self.state).fanout.metadata().cloned()
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.state).fanout.is_ended()
    }

    /// (events, payload bytes) held by the GOP cache.
    pub fn gop_cache_size(&self) -> (usize, usize) {
        lock(&self.state).fanout.gop_size()
    }

    fn push(&self, ev: HubEvent) {
        if let HubEvent::Frame(f) = &ev {
            self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
            if f.is_video() {
                self.stats.video_frames_in.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (woken, eager) = {
            let mut st = lock(&self.state);
            let woken = if st.fanout.push(ev) {
                st.wake_epoch += 1;
                let n = st.waiters.len();
                std::mem::replace(&mut st.waiters, Vec::with_capacity(n))
            } else {
                Vec::new()
            };
            st.eager_epoch += 1;
            (woken, std::mem::take(&mut st.eager))
        };
        // outside the lock: a woken viewer may run on another worker at once
        for w in woken.into_iter().chain(eager) {
            w.wake();
        }
    }
}

type OnDrop = Box<dyn FnOnce(&Arc<Stream>) + Send + Sync>;

/// The write side of a stream. `send` never waits. Dropping it ends the
/// stream: viewers receive `EndOfStream` and the key becomes free.
pub struct Publisher {
    stream: Arc<Stream>,
    on_drop: Option<OnDrop>,
}

impl Publisher {
    pub(super) fn new(stream: Arc<Stream>, on_drop: OnDrop) -> Self {
        Self { stream, on_drop: Some(on_drop) }
    }

    pub fn send(&self, ev: HubEvent) {
        self.stream.push(ev);
    }

    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.stream.push(HubEvent::EndOfStream);
        if let Some(f) = self.on_drop.take() {
            f(&self.stream);
        }
    }
}
