//! The lifecycle of one key's HLS state, with time as an input: what the key holds
//! (playlist, segments listed and retired, viewers, the publish session) and what falls due
//! when (`poll_timeout` / `handle_timeout(now)`): retired segments leave after their grace,
//! `EXT-X-ENDLIST` comes `endlist_delay_ms` after the publisher left, the key goes after
//! `hold_time_ms`. No clock is read here; the store's driver sleeps until the next deadline.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::name::FileKind;
use super::{Container, Playlist, SegmentName};

/// Initialization segments kept per key (each codec change or republish with a changed
/// configuration makes one; the window rarely spans more than two).
pub(super) const MAX_INITS: usize = 4;
use crate::hub::StreamKey;

pub(super) struct KeyState {
    /// Part of every segment name: random, so segment URIs of a keyed stream cannot be
    /// computed without the playlist, and never repeating for a key, even across restarts.
    pub(super) token: String,
    /// The container of the key's segments (fixed for the key's life: a republish under a
    /// changed policy starts a new key state).
    pub(super) container: Container,
    /// fMP4: the initialization segments still referenced (newest last), by number.
    pub(super) inits: VecDeque<(u32, Bytes)>,
    /// fMP4: initialization segments numbered so far.
    pub(super) init_count: u32,
    pub(super) playlist: Playlist,
    /// The playlist text as last rendered; `None` when the playlist changed since (it is
    /// rendered again when someone asks, not on every change).
    pub(super) rendered: Option<Bytes>,
    /// Low-Latency HLS: the delta update (`_HLS_skip`) as last rendered.
    pub(super) rendered_skip: Option<Bytes>,
    /// Low-Latency HLS: the part target; `None` when the key makes no parts.
    pub(super) part_target_ms: Option<u64>,
    /// Low-Latency HLS: parts by (sequence, index), those listed and a few segments older.
    pub(super) parts: HashMap<(u64, u32), Bytes>,
    /// Bytes of the open segment's parts (the others are slices of their segments).
    pub(super) parts_bytes: usize,
    /// Woken whenever a part or segment is added or the playlist ends (blocking reloads and
    /// requests for the hinted part wait on it).
    pub(super) changed: std::sync::Arc<tokio::sync::Notify>,
    pub(super) segments: HashMap<u64, Bytes>,
    /// Bytes of `segments` (listed and retired), bounded by `max_stream_bytes`.
    pub(super) held_bytes: usize,
    /// The byte bound of the stream was hit (logged once per key).
    pub(super) over_budget_logged: bool,
    /// Segments that left the window, readable until the instant given.
    pub(super) retired: VecDeque<(u64, Instant)>,
    /// HLS clients (by address) and when they last fetched the playlist; when the map was
    /// last pruned (see [`HlsStore::viewers`]).
    pub(super) clients: HashMap<std::net::IpAddr, Instant>,
    pub(super) clients_pruned: Instant,
    /// Bumped on every publish, so a finished task cannot end a newer session.
    pub(super) session: u64,
    pub(super) live: bool,
    pub(super) ended_at: Option<Instant>,
    /// The playlist carries `EXT-X-ENDLIST` (added `endlist_delay_ms` after the publisher left).
    pub(super) endlisted: bool,
}

/// What is due for one key at some instant (see [`KeyState::handle_timeout`]).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Due {
    /// Retired segments whose grace passed: remove them.
    pub(super) expired: Vec<u64>,
    /// Add `EXT-X-ENDLIST` now.
    pub(super) endlist: bool,
    /// The hold time passed: drop the key.
    pub(super) drop_key: bool,
}

/// The times a key's lifecycle depends on (from its app's policy).
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    pub(super) endlist_delay: Duration,
    pub(super) hold: Duration,
}

impl KeyState {
    /// The next instant something is due for this key (a retired segment's grace ends,
    /// `EXT-X-ENDLIST` is added, the hold time ends), or `None` while nothing is pending.
    /// Time is an input: the driver sleeps until the earliest deadline of all keys.
    pub(super) fn poll_timeout(&self, t: Timing) -> Option<Instant> {
        let retired = self.retired.front().map(|(_, until)| *until);
        let ended = self.ended_at.filter(|_| !self.live);
        // (a delay too large for the clock never comes due)
        let endlist = ended.filter(|_| !self.endlisted).and_then(|at| at.checked_add(t.endlist_delay));
        let hold = ended.and_then(|at| at.checked_add(t.hold));
        [retired, endlist, hold].into_iter().flatten().min()
    }

    /// Takes what is due at `now` (everything at once when `shutting_down`, but the key
    /// and its segments stay for their hold time).
    pub(super) fn handle_timeout(&mut self, now: Instant, t: Timing, shutting_down: bool) -> Due {
        let mut due = Due { expired: self.expire_retired(now), ..Due::default() };
        let ended = self.ended_at.filter(|_| !self.live);
        let passed = |at: Instant, d: Duration| now.checked_duration_since(at).is_some_and(|e| e >= d);
        if !self.endlisted && ended.is_some_and(|at| shutting_down || passed(at, t.endlist_delay)) {
            self.endlisted = true;
            self.mark_changed();
            due.endlist = true;
        }
        due.drop_key = ended.is_some_and(|at| passed(at, t.hold));
        due
    }

    /// The playlist changed: its renderings are stale and waiting requests look again.
    pub(super) fn mark_changed(&mut self) {
        self.rendered = None;
        self.rendered_skip = None;
        self.changed.notify_waiters();
    }

    /// Removes the retired segments whose grace ended by `now`; returns their sequences.
    pub(super) fn expire_retired(&mut self, now: Instant) -> Vec<u64> {
        let mut expired = Vec::new();
        while let Some(&(seq, until)) = self.retired.front() {
            if until > now {
                break;
            }
            self.retired.pop_front();
            self.remove_segment(seq);
            expired.push(seq);
        }
        expired
    }

    /// Removes one segment (listed or retired) from what the key holds.
    pub(super) fn remove_segment(&mut self, seq: u64) {
        if let Some(data) = self.segments.remove(&seq) {
            self.held_bytes -= data.len();
        }
    }

    pub(super) fn segment_name(&self, key: &StreamKey, seq: u64) -> String {
        let kind = match self.container {
            Container::MpegTs => FileKind::Ts,
            Container::Fmp4 => FileKind::M4s,
        };
        SegmentName { stream: &key.name, token: &self.token, sequence: seq, kind }.to_string()
    }

    /// Every file the key has on disk (when mirrored): segments, initialization segments
    /// and the playlist.
    pub(super) fn file_names(&self, key: &StreamKey) -> Vec<String> {
        let mut names: Vec<String> = self.segments.keys().map(|seq| self.segment_name(key, *seq)).collect();
        names.extend(self.inits.iter().map(|(n, _)| self.init_name(key, *n)));
        names.push(format!("{}.m3u8", key.name));
        names
    }

    pub(super) fn init_name(&self, key: &StreamKey, n: u32) -> String {
        SegmentName { stream: &key.name, token: &self.token, sequence: u64::from(n), kind: FileKind::Init }.to_string()
    }

    /// The number of the initialization segment `data` (a new one when it differs from
    /// the newest); at most [`MAX_INITS`] are kept. Returns the number and whether it is new.
    pub(super) fn init_number(&mut self, data: &Bytes) -> (u32, bool) {
        if let Some((n, newest)) = self.inits.back() {
            if newest == data {
                return (*n, false);
            }
        }
        self.init_count += 1;
        self.inits.push_back((self.init_count, data.clone()));
        while self.inits.len() > MAX_INITS {
            self.inits.pop_front();
        }
        (self.init_count, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::PlaylistConfig;

    fn key_state(t0: Instant) -> KeyState {
        KeyState {
            token: "t".into(),
            container: Container::MpegTs,
            inits: VecDeque::new(),
            init_count: 0,
            playlist: Playlist::new(PlaylistConfig::default(), 2),
            rendered: None,
            rendered_skip: None,
            part_target_ms: None,
            parts: HashMap::new(),
            parts_bytes: 0,
            changed: Default::default(),
            segments: HashMap::from([(1, Bytes::from_static(b"one")), (2, Bytes::from_static(b"two"))]),
            held_bytes: 6,
            over_budget_logged: false,
            retired: VecDeque::from([(1, t0 + Duration::from_secs(5))]),
            clients: HashMap::new(),
            clients_pruned: t0,
            session: 0,
            live: true,
            ended_at: None,
            endlisted: false,
        }
    }

    #[test]
    fn the_lifecycle_is_driven_by_deadlines_not_ticks() {
        // time is an input: step it, no sleeping
        let t0 = Instant::now();
        let t = Timing { endlist_delay: Duration::from_secs(10), hold: Duration::from_secs(60) };
        let mut st = key_state(t0);
        assert_eq!(st.poll_timeout(t), Some(t0 + Duration::from_secs(5)), "the retired segment's grace");
        assert_eq!(st.handle_timeout(t0 + Duration::from_secs(4), t, false), Due::default(), "nothing due yet");
        let due = st.handle_timeout(t0 + Duration::from_secs(5), t, false);
        assert_eq!(due.expired, vec![1]);
        assert_eq!((st.held_bytes, st.segments.len()), (3, 1));
        assert_eq!(st.poll_timeout(t), None, "live, nothing retired: nothing pending");
        // the publisher leaves at t0 + 20 s
        st.live = false;
        st.ended_at = Some(t0 + Duration::from_secs(20));
        assert_eq!(st.poll_timeout(t), Some(t0 + Duration::from_secs(30)), "ENDLIST after endlist_delay");
        let due = st.handle_timeout(t0 + Duration::from_secs(30), t, false);
        assert!(due.endlist && !due.drop_key && st.endlisted);
        assert_eq!(st.poll_timeout(t), Some(t0 + Duration::from_secs(80)), "then the end of the hold time");
        assert!(st.handle_timeout(t0 + Duration::from_secs(80), t, false).drop_key);
        // at shutdown ENDLIST is due at once, the hold time still applies
        let mut st = key_state(t0);
        st.live = false;
        st.ended_at = Some(t0);
        let due = st.handle_timeout(t0, t, true);
        assert!(due.endlist && !due.drop_key);
    }
}
