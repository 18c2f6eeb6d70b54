//! The HLS store, shared with the HTTP side: playlists and segments of every key in memory
//! (bounded to the window plus a grace period, and in bytes per stream), optionally mirrored
//! to disk, atomically; HLS viewers by client address; and the sweep that carries out what
//! each key's lifecycle says is due.
//!
//! Per-key state outlives a publish session by `hold_time_ms`, so a
//! republish continues the media sequence with a discontinuity instead of
//! resetting it.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::{debug, info, warn};

use super::lifecycle::{KeyState, Timing};
use super::{Container, FileKind, Playlist, PlaylistConfig, Segment, SegmentInfo, SegmentName};
use livegate_proto::hls::{llhls, llhls::Directives, Part, PartInfo};

/// Bytes of the parts of the segment being written (parts of complete segments are
/// slices of them and held with them).
fn open_parts_bytes(st: &KeyState) -> usize {
    let open = st.playlist.next_sequence();
    st.parts.iter().filter(|((seq, _), _)| *seq >= open).map(|(_, d)| d.len()).sum()
}

/// A segment, part or initialization segment of `st` by its name, with its kind.
fn file_in(st: &KeyState, name: &SegmentName<'_>) -> Option<(FileKind, Bytes)> {
    if st.token != name.token {
        return None;
    }
    let data = match (name.kind, st.container) {
        (FileKind::Ts, Container::MpegTs) | (FileKind::M4s, Container::Fmp4) => {
            st.segments.get(&name.sequence).cloned()
        }
        (FileKind::Init, Container::Fmp4) => {
            st.inits.iter().find(|(n, _)| u64::from(*n) == name.sequence).map(|(_, d)| d.clone())
        }
        (FileKind::Part(i), Container::Fmp4) => st.parts.get(&(name.sequence, i)).cloned(),
        _ => None,
    }?;
    Some((name.kind, data))
}

/// Counts a request waiting on a key's changes for as long as it lives.
struct Blocked(Arc<std::sync::atomic::AtomicUsize>);

impl Blocked {
    /// `None` when `max` requests already wait.
    fn enter(counter: &Arc<std::sync::atomic::AtomicUsize>, max: usize) -> Option<Self> {
        use std::sync::atomic::Ordering;
        counter.try_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        Some(Blocked(counter.clone()))
    }
}

impl Drop for Blocked {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// What [`HlsStore::playlist`] answers.
#[derive(Debug)]
pub enum PlaylistReply {
    /// The playlist; `blocking` when it answered delivery directives (cacheable for a
    /// while under its full URL).
    Text {
        text: Bytes,
        blocking: bool,
    },
    NotFound,
    /// Malformed directives, or a segment/part too far ahead (HTTP 400).
    BadRequest(String),
    /// What a blocking reload asked for did not come within 3 target durations (HTTP 503).
    Unavailable,
}
use crate::config::{HlsConfig, LiveSettings};
use crate::hub::{lock, StreamKey};
use crate::metrics::Metrics;

/// What [`HlsStore::begin`] gives a publish session: its key state, its session number,
/// whether it resumes a held playlist, and the ended playlists dropped to make room (with
/// the file names to remove).
type Begun = (Arc<Mutex<KeyState>>, u64, bool, Vec<(StreamKey, Vec<String>)>);

/// Shared, read by the HTTP side.
#[derive(Clone)]
pub struct HlsStore {
    pub(super) inner: Arc<StoreInner>,
}

pub(super) struct StoreInner {
    /// Global settings (the disk directory).
    pub(super) config: HlsConfig,
    pub(super) settings: Arc<LiveSettings>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) keys: Mutex<HashMap<StreamKey, Arc<Mutex<KeyState>>>>,
    /// The earliest deadline of any key (see [`KeyState::poll_timeout`]); the lifecycle
    /// driver sleeps until it and is woken through `rescheduled` when it moves earlier.
    pub(super) next_deadline: Mutex<Option<Instant>>,
    pub(super) rescheduled: tokio::sync::Notify,
}

/// The lifecycle driver sweeps at most this often.
pub(super) const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(250);
/// An HLS client counts as watching while it fetched a playlist within this time.
const CLIENT_WINDOW: Duration = Duration::from_secs(10);
/// HLS client addresses tracked per stream at most.
const MAX_CLIENTS: usize = 100_000;

pub(super) fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl HlsStore {
    pub fn new(config: HlsConfig, settings: Arc<LiveSettings>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new(StoreInner {
                config,
                settings,
                metrics,
                keys: Mutex::new(HashMap::new()),
                next_deadline: Mutex::new(None),
                rescheduled: tokio::sync::Notify::new(),
            }),
        }
    }

    pub(super) fn policy(&self, key: &StreamKey) -> HlsConfig {
        self.inner.settings.get().apps.get(&key.app).hls.clone()
    }

    fn timing(&self, key: &StreamKey) -> Timing {
        let p = self.policy(key);
        Timing { endlist_delay: Duration::from_millis(p.endlist_delay_ms), hold: Duration::from_millis(p.hold_time_ms) }
    }

    /// Something of `st` will be due: make sure the lifecycle driver wakes for it.
    fn schedule(&self, key: &StreamKey, st: &KeyState) {
        let Some(at) = st.poll_timeout(self.timing(key)) else { return };
        let mut next = lock(&self.inner.next_deadline);
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
            drop(next);
            self.inner.rescheduled.notify_one();
        }
    }

    /// The earliest instant anything is due, over all keys.
    pub(super) fn poll_timeout(&self) -> Option<Instant> {
        *lock(&self.inner.next_deadline)
    }

    pub(super) fn state(&self, key: &StreamKey) -> Option<Arc<Mutex<KeyState>>> {
        lock(&self.inner.keys).get(key).cloned()
    }

    /// The current playlist text of a live or recently ended stream (rendered here when it
    /// changed since it was last asked for). A Low-Latency playlist answers the blocking
    /// reload directives of `query` (`_HLS_msn`, `_HLS_part`, `_HLS_skip`): it waits until
    /// the segment or part asked for exists, at most 3 target durations (then
    /// [`PlaylistReply::Unavailable`]). Other playlists ignore them.
    pub async fn playlist(&self, key: &StreamKey, query: &str) -> PlaylistReply {
        let Some(state) = self.state(key) else { return PlaylistReply::NotFound };
        let part_target = lock(&state).part_target_ms;
        let Some(part_target) = part_target else {
            let mut st = lock(&state);
            if !st.playlist.started() {
                return PlaylistReply::NotFound;
            }
            return PlaylistReply::Text { text: self.render(key, &mut st), blocking: false };
        };
        let d = match Directives::parse(query) {
            Ok(d) => d,
            Err(e) => return PlaylistReply::BadRequest(e.to_string()),
        };
        let answer = self.wait_on(key, &state, |st| {
            if !st.playlist.started() {
                return Some(PlaylistReply::NotFound);
            }
            // once the playlist has ENDLIST nothing more comes: directives are ignored and
            // waiting requests are answered with it (while the publisher may still come
            // back, they wait as usual, at most 3 target durations)
            match llhls::ready(&st.playlist, &d, part_target, st.endlisted) {
                Err(e) => Some(PlaylistReply::BadRequest(e.to_string())),
                Ok(true) => Some(PlaylistReply::Text { text: self.render_ll(key, st, d.skip), blocking: d.blocks() }),
                Ok(false) => None,
            }
        });
        answer.await.unwrap_or(PlaylistReply::Unavailable)
    }

    /// A segment, part or initialization segment by file name (see [`SegmentName`]), with
    /// its kind. A request for the part the playlist hints at (`EXT-X-PRELOAD-HINT`) waits
    /// for it, at most 3 target durations.
    pub async fn segment(&self, app: &str, file: &str) -> Option<(FileKind, Bytes)> {
        let name = SegmentName::parse(file)?;
        let key = StreamKey::new(app, name.stream);
        let state = self.state(&key)?;
        let FileKind::Part(index) = name.kind else { return file_in(&lock(&state), &name) };
        let found = self.wait_on(&key, &state, |st| {
            if let Some(found) = file_in(st, &name) {
                return Some(Some(found));
            }
            // only the hinted part is worth waiting for; anything else is unknown
            let hinted = llhls::next_part(&st.playlist) == (name.sequence, index);
            (st.token != name.token || st.endlisted || !st.live || !hinted).then_some(None)
        });
        found.await.flatten()
    }

    /// Waits until `look` (called under the key's lock, first at once, then after every
    /// change of the key) gives an answer: at most 3 target durations, and only while fewer
    /// than `max_blocked_requests` requests wait on the key. `None` when it timed out or the
    /// key had too many waiting.
    async fn wait_on<T>(
        &self,
        key: &StreamKey,
        state: &Mutex<KeyState>,
        mut look: impl FnMut(&mut KeyState) -> Option<T>,
    ) -> Option<T> {
        let target_secs = lock(state).playlist.target_duration_secs();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3 * target_secs);
        let max_blocked = self.policy(key).max_blocked_requests;
        let mut blocked = None;
        loop {
            let changed = lock(state).changed.clone();
            let notified = changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable(); // before looking: no change between look and wait is missed
            {
                let mut st = lock(state);
                if let Some(answer) = look(&mut st) {
                    return Some(answer);
                }
                if blocked.is_none() {
                    blocked = Blocked::enter(&st.blocked, max_blocked);
                    if blocked.is_none() {
                        self.inner.metrics.limit_hit("hls_blocked_requests");
                        return None;
                    }
                }
            }
            tokio::time::timeout_at(deadline, notified).await.ok()?;
        }
    }

    /// Notes a playlist fetch by an HLS client of `key`.
    pub fn client_seen(&self, key: &StreamKey, client: std::net::IpAddr) {
        let Some(state) = self.state(key) else { return };
        let st = &mut *lock(&state);
        if st.clients.len() >= MAX_CLIENTS && !st.clients.contains_key(&client) {
            // full: prune at most once a second (a flood of new addresses must not scan it each time)
            if st.clients_pruned.elapsed() < Duration::from_secs(1) {
                return;
            }
            st.clients.retain(|_, seen| seen.elapsed() < CLIENT_WINDOW);
            st.clients_pruned = Instant::now();
            if st.clients.len() >= MAX_CLIENTS {
                return;
            }
        }
        st.clients.insert(client, Instant::now());
    }

    /// HLS viewers of `key` now. HLS has no connection to count: a viewer is a client
    /// address that fetched the playlist in the last 10 s, so clients behind one proxy, NAT
    /// or CDN edge count once.
    pub fn viewers(&self, key: &StreamKey) -> usize {
        let Some(state) = self.state(key) else { return 0 };
        let st = &mut *lock(&state);
        st.clients.retain(|_, seen| seen.elapsed() < CLIENT_WINDOW);
        st.clients_pruned = Instant::now();
        st.clients.len()
    }

    /// (first listed, last listed) media sequence numbers, for the API.
    pub fn sequence_range(&self, key: &StreamKey) -> Option<(u64, u64)> {
        let state = self.state(key)?;
        let st = lock(&state);
        let first = st.playlist.sequences().next()?;
        Some((first, st.playlist.next_sequence().saturating_sub(1)))
    }

    /// The container of a key's segments and its part target (Low-Latency HLS), while the
    /// store holds it.
    pub fn container(&self, key: &StreamKey) -> Option<(Container, Option<u64>)> {
        let state = self.state(key)?;
        let st = lock(&state);
        Some((st.container, st.part_target_ms))
    }

    /// How long a segment that left the playlist stays downloadable: at least its duration
    /// plus the duration of the longest playlist that held it (RFC 8216 §6.2.2), taken as
    /// the playlist now plus one target duration: 14 s with the defaults.
    fn grace(&self, key: &StreamKey, st: &KeyState) -> Duration {
        let window = st.playlist.target_duration_secs() * self.policy(key).window_segments.max(1) as u64 * 1000;
        let listed = st.playlist.segments().map(|s| s.duration_ms).sum::<u64>();
        let target = st.playlist.target_duration_secs() * 1000;
        Duration::from_millis(window.max(listed).max(12_000) + target)
    }

    fn dir_of(&self, key: &StreamKey) -> Option<PathBuf> {
        self.inner.config.dir.as_ref().map(|d| d.join(&key.app))
    }

    /// Starts (or resumes, within the hold time) the state of `key`. Ended playlists are
    /// kept for their hold time, but no more of them than `limits.max_streams`: beyond that
    /// the oldest ended ones go first (returned, to remove their files).
    /// `container`: the app's variant's, or fMP4 for codecs MPEG-TS cannot carry.
    pub(super) fn begin(&self, key: &StreamKey, container: Container) -> Begun {
        let mut keys = lock(&self.inner.keys);
        let cfg = self.policy(key);
        let mut dropped = Vec::new();
        // a republish under a changed variant (configuration reload) or with codecs of the
        // other container starts afresh: one playlist cannot list both kinds of segment
        if let Some(old) = keys.get(key).filter(|s| lock(s).container != container).cloned() {
            keys.remove(key);
            let st = lock(&old);
            info!(stream = %key, "hls: the app's HLS variant changed; the held playlist is replaced");
            dropped.push((key.clone(), st.file_names(key)));
        }
        if let Some(state) = keys.get(key) {
            let mut st = lock(state);
            st.session += 1;
            st.live = true;
            st.ended_at = None;
            st.endlisted = false;
            st.mark_changed();
            st.part_target_ms = cfg.parts().filter(|_| container == Container::Fmp4);
            let resumed = st.playlist.sequences().next().is_some();
            return (state.clone(), st.session, resumed, Vec::new());
        }
        let max_held = self.inner.settings.get().limits.max_streams;
        let mut ended: Vec<(Instant, StreamKey)> = keys
            .iter()
            .filter_map(|(k, state)| {
                let st = lock(state);
                st.ended_at.filter(|_| !st.live).map(|t| (t, k.clone()))
            })
            .collect();
        let excess = (ended.len() + 1).saturating_sub(max_held.max(1));
        if excess > 0 {
            ended.sort();
            for (_, old) in ended.drain(..excess) {
                if let Some(state) = keys.remove(&old) {
                    let names = lock(&state).file_names(&old);
                    info!(stream = %old, "hls: more than {max_held} ended playlists held; dropping the oldest early");
                    self.inner.metrics.limit_hit("hls_held_streams");
                    dropped.push((old, names));
                }
            }
        }
        let mut playlist = Playlist::new(
            PlaylistConfig { window_segments: cfg.window_segments, min_window_ms: cfg.min_window_ms },
            cfg.target_duration_ms.div_ceil(1000).max(1),
        );
        let part_target_ms = cfg.parts().filter(|_| container == Container::Fmp4);
        if part_target_ms.is_some() {
            playlist.start_at(1);
        }
        let state = Arc::new(Mutex::new(KeyState {
            token: format!("{:016x}", rand::random::<u64>()),
            container,
            inits: VecDeque::new(),
            init_count: 0,
            rendered: None,
            rendered_skip: None,
            part_target_ms,
            parts: HashMap::new(),
            parts_bytes: 0,
            changed: Default::default(),
            blocked: Default::default(),
            playlist,
            segments: HashMap::new(),
            held_bytes: 0,
            over_budget_logged: false,
            clients: HashMap::new(),
            clients_pruned: Instant::now(),
            retired: VecDeque::new(),
            session: 0,
            live: true,
            ended_at: None,
            endlisted: false,
        }));
        keys.insert(key.clone(), state.clone());
        (state, 0, false, dropped)
    }

    /// Makes a finished segment readable, then lists it.
    pub(super) async fn add_segment(&self, key: &StreamKey, state: &Mutex<KeyState>, seg: Segment) {
        let (name, seg_dir, map, new_init) = {
            let mut st = lock(state);
            let (map, new_init) = match &seg.init {
                Some(init) => {
                    let (n, new) = st.init_number(&init.data);
                    (Some(n), new.then(|| (st.init_name(key, n), init.data.clone())))
                }
                None => (None, None),
            };
            (st.segment_name(key, seg.sequence), self.dir_of(key), map, new_init)
        };
        if let Some(dir) = &seg_dir {
            if let Some((init_name, data)) = &new_init {
                if let Err(e) = write_atomic(dir, init_name, data).await {
                    warn!(stream = %key, "hls: writing {init_name}: {e}");
                }
            }
            if let Err(e) = write_atomic(dir, &name, &seg.data).await {
                warn!(stream = %key, "hls: writing {name}: {e}");
            }
        }
        let (playlist_text, expired) = {
            let mut st = lock(state);
            if st.playlist.started() && seg.sequence < st.playlist.next_sequence() {
                warn!(stream = %key, seq = seg.sequence, "hls: segment of an older session ignored");
                return;
            }
            st.held_bytes += seg.data.len();
            if let Some(old) = st.segments.insert(seg.sequence, seg.data.clone()) {
                st.held_bytes -= old.len();
            }
            // Low-Latency HLS: the segment is its parts; its stored parts become slices of
            // it, so the bytes are held once
            if st.part_target_ms.is_some() {
                let mut offset = 0;
                for i in 0.. {
                    let Some(len) = st.parts.get(&(seg.sequence, i)).map(Bytes::len) else { break };
                    if offset + len > seg.data.len() {
                        break;
                    }
                    st.parts.insert((seg.sequence, i), seg.data.slice(offset..offset + len));
                    offset += len;
                }
                st.parts_bytes = open_parts_bytes(&st);
            }
            let removed = st.playlist.push(&SegmentInfo { map, ..SegmentInfo::from(&seg) });
            let until = Instant::now() + self.grace(key, &st);
            st.retired.extend(removed.into_iter().map(|s| (s, until)));
            let mut expired = self.expire(key, &mut st);
            expired.extend(self.enforce_byte_bound(key, &mut st));
            self.schedule(key, &st);
            st.mark_changed();
            // the disk mirror needs every version; in memory, rendering waits for a request
            let text = self.dir_of(key).map(|_| self.render_disk(key, &st));
            (text, expired)
        };
        self.inner.metrics.segments.inc();
        debug!(stream = %key, seq = seg.sequence, ms = seg.duration_ms, bytes = seg.data.len(), "hls segment");
        if let Some(text) = playlist_text {
            self.write_playlist(key, &text).await;
        }
        self.remove_files(key, &expired).await;
    }

    /// Keeps the segments of one stream within `max_stream_bytes`: retired segments go
    /// first (before their grace ends), then the oldest listed ones (the window shrinks).
    /// Returns the file names removed.
    fn enforce_byte_bound(&self, key: &StreamKey, st: &mut KeyState) -> Vec<String> {
        let max = self.policy(key).max_stream_bytes;
        let mut names = Vec::new();
        while st.held_bytes > max {
            let seq = match st.retired.pop_front() {
                Some((seq, _)) => seq,
                // keep the newest segment whatever it weighs (it is within max_segment_bytes)
                None if st.playlist.len() > 1 => match st.playlist.pop_oldest() {
                    Some(seq) => seq,
                    None => break,
                },
                None => break,
            };
            st.remove_segment(seq);
            names.push(st.segment_name(key, seq));
        }
        if !names.is_empty() {
            self.inner.metrics.limit_hit("hls_stream_bytes");
            if !std::mem::replace(&mut st.over_budget_logged, true) {
                warn!(stream = %key, max_stream_bytes = max, "hls: segments of this stream outgrew their byte bound; dropping the oldest early (logged once per stream)");
            }
        }
        names
    }

    /// Makes a finished part readable and lists it (Low-Latency HLS); wakes the requests
    /// waiting for it. Parts stay readable for two segments after they leave the playlist.
    pub(super) fn add_part(&self, key: &StreamKey, state: &Mutex<KeyState>, part: Part) {
        let mut st = lock(state);
        if st.part_target_ms.is_none() {
            return;
        }
        let map = part.init.as_ref().map(|init| st.init_number(&init.data).0);
        st.parts.insert((part.sequence, part.index), part.data.clone());
        st.parts_bytes = open_parts_bytes(&st);
        st.playlist.push_part(&PartInfo {
            sequence: part.sequence,
            index: part.index,
            duration_ms: part.duration_ms,
            independent: part.independent,
            discontinuity: part.discontinuity,
            map,
            wall_clock_ms: part.wall_clock_ms,
        });
        let oldest = st.playlist.parts().next().map_or(part.sequence, |p| p.sequence).saturating_sub(2);
        // the open segment's parts are bounded apart from the segments (they are within
        // max_segment_bytes anyway): at most half of max_stream_bytes
        let max = self.policy(key).max_stream_bytes / 2;
        let mut keys: Vec<(u64, u32)> = st.parts.keys().copied().collect();
        keys.sort_unstable();
        let open = st.playlist.next_sequence();
        let mut bytes = st.parts_bytes;
        for k in keys {
            if k.0 >= oldest && bytes <= max {
                break;
            }
            if let Some(d) = st.parts.remove(&k) {
                // parts of complete segments are slices of them (held with the segment)
                if k.0 >= open {
                    bytes -= d.len();
                }
            }
        }
        if bytes > max {
            self.inner.metrics.limit_hit("hls_stream_bytes");
        }
        st.parts_bytes = open_parts_bytes(&st);
        st.mark_changed();
        let delay_ms = (unix_ms() - part.last_frame_wall_ms).max(0);
        self.inner.metrics.hls_part_delay.observe(delay_ms as f64 / 1000.0);
        debug!(stream = %key, seq = part.sequence, part = part.index, ms = part.duration_ms, delay_ms, "hls part");
    }

    /// The Low-Latency playlist (or its delta update), rendered again only when it changed.
    fn render_ll(&self, key: &StreamKey, st: &mut KeyState, skip: bool) -> Bytes {
        let cached = if skip { &st.rendered_skip } else { &st.rendered };
        if let Some(text) = cached {
            return text.clone();
        }
        let st_ref = &*st;
        let names = llhls::Names {
            segment: &|seq| st_ref.segment_name(key, seq),
            part: &|seq, i| {
                SegmentName { stream: &key.name, token: &st_ref.token, sequence: seq, kind: FileKind::Part(i) }
                    .to_string()
            },
            map: &|n| st_ref.init_name(key, n),
        };
        let text = llhls::render(&st.playlist, st.part_target_ms.unwrap_or(333), st.endlisted, skip, &names);
        if skip {
            st.rendered_skip = Some(text.clone());
        } else {
            st.rendered = Some(text.clone());
        }
        text
    }

    /// The playlist for the disk mirror: a plain web server cannot answer blocking reloads
    /// or serve parts (they are not written), so a Low-Latency key's mirror lists its
    /// segments only, as the `fmp4` variant would.
    fn render_disk(&self, key: &StreamKey, st: &KeyState) -> Bytes {
        st.playlist.render(st.endlisted, |seq| st.segment_name(key, seq), |n| st.init_name(key, n))
    }

    /// The playlist text, rendered again only when it changed since the last time.
    fn render(&self, key: &StreamKey, st: &mut KeyState) -> Bytes {
        if st.part_target_ms.is_some() {
            return self.render_ll(key, st, false);
        }
        if let Some(text) = &st.rendered {
            return text.clone();
        }
        let text = st.playlist.render(st.endlisted, |seq| st.segment_name(key, seq), |n| st.init_name(key, n));
        st.rendered = Some(text.clone());
        text
    }

    /// Drops retired segments past their grace; returns their file names.
    fn expire(&self, key: &StreamKey, st: &mut KeyState) -> Vec<String> {
        let expired = st.expire_retired(Instant::now());
        expired.into_iter().map(|seq| st.segment_name(key, seq)).collect()
    }

    async fn write_playlist(&self, key: &StreamKey, text: &Bytes) {
        if let Some(dir) = self.dir_of(key) {
            if let Err(e) = write_atomic(&dir, &format!("{}.m3u8", key.name), text).await {
                warn!(stream = %key, "hls: writing playlist: {e}");
            }
        }
    }

    pub(super) async fn remove_files(&self, key: &StreamKey, names: &[String]) {
        if let Some(dir) = self.dir_of(key) {
            for n in names {
                let _ = tokio::fs::remove_file(dir.join(n)).await;
            }
        }
    }

    /// The publisher left: mark the playlist ended (it stays readable for the hold time).
    /// `EXT-X-ENDLIST` follows after `endlist_delay_ms` (see [`Self::sweep`]), or at once
    /// when `now` (shutdown) or when no delay is configured.
    pub(super) async fn end(&self, key: &StreamKey, state: &Mutex<KeyState>, session: u64, now: bool) {
        let text = {
            let mut st = lock(state);
            if st.session != session {
                return;
            }
            st.live = false;
            st.ended_at = Some(Instant::now());
            // waiting requests for hinted parts give up (the publisher may come back, but
            // its next segment starts afresh)
            st.mark_changed();
            self.schedule(key, &st);
            if !now && self.policy(key).endlist_delay_ms > 0 {
                return;
            }
            st.endlisted = true;
            st.mark_changed();
            self.render_disk(key, &st)
        };
        self.write_playlist(key, &text).await;
    }

    /// Does what is due at `now` for every key (see [`KeyState::handle_timeout`]): adds
    /// `EXT-X-ENDLIST` to playlists whose publisher left `endlist_delay_ms` ago (all of
    /// them when `shutting_down`), drops keys whose hold time passed and segments whose
    /// grace passed; then notes the next deadline.
    pub(super) async fn sweep(&self, now: Instant, shutting_down: bool) {
        let mut gone: Vec<(StreamKey, Vec<String>)> = Vec::new();
        let mut ended: Vec<(StreamKey, Bytes)> = Vec::new();
        let mut next: Option<Instant> = None;
        // taken first: what keys schedule while this sweep runs is stored (and wakes the
        // driver) instead of being compared with the deadline being handled now
        lock(&self.inner.next_deadline).take();
        {
            let mut keys = lock(&self.inner.keys);
            keys.retain(|key, state| {
                let mut st = lock(state);
                let timing = self.timing(key);
                let due = st.handle_timeout(now, timing, shutting_down);
                let mut names: Vec<String> = due.expired.iter().map(|seq| st.segment_name(key, *seq)).collect();
                if due.endlist {
                    ended.push((key.clone(), self.render_disk(key, &st)));
                }
                if due.drop_key {
                    names.extend(st.segments.keys().map(|seq| st.segment_name(key, *seq)));
                    names.push(format!("{}.m3u8", key.name));
                    info!(stream = %key, "hls: hold time over, playlist dropped");
                } else if let Some(at) = st.poll_timeout(timing) {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                if !names.is_empty() {
                    gone.push((key.clone(), names));
                }
                !due.drop_key
            });
            // what keys scheduled meanwhile, or what this sweep found, whichever is first
            let mut earliest = lock(&self.inner.next_deadline);
            *earliest = [*earliest, next].into_iter().flatten().min();
        }
        for (key, text) in ended {
            self.write_playlist(&key, &text).await;
        }
        for (key, names) in gone {
            self.remove_files(&key, &names).await;
        }
    }
}

async fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(".{name}.tmp"));
    tokio::fs::write(&tmp, data).await?;
    tokio::fs::rename(&tmp, dir.join(name)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8216 §6.2.2: a segment removed from the playlist stays available for at least
    /// its duration plus the duration of the longest playlist that held it.
    #[tokio::test]
    async fn a_removed_segment_stays_downloadable_for_its_duration_and_the_playlists() {
        let settings = Arc::new(LiveSettings::new(crate::config::Config::default().settings()));
        let store = HlsStore::new(HlsConfig::default(), settings, Arc::new(Metrics::new()));
        let key = StreamKey::new("live", "keep");
        let (state, ..) = store.begin(&key, store.policy(&key).variant.container());
        lock(&state).playlist.set_target_duration(2);
        let first = lock(&state).playlist.next_sequence();
        let mut longest_ms = 0u64;
        for i in 0..8u64 {
            let seg = Segment {
                sequence: first + i,
                duration_ms: 2000,
                data: Bytes::from_static(b"segment"),
                discontinuity: false,
                first_dts_ms: i as i64 * 2000,
                wall_clock_ms: 0,
                independent: true,
                byte_limited: false,
                init: None,
            };
            let before = Instant::now();
            store.add_segment(&key, &state, seg).await;
            let st = lock(&state);
            longest_ms = longest_ms.max(st.playlist.segments().map(|s| s.duration_ms).sum());
            if let Some(&(seq, until)) = st.retired.back() {
                let kept = until.duration_since(before);
                assert!(kept >= Duration::from_millis(2000 + longest_ms), "segment {seq} kept {kept:?}");
            }
        }
        assert!(!lock(&state).retired.is_empty(), "segments left the window");
        assert_eq!(longest_ms, 12_000, "6 segments of 2 s: removed ones stay 14 s");
    }

    #[test]
    fn hls_viewers_are_client_addresses_seen_recently() {
        let settings = Arc::new(LiveSettings::new(crate::config::Config::default().settings()));
        let store = HlsStore::new(HlsConfig::default(), settings, Arc::new(Metrics::new()));
        let key = StreamKey::new("live", "a");
        let (a, b): (std::net::IpAddr, std::net::IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        store.client_seen(&key, a);
        assert_eq!(store.viewers(&key), 0, "no HLS state for the key yet");
        let _ = store.begin(&key, store.policy(&key).variant.container());
        store.client_seen(&key, a);
        store.client_seen(&key, a);
        store.client_seen(&key, b);
        assert_eq!(store.viewers(&key), 2);
        let state = store.state(&key).unwrap();
        lock(&state).clients.insert(b, Instant::now() - CLIENT_WINDOW);
        assert_eq!(store.viewers(&key), 1, "b's last fetch is too old");
    }
}
