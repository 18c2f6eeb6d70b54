//! HLS segmenter: decides where segments start and end, and drives the TS
//! muxer. Hub events and the wall-clock time of their arrival go in; finished
//! segments come out. Sans-IO: no clocks, no tasks, no storage.
//!
//! # Cutting
//! - Streams with video start at a keyframe (leading non-key video and audio
//!   are dropped) and are cut only at keyframes, once the segment (DTS of its
//!   first frame to DTS of the cutting keyframe) reaches the configured
//!   target. It is also cut *early* at a keyframe when waiting for the next
//!   one (predicted from the last keyframe interval) would push the segment
//!   past the target duration: a 1.5 s GOP with a 2 s target gives 1.5 s
//!   segments, not 3 s ones.
//! - Audio-only streams are cut by time at the first frame at or past the target.
//!
//! # Target duration policy
//! `EXT-X-TARGETDURATION` must never change and every segment's rounded
//! duration must stay ≤ it. Until the first segment closes the target is
//! `ceil(config.target_duration_ms / 1 s)`; when it closes, the target
//! becomes `max(that, ceil((first_duration - 100 ms) / 1 s))` and is fixed
//! for the life of the segmenter (100 ms forgives timestamp jitter on a GOP
//! equal to the target; anything longer gets a whole second of headroom, so a
//! 2.4 s GOP gets a 3 s target and survives GOP jitter up to 3.499 s).
//! [`Segmenter::lock_target_duration`] fixes it up front (a republish keeps
//! the playlist's target). If the encoder's GOP later grows past the target,
//! the segment is still cut only at a keyframe (a cut elsewhere would break
//! rule 3, "every segment starts with an IDR") and a warning is logged:
//! hls.js tolerates an overlong segment; Apple's validator flags it. Only a
//! stream without keyframes for `max(4 × target, 20 s)` is cut at a non-key
//! frame (memory bound); that segment is marked `independent: false`.
//!
//! # Byte bound
//! Media time is the publisher's to choose (timestamps that stand still never
//! reach a target), so a segment is also cut before the frame that would take
//! it past [`SegmenterConfig::max_segment_bytes`]: at that frame, keyframe or
//! not (`independent` tells which). [`Segment::byte_limited`] marks such cuts.
//!
//! # Discontinuities
//! A codec configuration whose parameters differ (SPS/PPS, AudioSpecificConfig,
//! or the track set), a `Event::Discontinuity`, a per-track timestamp jump
//! (backwards by more than 1 s or forwards by more than 10 s) and
//! [`Segmenter::mark_discontinuity`] end the current segment; the next one
//! starts at a keyframe and carries `discontinuity: true`. A repeated
//! configuration with the same parameters is ignored.

use bytes::Bytes;

use super::fmp4::Fmp4Muxer;
use super::ts::{MuxError, TsMuxer};
use crate::media::Event;
use crate::media::{CodecConfig, Frame};

/// A per-track timestamp step backwards by more than this is a discontinuity.
const JUMP_BACK_MS: i64 = 1_000;
/// A per-track timestamp step forwards by more than this is a discontinuity.
const JUMP_FORWARD_MS: i64 = 10_000;
/// Slack for timestamp jitter when deriving the target from the first segment.
const TARGET_JITTER_MS: u64 = 100;
/// Lower bound of the no-keyframe safety cut.
const MIN_FORCED_CUT_MS: i64 = 20_000;

/// The container segments are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Container {
    /// MPEG-TS (`.ts`): H.264/AAC for every HLS player, old set-top boxes and TVs included.
    #[default]
    MpegTs,
    /// Fragmented MP4 (`.m4s` with an initialization segment for `EXT-X-MAP`).
    Fmp4,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    pub container: Container,
    /// fMP4 only: cut each segment into parts (Low-Latency HLS) of at most this duration
    /// plus 1 ms (millisecond timestamps round whole frames up to it).
    pub part_target_ms: Option<u64>,
    /// Wanted segment duration; segments are cut at the first keyframe at or past it.
    pub target_duration_ms: u64,
    /// Bound on the audio duration carried by one PES.
    pub max_audio_pes_ms: u64,
    /// A segment is cut before the frame that would make it larger than this.
    pub max_segment_bytes: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self {
            container: Container::MpegTs,
            part_target_ms: None,
            target_duration_ms: 2_000,
            max_audio_pes_ms: 100,
            max_segment_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub sequence: u64,
    pub duration_ms: u64,
    pub data: Bytes,
    /// The playlist puts `EXT-X-DISCONTINUITY` before this segment.
    pub discontinuity: bool,
    /// DTS (ms, media timeline) of the segment's first frame.
    pub first_dts_ms: i64,
    /// Unix time in ms at which the first frame was received (`EXT-X-PROGRAM-DATE-TIME`).
    pub wall_clock_ms: i64,
    /// Starts with a keyframe (always, except after the no-keyframe safety cut or a cut at
    /// the byte bound).
    pub independent: bool,
    /// Ended at the byte bound (`max_segment_bytes`) rather than at a keyframe or by time.
    pub byte_limited: bool,
    /// fMP4: the initialization segment this segment needs (`EXT-X-MAP`), numbered by the
    /// codec configuration generation that made it. `None` for MPEG-TS.
    pub init: Option<InitSegment>,
}

/// An fMP4 initialization segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitSegment {
    /// Changes whenever the codec configuration does (the `CodecConfig` generation).
    pub id: u32,
    pub data: Bytes,
}

/// A part of a segment (Low-Latency HLS): one `moof` + `mdat`; a segment's parts, in
/// order, are its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The media sequence number of the segment it belongs to.
    pub sequence: u64,
    /// Its index in the segment, from 0.
    pub index: u32,
    pub duration_ms: u64,
    /// Starts with a keyframe (`INDEPENDENT=YES`).
    pub independent: bool,
    pub data: Bytes,
    /// The segment's first part: it carries the segment's discontinuity and init segment.
    pub discontinuity: bool,
    pub init: Option<InitSegment>,
    /// Unix ms at which the segment's first frame was received.
    pub wall_clock_ms: i64,
    /// Unix ms at which the part's last frame was received (the part is finished when the
    /// next frame arrives: the delay until it is listed starts here).
    pub last_frame_wall_ms: i64,
}

/// The muxer a segmenter drives: the same calls for both containers.
#[derive(Debug)]
enum Muxer {
    Ts(Box<TsMuxer>),
    Fmp4(Fmp4Muxer),
}

impl Muxer {
    fn set_config(&mut self, c: &CodecConfig) -> Result<(), MuxError> {
        match self {
            Muxer::Ts(m) => m.set_config(c),
            Muxer::Fmp4(m) => m.set_config(c),
        }
    }

    fn reset_timing(&mut self) {
        match self {
            Muxer::Ts(m) => m.reset_timing(),
            Muxer::Fmp4(m) => m.reset_timing(),
        }
    }

    fn start_segment(&mut self) {
        match self {
            Muxer::Ts(m) => m.start_segment(),
            Muxer::Fmp4(m) => m.start_segment(),
        }
    }

    fn finish_segment(&mut self, end_dts: Option<i64>) -> Bytes {
        match self {
            Muxer::Ts(m) => m.finish_segment(),
            Muxer::Fmp4(m) => m.finish_segment(end_dts),
        }
    }

    /// Bytes held for the open segment (written or waiting to be).
    fn held_len(&self) -> usize {
        match self {
            Muxer::Ts(m) => m.segment_len() + m.pending_audio_len(),
            Muxer::Fmp4(m) => m.segment_len(),
        }
    }

    fn segment_len(&self) -> usize {
        match self {
            Muxer::Ts(m) => m.segment_len(),
            Muxer::Fmp4(m) => m.segment_len(),
        }
    }

    fn prepare_video(&mut self, v: &crate::media::VideoFrame) -> Result<(), MuxError> {
        match self {
            Muxer::Ts(m) => m.prepare_video(v),
            Muxer::Fmp4(m) => m.prepare_video(v),
        }
    }

    fn prepared_video_len(&self) -> usize {
        match self {
            Muxer::Ts(m) => m.prepared_video_len(),
            Muxer::Fmp4(m) => m.prepared_video_len(),
        }
    }

    fn commit_video(&mut self, v: &crate::media::VideoFrame) {
        match self {
            Muxer::Ts(m) => m.commit_video(v),
            Muxer::Fmp4(m) => m.commit_video(v),
        }
    }

    fn check_audio(&self, a: &crate::media::AudioFrame) -> Result<(), MuxError> {
        match self {
            Muxer::Ts(m) => m.check_audio(a),
            Muxer::Fmp4(m) => m.check_audio(a),
        }
    }

    fn write_audio(&mut self, a: &crate::media::AudioFrame) -> Result<(), MuxError> {
        match self {
            Muxer::Ts(m) => m.write_audio(a),
            Muxer::Fmp4(m) => m.write_audio(a),
        }
    }

    /// The initialization segment of the current configuration (fMP4 only).
    fn init(&self) -> Option<&Bytes> {
        match self {
            Muxer::Ts(_) => None,
            Muxer::Fmp4(m) => m.init_segment(),
        }
    }
}

#[derive(Debug)]
struct OpenSegment {
    first_dts: i64,
    /// Estimated end of the media in the segment (last timestamp + frame duration).
    end: i64,
    wall_clock_ms: i64,
    discontinuity: bool,
    independent: bool,
    /// Parts: the finished ones' bytes, where the open one starts, whether it starts at a
    /// keyframe.
    parts: Vec<Bytes>,
    parts_bytes: usize,
    part_start: i64,
    part_independent: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    mux: Muxer,
    codec: Option<CodecConfig>,
    next_sequence: u64,
    open: Option<OpenSegment>,
    /// A closed segment not yet handed out (returned by the next `push`/`flush`).
    ready: Option<Segment>,
    pending_discontinuity: bool,
    target_secs: u64,
    target_locked: bool,
    last_keyframe_dts: Option<i64>,
    last_gop_ms: Option<i64>,
    last_video_dts: Option<i64>,
    last_video_step: i64,
    /// The step before `last_video_step` (FLV's millisecond timestamps alternate, e.g.
    /// 33 and 34 ms at 30 fps; parts are planned with the smaller).
    prev_video_step: i64,
    last_audio_pts: Option<i64>,
    emitted_any: bool,
    /// Segments cut at the byte bound so far.
    byte_limited_cuts: u64,
    /// fMP4: the initialization segment of the current configuration.
    init: Option<InitSegment>,
    /// Finished parts not yet handed out ([`Segmenter::poll_part`]).
    parts: std::collections::VecDeque<Part>,
    /// Unix ms at which the last frame written was received.
    last_frame_wall: i64,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig, first_sequence: u64) -> Self {
        let target_secs = config.target_duration_ms.div_ceil(1000).max(1);
        Self {
            mux: match config.container {
                Container::MpegTs => Muxer::Ts(Box::new(TsMuxer::new(config.max_audio_pes_ms))),
                Container::Fmp4 => Muxer::Fmp4(Fmp4Muxer::new()),
            },
            config,
            codec: None,
            next_sequence: first_sequence,
            open: None,
            ready: None,
            pending_discontinuity: false,
            target_secs,
            target_locked: false,
            last_keyframe_dts: None,
            last_gop_ms: None,
            last_video_dts: None,
            last_video_step: 33,
            prev_video_step: 33,
            last_audio_pts: None,
            emitted_any: false,
            byte_limited_cuts: 0,
            init: None,
            parts: std::collections::VecDeque::new(),
            last_frame_wall: 0,
        }
    }

    /// Segments cut at the byte bound (`max_segment_bytes`) so far.
    pub fn byte_limited_cuts(&self) -> u64 {
        self.byte_limited_cuts
    }

    /// `EXT-X-TARGETDURATION` in seconds. Provisional until the first segment
    /// is returned (or [`lock_target_duration`](Self::lock_target_duration)),
    /// fixed afterwards.
    pub fn target_duration_secs(&self) -> u64 {
        self.target_secs
    }

    /// Fixes the target duration now (e.g. a republish continuing a playlist
    /// whose target is already published). Ignored once fixed.
    pub fn lock_target_duration(&mut self, secs: u64) {
        if !self.target_locked {
            self.target_secs = secs.max(1);
            self.target_locked = true;
        }
    }

    /// Sequence number the next segment will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The next finished part (Low-Latency HLS), oldest first. Take them after every
    /// [`Self::push`] / [`Self::flush`], before the segment it returned: a segment's last
    /// part is finished with it.
    pub fn poll_part(&mut self) -> Option<Part> {
        self.parts.pop_front()
    }

    /// Where the open segment and its open part stand: (sequence, index of the open part),
    /// or `None` between segments. The part is what `EXT-X-PRELOAD-HINT` names.
    pub fn open_part(&self) -> Option<(u64, u32)> {
        let open = self.open.as_ref()?;
        Some((self.next_sequence, open.parts.len() as u32))
    }

    /// Feeds one hub event received at `wall_clock_ms` (unix ms). Returns a
    /// segment when one is finished. On error the event is dropped and the
    /// segmenter stays usable; a segment finished before the error is
    /// returned by the next call.
    pub fn push(&mut self, ev: &Event, wall_clock_ms: i64) -> Result<Option<Segment>, MuxError> {
        match ev {
            Event::Metadata(_) => {}
            Event::Config(c) => self.on_config(c)?,
            Event::Frame(f) => self.on_frame(f, wall_clock_ms)?,
            Event::Discontinuity => {
                self.close(None);
                if self.emitted_any {
                    self.restart_timeline();
                }
            }
            Event::EndOfStream => self.close(None),
        }
        Ok(self.ready.take())
    }

    /// End of stream: returns the partial segment, if any.
    pub fn flush(&mut self) -> Option<Segment> {
        self.close(None);
        self.ready.take()
    }

    /// The next segment carries a discontinuity (republish) and timing
    /// restarts. An open segment is closed; it is returned by the next
    /// `push` or `flush`.
    pub fn mark_discontinuity(&mut self) {
        self.close(None);
        self.restart_timeline();
    }

    fn restart_timeline(&mut self) {
        self.pending_discontinuity = true;
        self.mux.reset_timing();
        self.last_keyframe_dts = None;
        self.last_gop_ms = None;
        self.last_video_dts = None;
        self.last_audio_pts = None;
    }

    fn on_config(&mut self, c: &CodecConfig) -> Result<(), MuxError> {
        let changed = self.codec.as_ref().is_none_or(|old| !same_parameters(old, c));
        if !changed {
            return Ok(());
        }
        if self.codec.is_some() {
            self.close(None);
            if self.emitted_any {
                self.pending_discontinuity = true;
            }
        }
        self.mux.set_config(c)?;
        self.init = self.mux.init().map(|data| InitSegment { id: c.generation, data: data.clone() });
        self.codec = Some(c.clone());
        Ok(())
    }

    fn on_frame(&mut self, f: &Frame, wall_clock_ms: i64) -> Result<(), MuxError> {
        let Some(codec) = &self.codec else {
            tracing::trace!("hls: frame before any codec configuration dropped");
            return Ok(());
        };
        let has_video = codec.video.is_some();
        let audio_frame_ms = codec
            .audio
            .as_ref()
            .map_or(21, |c| (i64::from(c.nominal_frame_samples()) * 1000 / i64::from(c.sample_rate().max(1))).max(1));
        // Validate (and for video, convert) before any state changes, so a bad
        // frame cannot lose a segment that is being cut.
        match f {
            Frame::Video(v) => self.mux.prepare_video(v)?,
            Frame::Audio(a) => self.mux.check_audio(a)?,
        }
        let dts = f.dts();
        self.detect_jump(f);

        match &self.open {
            None => {
                if has_video && !f.is_keyframe() {
                    return Ok(()); // wait for a keyframe
                }
                self.open_segment(dts, wall_clock_ms, true);
            }
            Some(open) => {
                let elapsed = dts - open.first_dts;
                let forced_ms = (self.target_secs as i64 * 4000).max(MIN_FORCED_CUT_MS);
                if has_video && f.is_keyframe() {
                    if let Some(prev) = self.last_keyframe_dts {
                        self.last_gop_ms = Some(dts - prev);
                    }
                }
                let cut = if has_video {
                    f.is_keyframe() && self.should_cut_at_keyframe(elapsed)
                } else {
                    elapsed >= self.config.target_duration_ms as i64
                };
                // what this frame adds (TS packetizing adds ~2-5 % on top of the payload)
                let adds = match f {
                    Frame::Video(_) => self.mux.prepared_video_len(),
                    Frame::Audio(a) => a.data.len(),
                };
                let held = self.mux.held_len() + self.open.as_ref().map_or(0, |o| o.parts_bytes);
                let over = held + adds + adds / 16 + 1024 > self.config.max_segment_bytes;
                if cut {
                    self.close(Some(dts));
                    self.open_segment(dts, wall_clock_ms, true);
                } else if over && self.mux.segment_len() > 0 {
                    self.byte_limited_cuts += 1;
                    if self.byte_limited_cuts == 1 {
                        tracing::warn!(
                            max_segment_bytes = self.config.max_segment_bytes,
                            elapsed,
                            "hls: segment reached its byte bound before its duration; cutting here (logged once per stream)"
                        );
                    }
                    self.close_byte_limited(dts);
                    self.open_segment(dts, wall_clock_ms, f.is_keyframe());
                } else if elapsed >= forced_ms {
                    tracing::warn!(elapsed, "hls: no keyframe for too long; cutting at a non-key frame");
                    self.close(Some(dts));
                    self.open_segment(dts, wall_clock_ms, false);
                }
            }
        }
        if f.is_keyframe() {
            self.last_keyframe_dts = Some(dts);
        }
        self.maybe_cut_part(f, has_video, audio_frame_ms);

        self.last_frame_wall = wall_clock_ms;
        let Some(open) = self.open.as_mut() else { return Ok(()) };
        match f {
            Frame::Video(v) => {
                if let Some(prev) = self.last_video_dts {
                    let step = v.dts - prev;
                    if (1..1000).contains(&step) {
                        self.prev_video_step = self.last_video_step;
                        self.last_video_step = step;
                    }
                }
                self.last_video_dts = Some(v.dts);
                open.end = open.end.max(v.dts + self.last_video_step);
                self.mux.commit_video(v);
            }
            Frame::Audio(a) => {
                self.last_audio_pts = Some(a.pts);
                open.end = open.end.max(a.pts + audio_frame_ms);
                self.mux.write_audio(a)?;
            }
        }
        Ok(())
    }

    /// Low-Latency HLS: finishes the open part before `f` when `f` would take it past the
    /// part target (streams with video cut parts only before video frames).
    fn maybe_cut_part(&mut self, f: &Frame, has_video: bool, audio_frame_ms: i64) {
        let Some(target) = self.config.part_target_ms else { return };
        if has_video && !f.is_video() {
            return;
        }
        let step = if f.is_video() { self.last_video_step.min(self.prev_video_step) } else { audio_frame_ms };
        let Some(open) = self.open.as_ref() else { return };
        let dts = f.dts();
        // + 1: parts of whole frames reach the target only to the millisecond (10 frames at
        // 30 fps last 333 or 334 ms); the advertised part target is one more (see `llhls`)
        if self.mux.segment_len() == 0 || dts - open.part_start + step <= target as i64 + 1 {
            return;
        }
        self.finish_part(dts, f.is_keyframe());
    }

    /// Finishes the open part at `end` (the DTS of the frame that starts the next one).
    fn finish_part(&mut self, end: i64, next_independent: bool) {
        let Some(open) = self.open.as_mut() else { return };
        let data = self.mux.finish_segment(Some(end));
        if data.is_empty() {
            return;
        }
        let index = open.parts.len() as u32;
        self.parts.push_back(Part {
            sequence: self.next_sequence,
            index,
            duration_ms: u64::try_from(end - open.part_start).unwrap_or(0),
            independent: open.part_independent,
            data: data.clone(),
            discontinuity: open.discontinuity,
            init: self.init.clone(),
            wall_clock_ms: open.wall_clock_ms,
            last_frame_wall_ms: self.last_frame_wall,
        });
        open.parts_bytes += data.len();
        open.parts.push(data);
        open.part_start = end;
        open.part_independent = next_independent;
        self.mux.start_segment();
    }

    fn should_cut_at_keyframe(&self, elapsed: i64) -> bool {
        if elapsed >= self.config.target_duration_ms as i64 {
            return true;
        }
        // Early cut: the next keyframe is predicted too late for the target.
        let limit = self.target_secs as i64 * 1000 + 499;
        matches!(self.last_gop_ms, Some(gop) if elapsed > 0 && elapsed + gop > limit)
    }

    fn detect_jump(&mut self, f: &Frame) {
        let last = if f.is_video() { self.last_video_dts } else { self.last_audio_pts };
        let Some(last) = last else { return };
        let step = f.dts() - last;
        if !(-JUMP_BACK_MS..=JUMP_FORWARD_MS).contains(&step) {
            tracing::info!(step, "hls: timestamp jump; starting a new segment with a discontinuity");
            self.close(None);
            self.restart_timeline();
        }
    }

    fn open_segment(&mut self, dts: i64, wall_clock_ms: i64, independent: bool) {
        self.mux.start_segment();
        self.open = Some(OpenSegment {
            first_dts: dts,
            end: dts,
            wall_clock_ms,
            discontinuity: std::mem::take(&mut self.pending_discontinuity),
            independent,
            parts: Vec::new(),
            parts_bytes: 0,
            part_start: dts,
            part_independent: independent,
        });
    }

    fn close_byte_limited(&mut self, end_dts: i64) {
        self.close(Some(end_dts));
        if let Some(seg) = self.ready.as_mut() {
            seg.byte_limited = true;
        }
    }

    /// Closes the open segment (if any) into `ready`. `end_dts`: the DTS of
    /// the frame that starts the next segment, when cutting.
    fn close(&mut self, end_dts: Option<i64>) {
        if self.config.part_target_ms.is_some() {
            let end = end_dts.or(self.open.as_ref().map(|o| o.end));
            if let Some(end) = end {
                self.finish_part(end, true);
            }
        }
        let Some(open) = self.open.take() else { return };
        let data = if self.config.part_target_ms.is_some() && open.parts.len() == 1 {
            // one part (a segment cut at the byte bound before any part was due) is the segment
            open.parts[0].clone()
        } else if self.config.part_target_ms.is_some() {
            // the parts, in order, are the segment (one copy, at its exact size)
            let mut all = bytes::BytesMut::with_capacity(open.parts_bytes);
            open.parts.iter().for_each(|p| all.extend_from_slice(p));
            all.freeze()
        } else {
            self.mux.finish_segment(end_dts)
        };
        let end = end_dts.unwrap_or(open.end);
        let duration_ms = u64::try_from(end - open.first_dts).unwrap_or(0);
        if !self.target_locked {
            let from_first = duration_ms.saturating_sub(TARGET_JITTER_MS).div_ceil(1000);
            self.target_secs = self.target_secs.max(from_first);
            self.target_locked = true;
        }
        if (duration_ms + 500) / 1000 > self.target_secs {
            tracing::warn!(
                duration_ms,
                target_secs = self.target_secs,
                "hls: segment longer than the target duration (GOP grew); cut only at keyframes"
            );
        }
        debug_assert!(self.ready.is_none(), "two segments closed without being returned");
        self.ready = Some(Segment {
            sequence: self.next_sequence,
            duration_ms,
            data,
            discontinuity: open.discontinuity,
            first_dts_ms: open.first_dts,
            wall_clock_ms: open.wall_clock_ms,
            independent: open.independent,
            byte_limited: false,
            init: self.init.clone(),
        });
        self.next_sequence += 1;
        self.emitted_any = true;
    }
}

/// Same codec parameters (the `generation` counter is ignored).
fn same_parameters(a: &CodecConfig, b: &CodecConfig) -> bool {
    let video = match (&a.video, &b.video) {
        (None, None) => true,
        (Some(x), Some(y)) => x.codec() == y.codec() && x.record() == y.record(),
        _ => false,
    };
    let audio = match (&a.audio, &b.audio) {
        (None, None) => true,
        (Some(x), Some(y)) => x == y,
        _ => false,
    };
    video && audio
}

#[cfg(test)]
mod tests;
