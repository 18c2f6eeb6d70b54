//! One live stream: its state, the fan-out ring, publisher and subscriptions.

use std::any::Any;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

mod subscription;
#[cfg(test)]
mod tests;
mod viewers;

pub use subscription::{Evicted, Subscription};
pub use viewers::{StreamStats, ViewerGuard};

use super::fanout::Fanout;
use super::timeline::Timeline;
use super::{lock, Credential, HubConfig, HubEvent, HubInner, HubObserver, StreamKey, Track};
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
    /// Timestamps and configurations across publisher reconnects.
    timeline: Timeline,
}

/// Who publishes the stream, or since when nobody does.
#[derive(Debug)]
struct Slot {
    peer: SocketAddr,
    /// What the current (or last) publisher was admitted with: only the same continues
    /// the stream within the grace, or takes it over.
    credential: Credential,
    /// The publisher left at this instant and may come back within the reconnect grace.
    waiting_since: Option<Instant>,
    /// Counts publishers (a grace timer ends only the wait it was started for).
    epoch: u64,
    /// Publishers that came back within the grace.
    reconnects: u64,
    /// Cancelled to make the current publisher's connection close.
    kick: CancellationToken,
    kick_reason: Option<&'static str>,
    /// The next departure ends the stream at once (an admin kick).
    end_now: bool,
    /// The stream ended because nobody came back within the grace.
    expired: bool,
    /// The current publisher announced Enhanced RTMP v2's reconnect capability.
    can_reconnect: bool,
    /// Cancelled to ask the current publisher to reconnect (to `reconnect_to`, if set).
    reconnect: CancellationToken,
    reconnect_to: Option<String>,
}

#[derive(Debug)]
pub struct Stream {
    key: StreamKey,
    slot: Mutex<Slot>,
    started: SystemTime,
    started_at: Instant,
    state: Mutex<State>,
    pub stats: StreamStats,
    observer: Arc<dyn HubObserver>,
    /// Milliseconds after `started_at` when the publisher last delivered bytes.
    last_input_ms: AtomicU64,
    /// A multitrack publish: its other tracks, each served as a stream of its own
    /// (`NAME~TRACK`, `NAME~aTRACK`: `StreamKey::track`, `StreamKey::audio_track`).
    tracks: Mutex<Tracks>,
    /// What a layer above keeps per stream, of a type the hub does not know (the session
    /// layer's viewers per output): made on first use, dropped with the stream.
    extension: OnceLock<Arc<dyn Any + Send + Sync>>,
}

/// The other tracks of a multitrack publish.
#[derive(Debug, Default)]
struct Tracks {
    video: Vec<u8>,
    audio: Vec<u8>,
    labels: Vec<TrackLabel>,
}

impl Stream {
    pub(super) fn new(
        key: StreamKey,
        peer: SocketAddr,
        credential: Credential,
        config: HubConfig,
        observer: Arc<dyn HubObserver>,
    ) -> Self {
        Self {
            key,
            slot: Mutex::new(Slot {
                peer,
                credential,
                waiting_since: None,
                epoch: 0,
                reconnects: 0,
                kick: CancellationToken::new(),
                kick_reason: None,
                end_now: false,
                expired: false,
                can_reconnect: false,
                reconnect: CancellationToken::new(),
                reconnect_to: None,
            }),
            started: SystemTime::now(),
            started_at: Instant::now(),
            state: Mutex::new(State {
                fanout: Fanout::new(&config),
                subscribers: 0,
                waiters: Vec::new(),
                wake_epoch: 0,
                eager: Vec::new(),
                eager_epoch: 0,
                timeline: Timeline::default(),
            }),
            stats: StreamStats::default(),
            observer,
            last_input_ms: AtomicU64::new(0),
            tracks: Mutex::new(Tracks::default()),
            extension: OnceLock::new(),
        }
    }

    /// Asks the publisher's connection to close (takeover by a new publisher, which then
    /// continues the stream).
    pub fn kick(&self, reason: &'static str) {
        let mut slot = lock(&self.slot);
        slot.kick_reason.get_or_insert(reason);
        slot.kick.cancel();
    }

    /// [`Self::kick`], and the stream ends when the publisher has left, without waiting
    /// for it to come back (an admin kick).
    pub fn kick_and_end(&self, reason: &'static str) {
        lock(&self.slot).end_now = true;
        self.kick(reason);
    }

    /// Resolves when the current publisher was kicked, with the reason given to [`Self::kick`].
    pub async fn kicked(&self) -> &'static str {
        let token = lock(&self.slot).kick.clone();
        token.cancelled().await;
        lock(&self.slot).kick_reason.unwrap_or("kicked")
    }

    /// The publisher announced that it can be asked to reconnect (Enhanced RTMP v2).
    pub fn set_publisher_can_reconnect(&self, can: bool) {
        lock(&self.slot).can_reconnect = can;
    }

    /// Asks the publisher to reconnect (to `target`, else to where it is connected):
    /// false when it did not announce that it can (then nothing was asked).
    pub fn request_reconnect(&self, target: Option<String>) -> bool {
        let mut slot = lock(&self.slot);
        if !slot.can_reconnect || slot.waiting_since.is_some() {
            return false;
        }
        slot.reconnect_to = target;
        slot.reconnect.cancel();
        true
    }

    /// Resolves when the current publisher is asked to reconnect, with the target.
    pub async fn reconnect_requested(&self) -> Option<String> {
        let token = lock(&self.slot).reconnect.clone();
        token.cancelled().await;
        lock(&self.slot).reconnect_to.clone()
    }

    /// Since when the stream has no publisher and waits for it to come back (the
    /// reconnect grace), if it does.
    pub fn waiting_since(&self) -> Option<Instant> {
        lock(&self.slot).waiting_since
    }

    /// Publishers that came back within the reconnect grace.
    pub fn reconnects(&self) -> u64 {
        lock(&self.slot).reconnects
    }

    /// Whether the stream ended because its publisher did not come back within the grace
    /// (or it was ended early by the waiting-stream limits).
    pub fn expired(&self) -> bool {
        lock(&self.slot).expired
    }

    /// The publisher left: the stream waits for it; returns the wait's epoch, or None
    /// when the stream is to end at once (an admin kick).
    fn begin_waiting(&self, now: Instant) -> Option<u64> {
        let mut slot = lock(&self.slot);
        if std::mem::take(&mut slot.end_now) {
            return None;
        }
        slot.waiting_since = Some(now);
        Some(slot.epoch)
    }

    /// Since when the stream waits for its publisher, and that publisher's address.
    pub(super) fn waiting_peer(&self) -> Option<(Instant, SocketAddr)> {
        let slot = lock(&self.slot);
        slot.waiting_since.filter(|_| !slot.expired).map(|since| (since, slot.peer))
    }

    /// Whether a publisher admitted with `credential` may take the stream over (or continue
    /// it): the one it was published with does, and anyone where publishing was open.
    pub fn admits(&self, credential: &Credential) -> bool {
        lock(&self.slot).credential.admits(credential)
    }

    /// Whether a publisher admitted with `credential` may continue the stream now.
    pub(super) fn resumable_by(&self, credential: &Credential) -> Resume {
        let slot = lock(&self.slot);
        if slot.waiting_since.is_none() || slot.expired {
            Resume::Live
        } else if !slot.credential.admits(credential) {
            Resume::OtherCredential
        } else {
            Resume::Yes
        }
    }

    /// A publisher comes back to a waiting stream; false when it is not waiting.
    pub(super) fn reattach(&self, peer: SocketAddr, credential: Credential) -> bool {
        {
            let mut slot = lock(&self.slot);
            if slot.waiting_since.is_none() || slot.expired {
                return false;
            }
            slot.waiting_since = None;
            slot.epoch += 1;
            slot.reconnects += 1;
            // a kick meant the publisher that left, not this one
            slot.end_now = false;
            slot.peer = peer;
            slot.credential = credential;
            slot.kick = CancellationToken::new();
            slot.kick_reason = None;
            slot.can_reconnect = false;
            slot.reconnect = CancellationToken::new();
            slot.reconnect_to = None;
        }
        lock(&self.state).timeline.reattach();
        let now = u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_input_ms.store(now, Ordering::Relaxed);
        true
    }

    /// The grace of wait `epoch` is over: true (and the stream is done) unless a
    /// publisher came back.
    pub(super) fn expire(&self, epoch: u64) -> bool {
        if lock(&self.slot).epoch != epoch {
            return false;
        }
        self.end_waiting()
    }

    /// The stream stops waiting for its publisher and is done: true unless it was not
    /// waiting (a publisher is on, or it ended already). Called under the registry lock,
    /// which a publish holds from [`Self::resumable_by`] to [`Self::reattach`].
    pub(super) fn end_waiting(&self) -> bool {
        let mut slot = lock(&self.slot);
        if slot.waiting_since.is_none() || slot.expired {
            return false;
        }
        slot.waiting_since = None;
        slot.expired = true;
        true
    }

    /// How long the publisher has delivered no bytes (see [`Self::count_bytes_in`]).
    pub fn input_idle(&self) -> std::time::Duration {
        let last = std::time::Duration::from_millis(self.last_input_ms.load(Ordering::Relaxed));
        self.started_at.elapsed().saturating_sub(last)
    }

    /// Counts `n` bytes sent to a viewer.
    pub fn count_bytes_out(&self, n: u64) {
        self.stats.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// The stream's extension of type `T`, made with `T::default()` on first use (one per
    /// stream, whoever asks first; None when it was made of another type).
    pub fn extension<T: Any + Send + Sync + Default>(&self) -> Option<Arc<T>> {
        self.extension.get_or_init(|| Arc::new(T::default())).clone().downcast::<T>().ok()
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

    /// The current publisher's address (the last one's while waiting for it).
    pub fn publisher_addr(&self) -> SocketAddr {
        lock(&self.slot).peer
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
        // a publisher that came back starts its tracks again
        let list = match track {
            Track::Video(_) => &mut t.video,
            Track::Audio(_) => &mut t.audio,
        };
        let (Track::Video(id) | Track::Audio(id)) = track;
        if !list.contains(&id) {
            list.push(id);
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

    /// The keyframe the GOP cache starts with, and the video configuration it decodes with
    /// (None without video, or while the cache holds no whole GOP).
    pub fn latest_keyframe(&self) -> Option<(Arc<crate::media::VideoConfig>, crate::media::VideoFrame)> {
        let state = lock(&self.state);
        let config = state.fanout.codec().video.clone()?;
        let frame = state.fanout.gop_keyframe()?;
        Some((config, frame))
    }

    /// (events, payload bytes) held by the GOP cache.
    pub fn gop_cache_size(&self) -> (usize, usize) {
        lock(&self.state).fanout.gop_size()
    }

    pub(super) fn push(&self, mut ev: HubEvent) {
        if let HubEvent::Frame(f) = &ev {
            self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
            if f.is_video() {
                self.stats.video_frames_in.fetch_add(1, Ordering::Relaxed);
            }
        }
        let now = Instant::now();
        let (woken, eager) = {
            let mut st = lock(&self.state);
            let st = &mut *st;
            if !st.timeline.apply(&mut ev, st.fanout.codec(), now) {
                return;
            }
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

/// The write side of a stream. `send` never waits. Dropping it ends the stream (viewers
/// receive `EndOfStream` and the key becomes free), or with a reconnect grace, makes the
/// stream wait that long for a publisher to come back (`Hub::publish_with` on its key):
/// viewers stay and receive nothing meanwhile.
pub struct Publisher {
    stream: Arc<Stream>,
    hub: Weak<HubInner>,
    grace: Duration,
    /// Counted as a live publish (not the track stream of a multitrack publish).
    counted: bool,
}

/// Whether a waiting stream may be continued by a publish (see [`Stream::resumable_by`]).
pub(super) enum Resume {
    Yes,
    /// A publisher is on (or the stream ended).
    Live,
    /// It waits for a publisher of another credential.
    OtherCredential,
}

impl Publisher {
    pub(super) fn new(stream: Arc<Stream>, hub: Weak<HubInner>, grace: Duration, counted: bool) -> Self {
        Self { stream, hub, grace, counted }
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
        let hub = self.hub.upgrade();
        if let Some(hub) = hub.as_ref().filter(|_| self.counted) {
            hub.live.fetch_sub(1, Ordering::Relaxed);
        }
        let runtime = tokio::runtime::Handle::try_current();
        // a track stream waits only while the stream it belongs to does
        let track_may_wait = || self.counted || hub.as_ref().is_some_and(|h| h.track_may_wait(self.stream.key()));
        let wait = match (&runtime, self.grace.is_zero()) {
            (Ok(_), false) if track_may_wait() => match hub.as_ref().filter(|_| self.counted) {
                // under the registry lock, which a publish continuing the stream takes: the
                // wait is reported before that publish is
                Some(hub) => {
                    let _registry = lock(&hub.streams);
                    let epoch = self.stream.begin_waiting(Instant::now());
                    if epoch.is_some() {
                        hub.observer.lifecycle(self.stream.key(), super::Lifecycle::Waiting);
                    }
                    epoch
                }
                None => self.stream.begin_waiting(Instant::now()),
            },
            _ => None,
        };
        let (Some(epoch), Ok(runtime)) = (wait, runtime) else {
            self.stream.push(HubEvent::EndOfStream);
            if let Some(hub) = hub {
                hub.release(&self.stream);
            }
            return;
        };
        if let Some(hub) = hub.filter(|_| self.counted) {
            hub.bound_waiting(&self.stream);
        }
        let (stream, hub, grace) = (self.stream.clone(), self.hub.clone(), self.grace);
        runtime.spawn(async move {
            tokio::time::sleep(grace).await;
            match hub.upgrade() {
                Some(hub) => hub.expire(&stream, epoch),
                None => {
                    if stream.expire(epoch) {
                        stream.push(HubEvent::EndOfStream);
                    }
                }
            }
        });
    }
}
