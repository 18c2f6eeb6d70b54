//! The fan-out core of one stream: the ring of recent events, the GOP cache, the lag policy
//! and the decision when to wake viewers. It holds no lock, waker, clock or runtime: the
//! locked [`super::Stream`] wraps one [`Fanout`] and one [`Cursor`] per viewer, and these
//! tests drive it with plain calls.
//!
//! - [`Fanout::push`] appends an event, bounds the ring (events and bytes), drops frames no
//!   viewer can be served any more and says whether viewers should be woken now.
//! - [`Fanout::cursor`] starts a viewer at the metadata, codec config and GOP cache.
//! - [`Fanout::read`] moves a cursor along the ring: a viewer more than `max_lag_ms` behind
//!   (or one that fell out of the ring) skips to the latest keyframe, and one that had to skip
//!   more than `max_lag_skips` times without catching up is evicted.

use std::collections::VecDeque;

use bytes::Bytes;

use super::gop::GopCache;
use super::{Evicted, HubConfig, HubEvent};
use crate::media::{CodecConfig, Frame};

/// Audio held back from waking viewers at most this long (media time) when the stream has video.
const AUDIO_COALESCE_MS: i64 = 50;
/// Frames held back from viewers at most (whatever their timestamps say: a publisher whose
/// timestamps do not advance still reaches its viewers).
pub(crate) const MAX_HELD_FRAMES: u32 = 8;

/// What [`Fanout::read`] did besides handing out events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Read {
    /// Events were appended.
    pub(crate) added: bool,
    /// The viewer lagged and skipped to the latest keyframe.
    pub(crate) skipped: bool,
}

#[derive(Debug)]
pub(crate) struct Fanout {
    ring_events: usize,
    ring_bytes_max: usize,
    max_lag_ms: i64,
    max_lag_skips: u32,
    merge_write_ms: i64,
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
}

impl Fanout {
    pub(crate) fn new(config: &HubConfig) -> Self {
        Self {
            ring_events: config.ring_events,
            ring_bytes_max: config.ring_bytes,
            max_lag_ms: i64::try_from(config.max_lag_ms).unwrap_or(i64::MAX),
            max_lag_skips: config.max_lag_skips,
            merge_write_ms: i64::try_from(config.merge_write_ms).unwrap_or(i64::MAX),
            ring: VecDeque::new(),
            ring_bytes: 0,
            first_seq: 0,
            newest_dts: 0,
            timeline_seq: 0,
            metadata: None,
            codec: CodecConfig::default(),
            gop: GopCache::new(config.gop_cache.clone()),
            ended: false,
            held_audio: None,
            last_key_seq: None,
            last_video_wake: None,
            held_frames: 0,
        }
    }

    pub(crate) fn codec(&self) -> &CodecConfig {
        &self.codec
    }

    pub(crate) fn metadata(&self) -> Option<&Bytes> {
        self.metadata.as_ref()
    }

    pub(crate) fn is_ended(&self) -> bool {
        self.ended
    }

    /// The keyframe the GOP cache starts with.
    pub(crate) fn gop_keyframe(&self) -> Option<crate::media::VideoFrame> {
        match self.gop.events().next()? {
            HubEvent::Frame(crate::media::Frame::Video(v)) if v.keyframe => Some(v.clone()),
            _ => None,
        }
    }

    /// (events, payload bytes) held by the GOP cache.
    pub(crate) fn gop_size(&self) -> (usize, usize) {
        (self.gop.len(), self.gop.bytes())
    }

    /// Payload bytes held by the ring.
    #[cfg(test)]
    pub(crate) fn ring_bytes(&self) -> usize {
        self.ring_bytes
    }

    /// Events held by the ring, oldest first.
    #[cfg(test)]
    pub(crate) fn ring(&self) -> impl DoubleEndedIterator<Item = &HubEvent> {
        self.ring.iter()
    }

    fn end_seq(&self) -> u64 {
        self.first_seq + self.ring.len() as u64
    }

    /// Appends `ev` (ignored once the stream ended); true when viewers should be woken now.
    #[must_use]
    pub(crate) fn push(&mut self, ev: HubEvent) -> bool {
        if self.ended {
            return false;
        }
        match &ev {
            HubEvent::Metadata(m) => self.metadata = Some(m.clone()),
            HubEvent::Config(c) => {
                self.codec = c.clone();
                self.gop.clear();
            }
            HubEvent::Frame(f) => {
                let has_video = self.codec.video.is_some();
                self.gop.push(f, has_video);
                self.newest_dts = f.dts();
            }
            HubEvent::Discontinuity => self.gop.clear(),
            HubEvent::EndOfStream => self.ended = true,
        }
        if matches!(&ev, HubEvent::Frame(f) if f.is_keyframe()) {
            self.last_key_seq = Some(self.end_seq());
        }
        let wake = self.should_wake(&ev);
        let discontinuity = matches!(ev, HubEvent::Discontinuity);
        self.ring_bytes += ev.weight();
        self.ring.push_back(ev);
        if discontinuity {
            self.timeline_seq = self.end_seq();
        }
        while self.ring.len() > 1 && (self.ring.len() > self.ring_events || self.ring_bytes > self.ring_bytes_max) {
            self.pop_front();
        }
        self.trim_lagged();
        wake
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.ring.pop_front() {
            self.ring_bytes -= old.weight();
            self.first_seq += 1;
        }
    }

    /// Whether `ev` wakes the viewers now. Waking every viewer costs a task poll and a socket
    /// write per viewer, so frames are announced in batches:
    /// - audio of a stream with video rides along with the next video frame (at most one frame
    ///   interval later), unless AUDIO_COALESCE_MS of audio piled up (the video stalled);
    /// - video wakes once per `merge_write_ms` of video media time (0: every frame);
    /// - everything else (config, metadata, discontinuity, end) wakes at once;
    /// - and at least every MAX_HELD_FRAMES frames, whatever the timestamps.
    fn should_wake(&mut self, ev: &HubEvent) -> bool {
        let wake = self.merge_due(ev);
        if wake {
            self.held_frames = 0;
        } else {
            self.held_frames += 1;
            if self.held_frames >= MAX_HELD_FRAMES {
                self.held_frames = 0;
                self.held_audio = None;
                return true;
            }
        }
        wake
    }

    /// [`Self::should_wake`] by media time.
    fn merge_due(&mut self, ev: &HubEvent) -> bool {
        let has_video = self.codec.video.is_some();
        match ev {
            HubEvent::Frame(Frame::Audio(a)) if has_video => {
                let first = *self.held_audio.get_or_insert(a.pts);
                if a.pts.saturating_sub(first) >= AUDIO_COALESCE_MS {
                    self.held_audio = None;
                    true
                } else {
                    false
                }
            }
            HubEvent::Frame(Frame::Video(v)) => {
                let merge = self.merge_write_ms;
                // a backwards step (new timeline) wakes at once
                let due = self.last_video_wake.is_none_or(|last| v.dts < last || v.dts.saturating_sub(last) >= merge);
                if due {
                    self.last_video_wake = Some(v.dts);
                    self.held_audio = None;
                }
                due
            }
            _ => {
                self.held_audio = None;
                self.last_video_wake = None;
                true
            }
        }
    }

    /// Drops ring events no viewer can be served any more: a viewer that reaches a frame more
    /// than `max_lag_ms` behind the newest one skips to the newest keyframe (see
    /// [`Self::read`]), and one that fell out of the ring does the same, so older frames only
    /// cost memory (at 30 fps + audio the 2048-event ring holds ~25 s).
    /// The newest keyframe and everything after it always stay.
    fn trim_lagged(&mut self) {
        let Some(key_seq) = self.last_key_seq else { return };
        let horizon = self.newest_dts.saturating_sub(self.max_lag_ms);
        let old = |e: &HubEvent| matches!(e, HubEvent::Frame(f) if f.dts() < horizon);
        // frames before a timestamp jump are not compared with the new timeline (see `is_lagging`)
        while self.first_seq < key_seq && self.first_seq >= self.timeline_seq {
            let drop = match self.ring.front() {
                Some(HubEvent::Frame(_)) => self.ring.front().is_some_and(old),
                // metadata or config in front: dropped with the old frames that follow it
                Some(_) => self.ring.iter().find(|e| matches!(e, HubEvent::Frame(_))).is_some_and(old),
                None => false,
            };
            if !drop {
                break;
            }
            self.pop_front();
        }
    }

    /// A new viewer: metadata and codec config first, then the GOP cache, then live events.
    pub(crate) fn cursor(&self) -> Cursor {
        let mut pending = VecDeque::with_capacity(self.gop.len() + 3);
        if let Some(m) = &self.metadata {
            pending.push_back(HubEvent::Metadata(m.clone()));
        }
        let has_config = self.codec.video.is_some() || self.codec.audio.is_some();
        if has_config {
            pending.push_back(HubEvent::Config(self.codec.clone()));
        }
        pending.extend(self.gop.events().cloned());
        if self.ended {
            pending.push_back(HubEvent::EndOfStream);
        }
        Cursor {
            pending,
            next: self.end_seq(),
            skips: 0,
            config_generation: has_config.then_some(self.codec.generation),
            need_keyframe: false,
            done: false,
        }
    }

    /// Appends up to `max` of the ring's events for `cursor` to `out` (after what
    /// [`Cursor::take_pending`] gave); skips a lagging viewer to the latest keyframe first,
    /// and evicts it when it kept lagging.
    pub(crate) fn read(&self, cursor: &mut Cursor, out: &mut Vec<HubEvent>, max: usize) -> Result<Read, Evicted> {
        let start = out.len();
        let mut read = Read::default();
        if cursor.done || max == 0 {
            return Ok(read);
        }
        let end = self.end_seq();
        if self.is_lagging(cursor) {
            cursor.skips += 1;
            read.skipped = true;
            if cursor.skips > self.max_lag_skips {
                cursor.done = true;
                return Err(Evicted);
            }
            let latest_key = self.ring.iter().rposition(|e| matches!(e, HubEvent::Frame(f) if f.is_keyframe()));
            // Never back: with a GOP longer than the lag limit the latest keyframe
            // may be behind `next`; then the viewer resumes at the next keyframe.
            cursor.next = latest_key.map_or(end, |i| self.first_seq + i as u64).max(cursor.next);
            cursor.need_keyframe = self.codec.video.is_some();
            if cursor.config_generation != Some(self.codec.generation) {
                let ev = HubEvent::Config(self.codec.clone());
                cursor.observe(&ev);
                out.push(ev);
            }
        }
        while cursor.next < end && out.len() - start < max {
            let idx = (cursor.next - self.first_seq) as usize;
            cursor.next += 1;
            let Some(ev) = self.ring.get(idx) else { break };
            if cursor.need_keyframe && matches!(ev, HubEvent::Frame(f) if f.is_video() && !f.is_keyframe()) {
                continue;
            }
            cursor.observe(ev);
            out.push(ev.clone());
            if cursor.done {
                break;
            }
        }
        if cursor.next >= end {
            cursor.skips = 0;
        }
        read.added = out.len() > start;
        Ok(read)
    }

    fn is_lagging(&self, cursor: &Cursor) -> bool {
        if cursor.next < self.first_seq {
            return true;
        }
        if cursor.next < self.timeline_seq {
            // The viewer is still before a timestamp jump: the media-time
            // distance to live says nothing; the ring bound still applies.
            return false;
        }
        let idx = (cursor.next - self.first_seq) as usize;
        match self.ring.get(idx) {
            Some(HubEvent::Frame(f)) => self.newest_dts.saturating_sub(f.dts()) > self.max_lag_ms,
            _ => false,
        }
    }
}

/// Where one viewer is: what it still gets from its start (metadata, config, GOP) and its
/// position in the ring.
#[derive(Debug)]
pub(crate) struct Cursor {
    pending: VecDeque<HubEvent>,
    next: u64,
    skips: u32,
    config_generation: Option<u32>,
    need_keyframe: bool,
    done: bool,
}

impl Cursor {
    /// Whether the viewer received `EndOfStream` (or was evicted).
    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the events of the viewer's start are all delivered.
    pub(crate) fn pending_is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Appends up to `max` events of the viewer's start to `out` (they need no lock).
    pub(crate) fn take_pending(&mut self, out: &mut Vec<HubEvent>, max: usize) {
        let start = out.len();
        while out.len() - start < max {
            let Some(ev) = self.pending.pop_front() else { break };
            self.observe(&ev);
            out.push(ev);
        }
        // the start (a GOP: a few hundred events) is delivered once; its buffer is not kept
        // for the viewer's whole life
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
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
}

#[cfg(test)]
mod tests;
