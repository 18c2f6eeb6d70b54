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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmenterConfig {
    /// Wanted segment duration; segments are cut at the first keyframe at or past it.
    pub target_duration_ms: u64,
    /// Bound on the audio duration carried by one PES.
    pub max_audio_pes_ms: u64,
    /// A segment is cut before the frame that would make it larger than this.
    pub max_segment_bytes: usize,
}

impl Default for SegmenterConfig {
    fn default() -> Self {
        Self { target_duration_ms: 2_000, max_audio_pes_ms: 100, max_segment_bytes: 16 * 1024 * 1024 }
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
}

#[derive(Debug)]
struct OpenSegment {
    first_dts: i64,
    /// Estimated end of the media in the segment (last timestamp + frame duration).
    end: i64,
    wall_clock_ms: i64,
    discontinuity: bool,
    independent: bool,
}

#[derive(Debug)]
pub struct Segmenter {
    config: SegmenterConfig,
    mux: TsMuxer,
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
    last_audio_pts: Option<i64>,
    emitted_any: bool,
    /// Segments cut at the byte bound so far.
    byte_limited_cuts: u64,
}

impl Segmenter {
    pub fn new(config: SegmenterConfig, first_sequence: u64) -> Self {
        let target_secs = config.target_duration_ms.div_ceil(1000).max(1);
        Self {
            mux: TsMuxer::new(config.max_audio_pes_ms),
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
            last_audio_pts: None,
            emitted_any: false,
            byte_limited_cuts: 0,
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
        self.codec = Some(c.clone());
        Ok(())
    }

    fn on_frame(&mut self, f: &Frame, wall_clock_ms: i64) -> Result<(), MuxError> {
        let Some(codec) = &self.codec else {
            tracing::trace!("hls: frame before any codec configuration dropped");
            return Ok(());
        };
        let has_video = codec.video.is_some();
        let audio_frame_ms = codec.audio.as_ref().map_or(21, |c| (1_024_000 / i64::from(c.sample_rate.max(1))).max(1));
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
                let held = self.mux.segment_len() + self.mux.pending_audio_len();
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

        let open = self.open.as_mut().expect("segment open");
        match f {
            Frame::Video(v) => {
                if let Some(prev) = self.last_video_dts {
                    let step = v.dts - prev;
                    if (1..1000).contains(&step) {
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
        let Some(open) = self.open.take() else { return };
        let data = self.mux.finish_segment();
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
        });
        self.next_sequence += 1;
        self.emitted_any = true;
    }
}

/// Same codec parameters (the `generation` counter is ignored).
fn same_parameters(a: &CodecConfig, b: &CodecConfig) -> bool {
    let video = match (&a.video, &b.video) {
        (None, None) => true,
        (Some(x), Some(y)) => x.record == y.record,
        _ => false,
    };
    let audio = match (&a.audio, &b.audio) {
        (None, None) => true,
        (Some(x), Some(y)) => x.raw == y.raw,
        _ => false,
    };
    video && audio
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::testutil::*;
    use crate::hls::ts::{PID_AUDIO, PID_VIDEO, STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264};
    use crate::media::VideoFrame;

    const WALL0: i64 = 1_700_000_000_000;

    /// Runs events through a segmenter; wall clock = WALL0 + media time.
    fn run(seg: &mut Segmenter, events: &[Event]) -> Vec<Segment> {
        let mut out = Vec::new();
        for ev in events {
            let wall = match ev {
                Event::Frame(f) => WALL0 + f.dts(),
                _ => WALL0,
            };
            out.extend(seg.push(ev, wall).unwrap());
        }
        out.extend(seg.flush());
        out
    }

    fn events(config: CodecConfig, frames: Vec<Frame>) -> Vec<Event> {
        std::iter::once(Event::Config(config)).chain(frames.into_iter().map(Event::Frame)).collect()
    }

    fn rounded_secs(ms: u64) -> u64 {
        (ms + 500) / 1000
    }

    /// Every segment starts with PAT, PMT, then an IDR access unit carrying a PCR.
    fn assert_starts_with_idr(seg: &Segment) {
        let ts = parse_ts(&seg.data);
        let first = &ts.pes[0];
        assert_eq!(first.stream_id, 0xe0, "segment {} starts with video", seg.sequence);
        assert!(ts.packets[first.first_packet].random_access);
        assert!(ts.packets[first.first_packet].pcr.is_some());
        assert_eq!(&annexb_types(&first.payload)[..4], &[9, 7, 8, 5]);
    }

    /// 30 fps video with B-frames (cts pattern), keyframe every `gop` frames, plus audio.
    fn av_bframes(n: usize, gop: usize) -> Vec<Frame> {
        let mut frames: Vec<Frame> = (0..n)
            .map(|i| {
                let dts = (i as i64 * 100) / 3;
                let cts = [0, 100, 33, 33][i % 4];
                Frame::Video(video_frame(dts, cts, i % gop == 0))
            })
            .collect();
        frames.extend(audio_frames(0, (n as i64 * 100 / 3 * 44_100 / 1024 / 1000) as usize));
        frames.sort_by_key(|f| (f.dts(), !f.is_video()));
        frames
    }

    #[test]
    fn frozen_timestamps_are_cut_at_the_byte_bound() {
        // one keyframe, then 2,000 frames whose timestamps stand still: by media time the
        // segment never ends; by bytes it is cut before it passes max_segment_bytes
        let max = 64 * 1024;
        let mut s = Segmenter::new(SegmenterConfig { max_segment_bytes: max, ..SegmenterConfig::default() }, 0);
        let mut frames = vec![Frame::Video(video_frame(0, 0, true))];
        frames.extend((0..2000).map(|_| Frame::Video(video_frame(33, 0, false))));
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        assert!(segs.len() > 10, "{} segments", segs.len());
        assert_eq!(s.byte_limited_cuts(), segs.len() as u64 - 1, "all but the flushed one cut at the bound");
        for seg in &segs {
            assert!(seg.data.len() <= max, "segment {} has {} bytes", seg.sequence, seg.data.len());
            assert_eq!(seg.data.len() % 188, 0);
        }
        assert!(segs[0].independent && !segs[1].independent, "a cut at a non-key frame is marked");
        assert!(segs[..segs.len() - 1].iter().all(|s| s.byte_limited));
        // an ordinary stream never reaches the bound
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
        assert_eq!(s.byte_limited_cuts(), 0);
        assert!(segs.iter().all(|s| !s.byte_limited));
    }

    #[test]
    fn cuts_exactly_at_keyframes_with_b_frames() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
        assert_eq!(s.target_duration_secs(), 2);
        assert_eq!(segs.len(), 5);
        for (i, seg) in segs.iter().enumerate() {
            assert_eq!(seg.sequence, i as u64);
            assert_eq!(seg.first_dts_ms, i as i64 * 2000);
            assert_eq!(seg.wall_clock_ms, WALL0 + i as i64 * 2000);
            assert!(seg.independent && !seg.discontinuity);
            assert_starts_with_idr(seg);
            let ts = parse_ts(&seg.data);
            // Only the first PES in the segment is a keyframe at the GOP start... and
            // keyframes inside the segment are at 1 s (GOP 30 frames).
            let video: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xe0).collect();
            assert_eq!(video.len(), 60);
        }
        assert!(segs[..4].iter().all(|s| s.duration_ms == 2000));
        assert!((1999..=2001).contains(&segs[4].duration_ms), "flushed segment: last dts + one frame");
    }

    #[test]
    fn leading_non_keyframes_and_audio_before_first_keyframe_are_dropped() {
        let mut frames = av_bframes(120, 30);
        // Drop the first keyframe: the stream starts mid-GOP.
        frames.retain(|f| !(f.is_keyframe() && f.dts() == 0));
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, true), frames));
        assert_eq!(segs[0].first_dts_ms, 1000);
        assert_starts_with_idr(&segs[0]);
        let ts = parse_ts(&segs[0].data);
        let first_audio = ts.pes.iter().find(|p| p.stream_id == 0xc0).unwrap();
        assert!(first_audio.pts >= crate::hls::ts::ms_to_90k(1000) as u64);
    }

    #[test]
    fn gop_longer_than_target_sets_a_fixed_target_from_the_first_gop() {
        // 2.4 s GOP (72 frames at 30 fps), configured target 2 s.
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(
            &mut s,
            &events(codec_config(true, false), av_bframes(72 * 5, 72).into_iter().filter(Frame::is_video).collect()),
        );
        assert_eq!(s.target_duration_secs(), 3);
        assert_eq!(segs.len(), 5);
        for seg in &segs {
            assert!((2399..=2400).contains(&seg.duration_ms));
            assert!(rounded_secs(seg.duration_ms) <= 3);
            assert_starts_with_idr(seg);
        }
    }

    #[test]
    fn gop_equal_to_target_with_jitter_keeps_target() {
        // keyframes every 2001 ms
        let frames: Vec<Frame> = (0..10).map(|i| Frame::Video(video_frame(i * 2001, 0, true))).collect();
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        assert_eq!(s.target_duration_secs(), 2);
        assert!(segs[..segs.len() - 1].iter().all(|s| s.duration_ms == 2001));
    }

    #[test]
    fn short_gop_that_does_not_divide_target_cuts_early() {
        // 1.5 s GOP, target 2 s: waiting for 3 s would exceed the target.
        let frames: Vec<Frame> = (0..300).map(|i| Frame::Video(video_frame(i * 30, 0, i % 50 == 0))).collect();
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        assert_eq!(s.target_duration_secs(), 2);
        // The first keyframe interval is only known at the second keyframe (1.5 s),
        // so the early cut applies from there on.
        assert!(
            segs[..segs.len() - 1].iter().all(|s| s.duration_ms == 1500),
            "{:?}",
            segs.iter().map(|s| s.duration_ms).collect::<Vec<_>>()
        );
        assert!(segs.iter().all(|s| rounded_secs(s.duration_ms) <= 2));
    }

    #[test]
    fn target_stays_fixed_when_gop_grows_and_cuts_stay_on_keyframes() {
        // 2 s GOPs, then 4 s GOPs.
        let mut frames = Vec::new();
        for i in 0..300i64 {
            let dts = i * 40;
            let key = if dts < 6000 { dts % 2000 == 0 } else { dts % 4000 == 0 };
            frames.push(Frame::Video(video_frame(dts, 0, key)));
        }
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        assert_eq!(s.target_duration_secs(), 2);
        for seg in &segs {
            assert_starts_with_idr(seg);
            assert!(seg.independent);
        }
        assert!(segs.iter().any(|s| s.duration_ms == 4000), "overlong segment kept whole, not cut mid-GOP");
    }

    #[test]
    fn locked_target_is_not_changed_by_first_gop() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        s.lock_target_duration(6);
        let segs = run(
            &mut s,
            &events(codec_config(true, false), av_bframes(300, 90).into_iter().filter(Frame::is_video).collect()),
        );
        assert_eq!(s.target_duration_secs(), 6);
        assert_eq!(segs[0].duration_ms, 3000);
    }

    #[test]
    fn no_keyframes_for_too_long_forces_a_non_independent_cut() {
        let mut frames = vec![Frame::Video(video_frame(0, 0, true))];
        frames.extend((1..800).map(|i| Frame::Video(video_frame(i * 40, 0, false))));
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        assert_eq!(segs[0].duration_ms, 20_000);
        assert!(segs[0].independent);
        assert!(!segs[1].independent);
    }

    #[test]
    fn audio_only_cuts_by_time() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let segs = run(&mut s, &events(codec_config(false, true), audio_frames(0, 44_100 * 9 / 1024)));
        assert_eq!(s.target_duration_secs(), 2);
        assert_eq!(segs.len(), 5);
        for seg in &segs[..4] {
            assert!((2000..2030).contains(&seg.duration_ms), "{}", seg.duration_ms);
            let ts = parse_ts(&seg.data);
            assert_eq!(ts.pmt.as_ref().unwrap().streams, vec![(STREAM_TYPE_AAC_ADTS, PID_AUDIO)]);
            assert!(ts.packets.iter().all(|p| p.pid != PID_VIDEO));
            assert!(ts.packets[2].pcr.is_some());
        }
        let total: u64 = segs.iter().map(|s| s.duration_ms).sum();
        assert!((8970..9030).contains(&total), "{total}");
    }

    #[test]
    fn video_only_declares_only_video() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let frames = av_bframes(120, 30).into_iter().filter(Frame::is_video).collect();
        let segs = run(&mut s, &events(codec_config(true, false), frames));
        for seg in &segs {
            let ts = parse_ts(&seg.data);
            assert_eq!(ts.pmt.as_ref().unwrap().streams, vec![(STREAM_TYPE_H264, PID_VIDEO)]);
        }
    }

    #[test]
    fn sequences_continue_from_first_sequence_and_cc_runs_on() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 41);
        let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
        let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
        assert_eq!(seqs, vec![41, 42, 43, 44, 45]);
        assert_eq!(s.next_sequence(), 46);
        let all: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
        check_continuity(&parse_ts(&all).packets);
    }

    #[test]
    fn config_change_starts_discontinuity_and_repeat_does_nothing() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let cfg = codec_config(true, true);
        let mut evs = events(cfg.clone(), av_bframes(60, 30));
        // Same parameters, new generation: ignored.
        evs.insert(20, Event::Config(CodecConfig { generation: 2, ..cfg.clone() }));
        let mut out = run_no_flush(&mut s, &evs);
        assert!(out.is_empty(), "repeat config must not cut");
        // New audio config (48 kHz): cut + discontinuity; next segment waits for a keyframe.
        let mut changed = cfg.clone();
        changed.audio =
            Some(std::sync::Arc::new(crate::media::AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap()));
        changed.generation = 3;
        out.extend(s.push(&Event::Config(changed), WALL0).unwrap());
        assert_eq!(out.len(), 1);
        assert!(!out[0].discontinuity);
        assert!((1990..=2010).contains(&out[0].duration_ms), "{}", out[0].duration_ms);
        // Non-key frame dropped, keyframe opens the discontinuous segment.
        assert!(s.push(&Event::Frame(Frame::Video(video_frame(2000, 0, false))), WALL0).unwrap().is_none());
        s.push(&Event::Frame(Frame::Video(video_frame(2033, 0, true))), WALL0).unwrap();
        let seg = s.flush().unwrap();
        assert!(seg.discontinuity);
        assert_eq!(seg.first_dts_ms, 2033);
        assert_eq!(seg.sequence, 1);
    }

    fn run_no_flush(seg: &mut Segmenter, events: &[Event]) -> Vec<Segment> {
        events.iter().filter_map(|ev| seg.push(ev, WALL0).unwrap()).collect()
    }

    #[test]
    fn discontinuity_event_and_timestamp_jumps() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        let mut evs = events(codec_config(true, false), vec![]);
        let vf = |dts: i64, key: bool| Event::Frame(Frame::Video(video_frame(dts, 0, key)));
        evs.extend((0..15).map(|i| vf(i * 40, i == 0)));
        evs.push(Event::Discontinuity);
        evs.extend((0..15).map(|i| vf(i * 40, i == 0))); // timeline restarts at 0
        evs.extend((0..15).map(|i| vf(100_000 + i * 40, i % 5 == 0))); // forward jump, keyframe
        evs.extend((0..15).map(|i| vf(50_000 + i * 40, i == 3))); // backward jump, waits for keyframe
        let segs = run(&mut s, &evs);
        let summary: Vec<(u64, bool, i64)> =
            segs.iter().map(|s| (s.sequence, s.discontinuity, s.first_dts_ms)).collect();
        assert_eq!(summary, vec![(0, false, 0), (1, true, 0), (2, true, 100_000), (3, true, 50_120)]);
        for seg in &segs {
            assert_starts_with_idr(seg);
        }
    }

    #[test]
    fn mark_discontinuity_closes_and_flags_next() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 7);
        s.push(&Event::Config(codec_config(true, false)), WALL0).unwrap();
        s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0).unwrap();
        s.mark_discontinuity();
        let first = s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0 + 5).unwrap().unwrap();
        assert_eq!((first.sequence, first.discontinuity), (7, false));
        let second = s.flush().unwrap();
        assert_eq!((second.sequence, second.discontinuity, second.wall_clock_ms), (8, true, WALL0 + 5));
    }

    #[test]
    fn bad_frame_is_an_error_and_does_not_break_the_segment() {
        let mut s = Segmenter::new(SegmenterConfig::default(), 0);
        s.push(&Event::Config(codec_config(true, false)), WALL0).unwrap();
        s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0).unwrap();
        let bad = VideoFrame { dts: 2000, cts: 0, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 50, 0x65]) };
        assert!(s.push(&Event::Frame(Frame::Video(bad)), WALL0).is_err());
        let audio = Frame::Audio(audio_frame(40));
        assert!(matches!(s.push(&Event::Frame(audio), WALL0), Err(MuxError::NoAudioConfig)));
        let seg = s.push(&Event::Frame(Frame::Video(video_frame(2040, 0, true))), WALL0).unwrap().unwrap();
        assert_eq!(seg.duration_ms, 2040);
        assert_eq!(parse_ts(&seg.data).pes.len(), 1);
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::hls::testutil::*;

    /// A small deterministic A/V segment (30 fps video with B-frame offsets,
    /// AAC LC 44.1 kHz). Checked by structure here; to inspect it with ffprobe,
    /// run with `LIVEGATE_GOLDEN_TS=/tmp/golden.ts` and
    /// `ffprobe -show_packets -show_streams /tmp/golden.ts`.
    #[test]
    fn golden_av_segment() {
        let mut frames: Vec<Frame> = (0..45)
            .map(|i| {
                let dts = (i as i64 * 100) / 3;
                Frame::Video(video_frame(dts, [0, 100, 33, 33][i % 4], i % 30 == 0))
            })
            .collect();
        frames.extend(audio_frames(0, 64));
        frames.sort_by_key(|f| (f.dts(), !f.is_video()));
        let mut s = Segmenter::new(SegmenterConfig { target_duration_ms: 1000, ..SegmenterConfig::default() }, 0);
        s.push(&Event::Config(codec_config(true, true)), 0).unwrap();
        let mut segs: Vec<Segment> =
            frames.iter().filter_map(|f| s.push(&Event::Frame(f.clone()), 0).unwrap()).collect();
        segs.extend(s.flush());
        assert_eq!(segs.len(), 2);
        let seg = &segs[0];
        assert_eq!(seg.duration_ms, 1000);
        if let Ok(path) = std::env::var("LIVEGATE_GOLDEN_TS") {
            std::fs::write(path, &seg.data).unwrap();
        }
        let ts = parse_ts(&seg.data);
        check_continuity(&ts.packets);
        let video: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xe0).collect();
        let audio: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xc0).collect();
        assert_eq!(video.len(), 30);
        let adts_frames: usize = audio.iter().map(|p| split_adts(&p.payload).len()).sum();
        assert_eq!(adts_frames, 44, "audio frames with pts in [0, 1000)");
        assert_eq!(seg.data.len() % 188, 0);
    }
}

/// Manual check with real encoder output (not run by default):
/// ```text
/// ffmpeg -f lavfi -i testsrc=size=320x240:rate=30 -t 3 -c:v libx264 -bf 0 -g 30 -x264-params aud=1 -f h264 /tmp/real.h264
/// ffmpeg -f lavfi -i sine=frequency=440:sample_rate=44100 -t 3 -c:a aac -ac 2 -f adts /tmp/real.aac
/// cargo test --lib real_encoder_segments -- --ignored
/// ffprobe -show_packets /tmp/real-0.ts   # and ffmpeg -i /tmp/real-0.ts -f null -
/// ```
#[cfg(test)]
#[test]
#[ignore = "needs /tmp/real.h264 and /tmp/real.aac from ffmpeg"]
fn real_encoder_segments() {
    use std::sync::Arc;

    use crate::media::{AacConfig, AudioFrame, AvcConfig, VideoFrame};

    let h264 = std::fs::read("/tmp/real.h264").unwrap();
    let mut nals: Vec<&[u8]> = Vec::new();
    let mut starts = Vec::new();
    for i in 0..h264.len().saturating_sub(3) {
        if h264[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
        }
    }
    for (k, &st) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(h264.len(), |n| n - 3);
        while end > st && h264[end - 1] == 0 {
            end -= 1;
        }
        nals.push(&h264[st..end]);
    }
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).unwrap();
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).unwrap();
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let video_cfg = Arc::new(AvcConfig::parse(Bytes::from(avcc)).unwrap());
    let mut frames: Vec<Frame> = Vec::new();
    let mut au: Vec<u8> = Vec::new();
    let mut key = false;
    let push_au = |au: &mut Vec<u8>, key: &mut bool, frames: &mut Vec<Frame>| {
        if !au.is_empty() {
            let n = frames.iter().filter(|f| f.is_video()).count() as i64;
            let data = Bytes::from(std::mem::take(au));
            frames.push(Frame::Video(VideoFrame { dts: n * 100 / 3, cts: 0, keyframe: *key, data }));
            *key = false;
        }
    };
    for n in &nals {
        match n[0] & 0x1f {
            9 => push_au(&mut au, &mut key, &mut frames),
            7 | 8 => {}
            t => {
                key |= t == 5;
                au.extend_from_slice(&(n.len() as u32).to_be_bytes());
                au.extend_from_slice(n);
            }
        }
    }
    push_au(&mut au, &mut key, &mut frames);
    let aac = std::fs::read("/tmp/real.aac").unwrap();
    let asc = [((aac[2] >> 6) + 1) << 3 | ((aac[2] >> 3) & 0x07), (aac[2] & 0x07) << 7 | (aac[3] >> 6) << 3];
    let audio_cfg = Arc::new(AacConfig::parse(Bytes::copy_from_slice(&asc)).unwrap());
    let (mut i, mut j) = (0, 0i64);
    while i + 7 <= aac.len() {
        let len = (usize::from(aac[i + 3] & 3) << 11) | (usize::from(aac[i + 4]) << 3) | usize::from(aac[i + 5] >> 5);
        let pts = j * 1_024_000 / i64::from(audio_cfg.sample_rate);
        frames.push(Frame::Audio(AudioFrame { pts, data: Bytes::copy_from_slice(&aac[i + 7..i + len]) }));
        i += len;
        j += 1;
    }
    frames.sort_by_key(|f| (f.dts(), !f.is_video()));
    let config = CodecConfig { video: Some(video_cfg), audio: Some(audio_cfg), generation: 1 };
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    s.push(&Event::Config(config), 0).unwrap();
    let mut segs: Vec<Segment> = frames.iter().filter_map(|f| s.push(&Event::Frame(f.clone()), 0).unwrap()).collect();
    segs.extend(s.flush());
    for seg in &segs {
        std::fs::write(format!("/tmp/real-{}.ts", seg.sequence), &seg.data).unwrap();
    }
    assert_eq!(segs.len(), 2);
}
