//! One live stream: its state, the fan-out ring, publisher and subscriptions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Waker;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

mod subscription;
#[cfg(test)]
mod tests;

pub use subscription::{Evicted, Subscription};

use super::gop::GopCache;
use super::{lock, HubConfig, HubEvent, HubObserver, StreamKey};
use crate::media::{CodecConfig, Frame};

/// Audio held back from waking viewers at most this long (media time) when the stream has video.
const AUDIO_COALESCE_MS: i64 = 50;
/// Frames held back from viewers at most (whatever their timestamps say: a publisher whose
/// timestamps do not advance still reaches its viewers).
const MAX_HELD_FRAMES: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpFlv,
    RtmpPlay,
    Hls,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::HttpFlv, Protocol::RtmpPlay, Protocol::Hls];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpFlv => "http_flv",
            Protocol::RtmpPlay => "rtmp",
            Protocol::Hls => "hls",
        }
    }
}

/// Counters of one stream, updated without locks.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    pub video_frames_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub lag_skips: AtomicU64,
    pub evictions: AtomicU64,
    viewers: [AtomicUsize; 3],
    /// HTTP-FLV + RTMP-play viewers: what `max_viewers_per_stream` limits.
    streaming_viewers: AtomicUsize,
}

impl StreamStats {
    pub fn viewers(&self, p: Protocol) -> usize {
        self.viewers[p as usize].load(Ordering::Relaxed)
    }
}

impl Protocol {
    /// Whether viewers of this protocol hold a live connection to the stream (count towards
    /// the viewer limit).
    fn is_streaming(self) -> bool {
        matches!(self, Protocol::HttpFlv | Protocol::RtmpPlay)
    }
}

#[derive(Debug)]
struct State {
    ring: VecDeque<HubEvent>,
    ring_bytes: usize,
    /// Sequence number of `ring[0]`.
    first_seq: u64,
    newest_dts: i64,
    /// Sequence number of the first event after the latest `Discontinuity`:
    /// lag in media time is measured only between frames of one timeline.
    timeline_seq: u64,
    metadata: Option<Bytes>,
    codec: CodecConfig,
    gop: GopCache,
    ended: bool,
    /// Timestamp of the oldest audio frame pushed since viewers were last woken.
    held_audio: Option<i64>,
    /// Sequence number of the newest keyframe in the ring.
    last_key_seq: Option<u64>,
    /// DTS of the video frame that last woke viewers (see [`HubConfig::merge_write_ms`]).
    last_video_wake: Option<i64>,
    /// Frames pushed since viewers were last woken.
    held_frames: u32,
    /// Live subscriptions: bounds `waiters` (wakers of viewers that left are dropped).
    subscribers: usize,
    /// Viewers waiting for the next wake-up; registered under this lock, so none is missed.
    waiters: Vec<Waker>,
    /// Counts wake-ups: a viewer registered in the current epoch is not registered twice.
    wake_epoch: u64,
}

impl State {
    fn end_seq(&self) -> u64 {
        self.first_seq + self.ring.len() as u64
    }
}

#[derive(Debug)]
pub struct Stream {
    key: StreamKey,
    peer: SocketAddr,
    started: SystemTime,
    started_at: Instant,
    config: HubConfig,
    state: Mutex<State>,
    pub stats: StreamStats,
    observer: Arc<dyn HubObserver>,
    /// Milliseconds after `started_at` when the publisher last delivered bytes.
    last_input_ms: AtomicU64,
    kick: CancellationToken,
    kick_reason: std::sync::OnceLock<&'static str>,
}

impl Stream {
    pub(super) fn new(key: StreamKey, peer: SocketAddr, config: HubConfig, observer: Arc<dyn HubObserver>) -> Self {
        let gop = GopCache::new(config.gop_cache.clone());
        Self {
            key,
            peer,
            started: SystemTime::now(),
            started_at: Instant::now(),
            state: Mutex::new(State {
                ring: VecDeque::new(),
                ring_bytes: 0,
                first_seq: 0,
                newest_dts: 0,
                timeline_seq: 0,
                metadata: None,
                codec: CodecConfig::default(),
                gop,
                ended: false,
                held_audio: None,
                last_key_seq: None,
                last_video_wake: None,
                held_frames: 0,
                subscribers: 0,
                waiters: Vec::new(),
                wake_epoch: 0,
            }),
            config,
            stats: StreamStats::default(),
            observer,
            last_input_ms: AtomicU64::new(0),
            kick: CancellationToken::new(),
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

    pub fn codec(&self) -> CodecConfig {
        lock(&self.state).codec.clone()
    }

    pub fn metadata(&self) -> Option<Bytes> {
        lock(&self.state).metadata.clone()
    }

    pub fn is_ended(&self) -> bool {
        lock(&self.state).ended
    }

    /// (events, payload bytes) held by the GOP cache.
    pub fn gop_cache_size(&self) -> (usize, usize) {
        let st = lock(&self.state);
        (st.gop.len(), st.gop.bytes())
    }

    /// Viewers of `protocol` connected now (HTTP-FLV, RTMP play). HLS has no connection to
    /// count: the HLS store counts its viewers (`HlsStore::viewers`).
    pub fn viewers(&self, protocol: Protocol) -> usize {
        self.stats.viewers(protocol)
    }

    /// Counts a viewer of `protocol` for as long as the guard lives.
    pub fn viewer_guard(self: &Arc<Self>, protocol: Protocol) -> ViewerGuard {
        if protocol.is_streaming() {
            self.stats.streaming_viewers.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.viewers[protocol as usize].fetch_add(1, Ordering::Relaxed);
        ViewerGuard { stream: self.clone(), protocol }
    }

    /// Counts a viewer of `protocol` unless the stream already has `max` HTTP-FLV and RTMP
    /// viewers (checked and counted in one step, so concurrent joins cannot overshoot).
    pub fn admit_viewer(self: &Arc<Self>, protocol: Protocol, max: usize) -> Option<ViewerGuard> {
        if protocol.is_streaming() {
            let n = &self.stats.streaming_viewers;
            n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        }
        self.stats.viewers[protocol as usize].fetch_add(1, Ordering::Relaxed);
        Some(ViewerGuard { stream: self.clone(), protocol })
    }

    fn push(&self, ev: HubEvent) {
        let woken = {
            let mut st = lock(&self.state);
            if st.ended {
                return;
            }
            match &ev {
                HubEvent::Metadata(m) => st.metadata = Some(m.clone()),
                HubEvent::Config(c) => {
                    st.codec = c.clone();
                    st.gop.clear();
                }
                HubEvent::Frame(f) => {
                    let has_video = st.codec.video.is_some();
                    st.gop.push(f, has_video);
                    st.newest_dts = f.dts();
                    self.stats.frames_in.fetch_add(1, Ordering::Relaxed);
                    if f.is_video() {
                        self.stats.video_frames_in.fetch_add(1, Ordering::Relaxed);
                    }
                }
                HubEvent::Discontinuity => st.gop.clear(),
                HubEvent::EndOfStream => st.ended = true,
            }
            if matches!(&ev, HubEvent::Frame(f) if f.is_keyframe()) {
                st.last_key_seq = Some(st.end_seq());
            }
            let wake = self.should_wake(&mut st, &ev);
            let discontinuity = matches!(ev, HubEvent::Discontinuity);
            st.ring_bytes += ev.weight();
            st.ring.push_back(ev);
            if discontinuity {
                st.timeline_seq = st.end_seq();
            }
            while st.ring.len() > 1
                && (st.ring.len() > self.config.ring_events || st.ring_bytes > self.config.ring_bytes)
            {
                if let Some(old) = st.ring.pop_front() {
                    st.ring_bytes -= old.weight();
                    st.first_seq += 1;
                }
            }
            self.trim_lagged(&mut st);
            if wake {
                st.wake_epoch += 1;
                let n = st.waiters.len();
                std::mem::replace(&mut st.waiters, Vec::with_capacity(n))
            } else {
                Vec::new()
            }
        };
        // outside the lock: a woken viewer may run on another worker at once
        for w in woken {
            w.wake();
        }
    }

    /// Whether `ev` wakes the viewers now. Waking every viewer costs a task poll and a socket
    /// write per viewer, so frames are announced in batches:
    /// - audio of a stream with video rides along with the next video frame (at most one frame
    ///   interval later), unless AUDIO_COALESCE_MS of audio piled up (the video stalled);
    /// - video wakes once per `merge_write_ms` of video media time (0: every frame);
    /// - everything else (config, metadata, discontinuity, end) wakes at once;
    /// - and at least every MAX_HELD_FRAMES frames, whatever the timestamps.
    fn should_wake(&self, st: &mut State, ev: &HubEvent) -> bool {
        let wake = self.merge_due(st, ev);
        if wake {
            st.held_frames = 0;
        } else {
            st.held_frames += 1;
            if st.held_frames >= MAX_HELD_FRAMES {
                st.held_frames = 0;
                st.held_audio = None;
                return true;
            }
        }
        wake
    }

    /// [`Self::should_wake`] by media time.
    fn merge_due(&self, st: &mut State, ev: &HubEvent) -> bool {
        let has_video = st.codec.video.is_some();
        match ev {
            HubEvent::Frame(Frame::Audio(a)) if has_video => {
                let first = *st.held_audio.get_or_insert(a.pts);
                if a.pts.saturating_sub(first) >= AUDIO_COALESCE_MS {
                    st.held_audio = None;
                    true
                } else {
                    false
                }
            }
            HubEvent::Frame(Frame::Video(v)) => {
                let merge = self.config.merge_write_ms as i64;
                // a backwards step (new timeline) wakes at once
                let due = st.last_video_wake.is_none_or(|last| v.dts < last || v.dts.saturating_sub(last) >= merge);
                if due {
                    st.last_video_wake = Some(v.dts);
                    st.held_audio = None;
                }
                due
            }
            _ => {
                st.held_audio = None;
                st.last_video_wake = None;
                true
            }
        }
    }
}

impl Stream {
    /// Drops ring events no viewer can be served any more: a viewer that reaches a frame more
    /// than `max_lag_ms` behind the newest one skips to the newest keyframe (see
    /// [`Subscription::try_recv_many`]), and one that fell out of the ring does the same, so
    /// older frames only cost memory (at 30 fps + audio the 2048-event ring holds ~25 s).
    /// The newest keyframe and everything after it always stay.
    fn trim_lagged(&self, st: &mut State) {
        let Some(key_seq) = st.last_key_seq else { return };
        let horizon = st.newest_dts.saturating_sub(self.config.max_lag_ms as i64);
        let old = |e: &HubEvent| matches!(e, HubEvent::Frame(f) if f.dts() < horizon);
        // frames before a timestamp jump are not compared with the new timeline (see `is_lagging`)
        while st.first_seq < key_seq && st.first_seq >= st.timeline_seq {
            let drop = match st.ring.front() {
                Some(HubEvent::Frame(_)) => st.ring.front().is_some_and(old),
                // metadata or config in front: dropped with the old frames that follow it
                Some(_) => st.ring.iter().find(|e| matches!(e, HubEvent::Frame(_))).is_some_and(old),
                None => false,
            };
            if !drop {
                break;
            }
            if let Some(e) = st.ring.pop_front() {
                st.ring_bytes -= e.weight();
                st.first_seq += 1;
            }
        }
    }
}

/// Keeps a viewer counted in [`StreamStats`].
#[derive(Debug)]
pub struct ViewerGuard {
    stream: Arc<Stream>,
    protocol: Protocol,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        if self.protocol.is_streaming() {
            self.stream.stats.streaming_viewers.fetch_sub(1, Ordering::Relaxed);
        }
        self.stream.stats.viewers[self.protocol as usize].fetch_sub(1, Ordering::Relaxed);
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
