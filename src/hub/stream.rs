//! One live stream: its state, the fan-out ring, publisher and subscriptions.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

use super::gop::GopCache;
use super::{lock, HubConfig, HubEvent, StreamKey};
use crate::media::{CodecConfig, Frame};
use crate::metrics::Metrics;

/// Audio held back from waking viewers at most this long (media time) when the stream has video.
const AUDIO_COALESCE_MS: i64 = 50;
/// Frames held back from viewers at most (whatever their timestamps say: a publisher whose
/// timestamps do not advance still reaches its viewers).
const MAX_HELD_FRAMES: u32 = 8;
/// An HLS client counts as watching while it fetched a playlist within this time.
const HLS_CLIENT_WINDOW: std::time::Duration = std::time::Duration::from_secs(10);
/// At most this many HLS clients are remembered per stream (memory bound against address floods).
const MAX_HLS_CLIENTS: usize = 100_000;

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
    metrics: Arc<Metrics>,
    /// `metrics.bytes_out` of each protocol, looked up once.
    bytes_out: [prometheus_client::metrics::counter::Counter; 3],
    /// Milliseconds after `started_at` when the publisher last delivered bytes.
    last_input_ms: AtomicU64,
    kick: CancellationToken,
    kick_reason: std::sync::OnceLock<&'static str>,
    /// HLS clients (by address) and when they last fetched a playlist; when the map was last pruned.
    hls_clients: Mutex<(std::collections::HashMap<std::net::IpAddr, Instant>, Instant)>,
}

impl Stream {
    pub(super) fn new(key: StreamKey, peer: SocketAddr, config: HubConfig, metrics: Arc<Metrics>) -> Self {
        let gop = GopCache::new(config.gop_cache.clone());
        let bytes_out =
            Protocol::ALL.map(|p| metrics.bytes_out.get_or_create(&crate::metrics::protocol(p.name())).clone());
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
            metrics,
            bytes_out,
            last_input_ms: AtomicU64::new(0),
            kick: CancellationToken::new(),
            kick_reason: std::sync::OnceLock::new(),
            hls_clients: Mutex::new((std::collections::HashMap::new(), Instant::now())),
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
        self.bytes_out[protocol as usize].inc_by(n);
    }

    /// Counts `n` bytes received from the publisher (and notes when, see [`Self::input_idle`]).
    pub fn count_bytes_in(&self, n: u64) {
        let now = u64::try_from(self.started_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_input_ms.store(now, Ordering::Relaxed);
        self.stats.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.metrics.bytes_in.inc_by(n);
    }

    /// Counts a viewer disconnected for stalling.
    pub fn count_eviction(&self) {
        self.stats.evictions.fetch_add(1, Ordering::Relaxed);
        self.metrics.evictions.inc();
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

    /// Viewers of `protocol` now. HLS has no connection to count: an HLS viewer is a client
    /// address that fetched a playlist in the last 10 s (see [`Self::hls_client_seen`]), so
    /// clients behind one proxy, NAT or CDN edge count once.
    pub fn viewers(&self, protocol: Protocol) -> usize {
        match protocol {
            Protocol::Hls => {
                let (clients, pruned) = &mut *lock(&self.hls_clients);
                clients.retain(|_, seen| seen.elapsed() < HLS_CLIENT_WINDOW);
                *pruned = Instant::now();
                clients.len()
            }
            p => self.stats.viewers(p),
        }
    }

    /// Notes a playlist fetch by an HLS client.
    pub fn hls_client_seen(&self, client: std::net::IpAddr) {
        let (clients, pruned) = &mut *lock(&self.hls_clients);
        if clients.len() >= MAX_HLS_CLIENTS && !clients.contains_key(&client) {
            // full: prune at most once a second (a flood of new addresses must not scan it each time)
            if pruned.elapsed() < std::time::Duration::from_secs(1) {
                return;
            }
            clients.retain(|_, seen| seen.elapsed() < HLS_CLIENT_WINDOW);
            *pruned = Instant::now();
            if clients.len() >= MAX_HLS_CLIENTS {
                return;
            }
        }
        clients.insert(client, Instant::now());
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

    /// Metadata and codec config first, then the GOP cache, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let mut st = lock(&self.state);
        st.subscribers += 1;
        let mut pending = VecDeque::with_capacity(st.gop.len() + 3);
        if let Some(m) = &st.metadata {
            pending.push_back(HubEvent::Metadata(m.clone()));
        }
        let has_config = st.codec.video.is_some() || st.codec.audio.is_some();
        if has_config {
            pending.push_back(HubEvent::Config(st.codec.clone()));
        }
        pending.extend(st.gop.events().cloned());
        if st.ended {
            pending.push_back(HubEvent::EndOfStream);
        }
        Subscription {
            stream: self.clone(),
            pending,
            next: st.end_seq(),
            skips: 0,
            config_generation: has_config.then_some(st.codec.generation),
            need_keyframe: false,
            done: false,
            registered: None,
        }
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

#[derive(Debug, Error, PartialEq, Eq)]
#[error("viewer evicted: it kept lagging behind live")]
pub struct Evicted;

/// The read side for one viewer.
#[derive(Debug)]
pub struct Subscription {
    stream: Arc<Stream>,
    pending: VecDeque<HubEvent>,
    next: u64,
    skips: u32,
    config_generation: Option<u32>,
    need_keyframe: bool,
    done: bool,
    /// The wake epoch and waker this viewer is registered with, if any.
    registered: Option<(u64, Waker)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.stream.state).subscribers -= 1;
    }
}

impl Subscription {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The next event; `Ok(None)` once the stream has ended and everything was delivered.
    pub async fn recv(&mut self) -> Result<Option<HubEvent>, Evicted> {
        let mut one = Vec::with_capacity(1);
        if std::future::poll_fn(|cx| self.poll_recv_many(cx, &mut one, 1)).await? {
            Ok(one.pop())
        } else {
            Ok(None)
        }
    }

    /// Waits for at least one event and appends up to `max` to `out`.
    /// Returns false once the stream has ended and everything was delivered.
    pub async fn recv_many(&mut self, out: &mut Vec<HubEvent>, max: usize) -> Result<bool, Evicted> {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    /// Appends up to `max` available events to `out`: `Ready(Ok(true))` if any were added,
    /// `Ready(Ok(false))` once the stream has ended and everything was delivered, `Pending`
    /// (the task is woken at the stream's next wake-up) when nothing is available yet.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<HubEvent>,
        max: usize,
    ) -> Poll<Result<bool, Evicted>> {
        if self.done && self.pending.is_empty() {
            return Poll::Ready(Ok(false));
        }
        match self.recv_inner(out, max.max(1), Some(cx)) {
            Ok(true) => Poll::Ready(Ok(true)),
            Ok(false) if self.done => Poll::Ready(Ok(false)),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn observe(&mut self, ev: &HubEvent) {
        match ev {
            HubEvent::Config(c) => self.config_generation = Some(c.generation),
            HubEvent::EndOfStream => self.done = true,
            HubEvent::Frame(f) if f.is_keyframe() => self.need_keyframe = false,
            _ => {}
        }
    }

    /// Appends up to `max` available events to `out` without waiting; true if any were added.
    pub fn try_recv_many(&mut self, out: &mut Vec<HubEvent>, max: usize) -> Result<bool, Evicted> {
        self.recv_inner(out, max, None)
    }

    /// [`Self::try_recv_many`]; with `cx`, registers its waker when nothing was added.
    fn recv_inner(
        &mut self,
        out: &mut Vec<HubEvent>,
        max: usize,
        cx: Option<&mut Context<'_>>,
    ) -> Result<bool, Evicted> {
        let start = out.len();
        while out.len() - start < max {
            let Some(ev) = self.pending.pop_front() else { break };
            self.observe(&ev);
            out.push(ev);
        }
        if self.done || out.len() - start >= max {
            return Ok(out.len() > start);
        }
        let stream = self.stream.clone();
        let mut st = lock(&stream.state);
        let end = st.end_seq();
        if self.is_lagging(&st) {
            self.skips += 1;
            self.stream.stats.lag_skips.fetch_add(1, Ordering::Relaxed);
            self.stream.metrics.lag_skips.inc();
            if self.skips > self.stream.config.max_lag_skips {
                self.stream.count_eviction();
                self.done = true;
                return Err(Evicted);
            }
            let latest_key = st.ring.iter().rposition(|e| matches!(e, HubEvent::Frame(f) if f.is_keyframe()));
            // Never back: with a GOP longer than the lag limit the latest keyframe
            // may be behind `next`; then the viewer resumes at the next keyframe.
            self.next = latest_key.map_or(end, |i| st.first_seq + i as u64).max(self.next);
            self.need_keyframe = st.codec.video.is_some();
            if self.config_generation != Some(st.codec.generation) {
                let ev = HubEvent::Config(st.codec.clone());
                self.observe(&ev);
                out.push(ev);
            }
        }
        while self.next < end && out.len() - start < max {
            let idx = (self.next - st.first_seq) as usize;
            self.next += 1;
            let Some(ev) = st.ring.get(idx) else { break };
            if self.need_keyframe && matches!(ev, HubEvent::Frame(f) if f.is_video() && !f.is_keyframe()) {
                continue;
            }
            self.observe(ev);
            out.push(ev.clone());
            if self.done {
                break;
            }
        }
        if self.next >= end {
            self.skips = 0;
        }
        let got = out.len() > start;
        if let (false, false, Some(cx)) = (got, self.done, cx) {
            let fresh = match &self.registered {
                Some((epoch, w)) => *epoch == st.wake_epoch && w.will_wake(cx.waker()),
                None => false,
            };
            if !fresh {
                // wakers of viewers that left stay until the next wake-up; when a stream that
                // does not wake (a silent publisher) sees many viewers come and go, wake them all
                // early: the live ones register again, the others are dropped
                let stale = if st.waiters.len() >= 2 * st.subscribers + 64 {
                    st.wake_epoch += 1;
                    std::mem::take(&mut st.waiters)
                } else {
                    Vec::new()
                };
                let w = cx.waker().clone();
                st.waiters.push(w.clone());
                self.registered = Some((st.wake_epoch, w));
                drop(st);
                for w in stale {
                    w.wake();
                }
            }
        }
        Ok(got)
    }

    fn is_lagging(&self, st: &State) -> bool {
        if self.next < st.first_seq {
            return true;
        }
        if self.next < st.timeline_seq {
            // The viewer is still before a timestamp jump: the media-time
            // distance to live says nothing; the ring bound still applies.
            return false;
        }
        let idx = (self.next - st.first_seq) as usize;
        match st.ring.get(idx) {
            Some(HubEvent::Frame(f)) => st.newest_dts.saturating_sub(f.dts()) > self.stream.config.max_lag_ms as i64,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::*;
    use super::*;
    use crate::media::{AudioFrame, Frame, VideoFrame};

    fn peer() -> SocketAddr {
        "127.0.0.1:1".parse().unwrap()
    }

    fn video(dts: i64, key: bool) -> HubEvent {
        HubEvent::Frame(Frame::Video(VideoFrame { dts, cts: 0, keyframe: key, data: Bytes::from(vec![7u8; 100]) }))
    }

    fn cfg() -> CodecConfig {
        let avc = crate::media::AvcConfig::parse(Bytes::from_static(crate::media::h264::tests::AVCC_320X240)).unwrap();
        CodecConfig { video: Some(Arc::new(avc)), audio: None, generation: 1 }
    }

    fn drain(sub: &mut Subscription) -> Result<Vec<HubEvent>, Evicted> {
        let mut out = Vec::new();
        while sub.try_recv_many(&mut out, 1000)? {}
        Ok(out)
    }

    #[test]
    fn one_publisher_per_key_and_key_freed_on_drop() {
        let hub = Hub::new(HubConfig::default());
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        assert!(hub.publish(key.clone(), peer()).is_err());
        drop(p);
        assert!(hub.get(&key).is_none());
        assert!(hub.publish(key, peer()).is_ok());
    }

    #[test]
    fn new_viewer_gets_config_then_gop_then_live_sharing_payloads() {
        let hub = Hub::new(HubConfig::default());
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Metadata(Bytes::from_static(b"meta")));
        p.send(HubEvent::Config(cfg()));
        p.send(video(0, true));
        p.send(video(40, false));
        p.send(video(2000, true));
        p.send(video(2040, false));
        let mut sub = hub.subscribe(&key).unwrap();
        p.send(video(2080, false));
        let evs = drain(&mut sub).unwrap();
        assert!(matches!(evs[0], HubEvent::Metadata(_)));
        assert!(matches!(evs[1], HubEvent::Config(_)));
        let dts: Vec<i64> = evs[2..].iter().map(|e| if let HubEvent::Frame(f) = e { f.dts() } else { -1 }).collect();
        assert_eq!(dts, vec![2000, 2040, 2080]);
        // the payload is shared with the ring, not copied
        let st = lock(&p.stream().state);
        let (HubEvent::Frame(Frame::Video(a)), Some(HubEvent::Frame(Frame::Video(b)))) = (&evs[4], st.ring.back())
        else {
            panic!()
        };
        assert_eq!(a.data.as_ptr(), b.data.as_ptr());
    }

    #[test]
    fn viewer_limit_counts_flv_and_rtmp_viewers_together() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
        let s = p.stream();
        let a = s.admit_viewer(Protocol::HttpFlv, 2).unwrap();
        let _hls = s.admit_viewer(Protocol::Hls, 2).unwrap();
        let b = s.admit_viewer(Protocol::RtmpPlay, 2).unwrap();
        assert!(s.admit_viewer(Protocol::HttpFlv, 2).is_none());
        assert!(s.admit_viewer(Protocol::RtmpPlay, 2).is_none());
        assert!(s.admit_viewer(Protocol::Hls, 2).is_some(), "HLS clients do not count");
        drop(a);
        assert_eq!(s.stats.viewers(Protocol::HttpFlv), 0);
        let _c = s.admit_viewer(Protocol::RtmpPlay, 2).unwrap();
        assert_eq!(s.stats.viewers(Protocol::RtmpPlay), 2);
        drop(b);
        assert!(s.admit_viewer(Protocol::HttpFlv, 2).is_some());
    }

    #[test]
    fn hls_viewers_are_client_addresses_seen_recently() {
        let hub = Hub::new(HubConfig::default());
        let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
        let s = p.stream();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        s.hls_client_seen(a);
        s.hls_client_seen(a);
        s.hls_client_seen(b);
        assert_eq!(s.viewers(Protocol::Hls), 2);
        lock(&s.hls_clients).0.insert(b, Instant::now() - HLS_CLIENT_WINDOW);
        assert_eq!(s.viewers(Protocol::Hls), 1, "b's last fetch is too old");
    }

    #[test]
    fn end_of_stream_reaches_viewers() {
        let hub = Hub::new(HubConfig::default());
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        let mut sub = hub.subscribe(&key).unwrap();
        p.send(video(0, true));
        drop(p);
        let evs = drain(&mut sub).unwrap();
        assert_eq!(evs.last(), Some(&HubEvent::EndOfStream));
        assert!(!sub.try_recv_many(&mut Vec::new(), 10).unwrap());
    }

    #[test]
    fn lagging_viewer_skips_to_latest_keyframe_then_is_evicted() {
        let config = HubConfig { ring_events: 50, max_lag_skips: 2, ..Default::default() };
        let hub = Hub::new(config);
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        let mut sub = hub.subscribe(&key).unwrap();
        let mut dts = 0;
        let mut feed = |n: usize| {
            for i in 0..n {
                p.send(video(dts, i % 25 == 0));
                dts += 40;
            }
        };
        feed(100); // ring holds only 50: the viewer fell out of it
        let evs = drain(&mut sub).unwrap();
        let first = evs.iter().find_map(|e| if let HubEvent::Frame(f) = e { Some(f.clone()) } else { None });
        assert!(first.as_ref().is_some_and(|f| f.is_keyframe() && f.dts() == 75 * 40), "{first:?}");
        assert_eq!(p.stream().stats.lag_skips.load(Ordering::Relaxed), 1);
        // caught up: the skip count resets; lag again twice more without catching up => evicted
        feed(100);
        let mut out = Vec::new();
        sub.try_recv_many(&mut out, 1).unwrap();
        feed(100);
        sub.try_recv_many(&mut out, 1).unwrap();
        feed(100);
        assert_eq!(sub.try_recv_many(&mut out, 1), Err(Evicted));
        assert_eq!(p.stream().stats.evictions.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn viewer_far_behind_in_time_skips_even_inside_the_ring() {
        let hub = Hub::new(HubConfig { max_lag_ms: 1000, ..Default::default() });
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        let mut sub = hub.subscribe(&key).unwrap();
        for i in 0..100 {
            p.send(video(i * 40, i % 50 == 0));
            p.send(HubEvent::Frame(Frame::Audio(AudioFrame { pts: i * 40, data: Bytes::from_static(&[1]) })));
        }
        let evs = drain(&mut sub).unwrap();
        assert!(matches!(&evs[0], HubEvent::Config(_)));
        assert!(matches!(&evs[1], HubEvent::Frame(f) if f.is_keyframe() && f.dts() == 2000), "{:?}", evs[1]);
    }

    #[test]
    fn ring_drops_frames_older_than_max_lag_but_keeps_the_newest_keyframe() {
        let hub = Hub::new(HubConfig { max_lag_ms: 1000, ..Default::default() });
        let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        for i in 0..100 {
            p.send(video(i * 40, i % 25 == 0)); // keyframe every second
        }
        {
            let st = lock(&p.stream().state);
            let HubEvent::Frame(f) = st.ring.front().unwrap() else { panic!() };
            assert!(f.dts() >= 3960 - 1000 || f.is_keyframe(), "{}", f.dts());
            assert!(st.ring.len() < 40);
        }
        // a GOP longer than max_lag: its keyframe stays
        for i in 100..200 {
            p.send(video(i * 40, i == 100));
        }
        let st = lock(&p.stream().state);
        assert!(matches!(st.ring.front(), Some(HubEvent::Frame(f)) if f.is_keyframe() && f.dts() == 4000));
    }

    #[test]
    fn timestamp_jump_is_not_lag_and_never_rewinds_a_viewer() {
        // A viewer one frame behind when the publisher's timeline jumps forward by
        // hours (ingest sends a Discontinuity first) is not lagging: it must get
        // every frame exactly once, not be sent back to the last keyframe.
        let hub = Hub::new(HubConfig::default());
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        let mut sub = hub.subscribe(&key).unwrap();
        for i in 0..10 {
            p.send(video(i * 40, i == 0));
        }
        let mut got = Vec::new();
        while got.iter().filter(|e| matches!(e, HubEvent::Frame(_))).count() < 9 {
            sub.try_recv_many(&mut got, 1).unwrap();
        }
        p.send(HubEvent::Discontinuity);
        for i in 0..10 {
            p.send(video(3 * 3_600_000 + i * 40, false));
        }
        got.extend(drain(&mut sub).unwrap());
        let dts: Vec<i64> =
            got.iter().filter_map(|e| if let HubEvent::Frame(f) = e { Some(f.dts()) } else { None }).collect();
        let want: Vec<i64> = (0..10).map(|i| i * 40).chain((0..10).map(|i| 3 * 3_600_000 + i * 40)).collect();
        assert_eq!(dts, want);
        assert_eq!(p.stream().stats.lag_skips.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ring_is_bounded_by_bytes() {
        let hub = Hub::new(HubConfig { ring_bytes: 10_000, ..Default::default() });
        let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
        for i in 0..1000 {
            p.send(video(i * 40, i % 30 == 0));
        }
        assert!(lock(&p.stream().state).ring_bytes <= 10_000);
    }

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl futures_util::task::ArcWake for Wakes {
        fn wake_by_ref(me: &Arc<Self>) {
            me.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A viewer parked on `sub`: `woken()` says whether the stream woke it since it last parked.
    struct Parked {
        wakes: Arc<Wakes>,
        seen: usize,
    }

    impl Parked {
        fn new() -> Self {
            Self { wakes: Arc::new(Wakes::default()), seen: 0 }
        }

        /// Takes what is available; parks when nothing is.
        fn poll(&mut self, sub: &mut Subscription) -> Vec<HubEvent> {
            let waker = futures_util::task::waker(self.wakes.clone());
            let mut cx = Context::from_waker(&waker);
            let mut out = Vec::new();
            while let Poll::Ready(Ok(true)) = sub.poll_recv_many(&mut cx, &mut out, 1000) {}
            self.seen = self.wakes.0.load(Ordering::SeqCst);
            out
        }

        fn woken(&self) -> bool {
            self.wakes.0.load(Ordering::SeqCst) > self.seen
        }
    }

    fn audio(pts: i64) -> HubEvent {
        HubEvent::Frame(Frame::Audio(AudioFrame { pts, data: Bytes::from_static(&[1]) }))
    }

    /// A stream with a config and a keyframe, and a parked viewer that took both.
    fn stream_with_parked_viewer(merge_write_ms: u64) -> (Publisher, Subscription, Parked) {
        let hub = Hub::new(HubConfig { merge_write_ms, ..Default::default() });
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        p.send(video(0, true));
        let mut sub = hub.subscribe(&key).unwrap();
        let mut viewer = Parked::new();
        assert_eq!(viewer.poll(&mut sub).len(), 2);
        (p, sub, viewer)
    }

    #[test]
    fn audio_rides_along_with_the_next_video_frame() {
        let (p, mut sub, mut viewer) = stream_with_parked_viewer(0);
        p.send(audio(10));
        p.send(audio(31));
        assert!(!viewer.woken(), "audio alone does not wake viewers of a video stream");
        p.send(video(40, false));
        assert!(viewer.woken());
        assert_eq!(viewer.poll(&mut sub).len(), 3, "the held audio comes with the video frame");
        // the video stalls: audio wakes viewers once 50 ms of it piled up
        for pts in [50, 71, 92] {
            p.send(audio(pts));
            assert!(!viewer.woken());
        }
        p.send(audio(113));
        assert!(viewer.woken());
        assert_eq!(viewer.poll(&mut sub).len(), 4);
    }

    #[test]
    fn frozen_timestamps_still_reach_viewers() {
        let (p, mut sub, mut viewer) = stream_with_parked_viewer(50);
        let mut pushed = 0;
        while !viewer.woken() {
            p.send(video(0, false)); // a publisher whose timestamps never advance
            pushed += 1;
            assert!(pushed <= MAX_HELD_FRAMES, "never woken");
        }
        assert_eq!(viewer.poll(&mut sub).len(), pushed as usize);
    }

    #[test]
    fn wakers_of_departed_viewers_do_not_pile_up() {
        let (p, _sub, _viewer) = stream_with_parked_viewer(50);
        // a stream that wakes nobody (silent publisher) while viewers come and go
        for _ in 0..10_000 {
            let mut sub = p.stream().subscribe();
            Parked::new().poll(&mut sub);
        }
        let st = lock(&p.stream().state);
        assert!(st.waiters.len() <= 2 * st.subscribers + 64, "{} waiters", st.waiters.len());
    }

    #[test]
    fn merge_write_wakes_once_per_interval_of_video() {
        let (p, mut sub, mut viewer) = stream_with_parked_viewer(50);
        // 30 fps: every second frame wakes (33 ms < 50 ms <= 67 ms)
        let mut woke = Vec::new();
        for i in 1..=6 {
            p.send(video(i * 1000 / 30, false));
            if viewer.woken() {
                woke.push(i);
                let got = viewer.poll(&mut sub);
                assert!(!got.is_empty());
            }
        }
        assert_eq!(woke, vec![2, 4, 6]);
        // everything but frames wakes at once; the next frame after it too
        p.send(HubEvent::Metadata(Bytes::from_static(b"m")));
        assert!(viewer.woken());
        viewer.poll(&mut sub);
        p.send(video(7 * 1000 / 30, false));
        assert!(viewer.woken());
        viewer.poll(&mut sub);
        // a backwards step (a new timeline) wakes at once
        p.send(video(10, false));
        assert!(viewer.woken());
        // a viewer is registered once per wake-up however often it polls
        viewer.poll(&mut sub);
        viewer.poll(&mut sub);
        viewer.poll(&mut sub);
        assert_eq!(lock(&p.stream().state).waiters.len(), 1);
    }

    /// No wake-up is lost: viewers on other threads, parked and woken thousands of times
    /// while the publisher pushes from its own thread, each receive every frame and the end.
    #[test]
    fn no_lost_wakeups_across_threads() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let hub = Hub::new(HubConfig { max_lag_ms: 1_000_000, ring_events: 100_000, ..Default::default() });
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        p.send(HubEvent::Config(cfg()));
        const FRAMES: i64 = 3000;
        let viewers: Vec<_> = (0..8)
            .map(|_| {
                let mut sub = hub.subscribe(&key).unwrap();
                rt.spawn(async move {
                    let (mut frames, mut batch) = (0, Vec::new());
                    loop {
                        batch.clear();
                        if !sub.recv_many(&mut batch, 7).await.unwrap() {
                            return frames;
                        }
                        frames += batch.iter().filter(|e| matches!(e, HubEvent::Frame(_))).count() as i64;
                    }
                })
            })
            .collect();
        let publisher = std::thread::spawn(move || {
            for i in 0..FRAMES {
                p.send(video(i * 33, i % 60 == 0));
                if i % 3 == 0 {
                    p.send(HubEvent::Frame(Frame::Audio(AudioFrame { pts: i * 33, data: Bytes::from_static(&[1]) })));
                }
                if i % 100 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        });
        publisher.join().unwrap();
        rt.block_on(async {
            for v in viewers {
                let got = tokio::time::timeout(std::time::Duration::from_secs(10), v).await;
                assert_eq!(got.expect("a viewer was never woken").unwrap(), FRAMES + FRAMES / 3);
            }
        });
    }

    #[tokio::test]
    async fn recv_wakes_on_publish() {
        let hub = Hub::new(HubConfig::default());
        let key = StreamKey::new("live", "a");
        let p = hub.publish(key.clone(), peer()).unwrap();
        let mut sub = hub.subscribe(&key).unwrap();
        let h = tokio::spawn(async move { sub.recv().await });
        tokio::task::yield_now().await;
        p.send(video(0, true));
        let got = h.await.unwrap().unwrap();
        assert!(matches!(got, Some(HubEvent::Frame(_))));
    }
}
