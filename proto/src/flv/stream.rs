//! A publisher's tag stream → hub events. Unwraps the 32-bit timestamps (once,
//! here), demuxes tag bodies, and announces codec configuration just before
//! the first frame that follows a change, so viewers see the complete set of
//! tracks (encoders send the video and audio sequence headers as two separate
//! messages). Large timestamp jumps become `Discontinuity`. Sans-IO.

use std::sync::Arc;

use bytes::Bytes;

use super::demux::{demux_audio, demux_video, Demuxed, FlvError, TrackDemuxed};
use crate::media::Event;
use crate::media::{AudioConfig, CodecConfig, Frame, Unwrapper, VideoConfig};

/// A forward or backward jump of the timeline larger than this is a discontinuity.
pub const MAX_TIMESTAMP_JUMP_MS: i64 = 10_000;

use crate::media::MediaKind;

/// What `push` did besides emitting events, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    VideoConfig(Arc<VideoConfig>),
    AudioConfig(Arc<AudioConfig>),
    /// A frame arrived before its track's sequence header and was dropped.
    FrameBeforeConfig,
    /// A frame's codec is not the one its track's sequence header named (a FourCC that
    /// switched without a new sequence start); it was dropped.
    CodecMismatch {
        kind: MediaKind,
        configured: &'static str,
        frame: &'static str,
    },
    /// A multitrack publish sent a track other than the one served (the first track
    /// with a sequence start); noted once per track.
    OtherTrack {
        kind: MediaKind,
        track: u8,
    },
    /// The timeline jumped from `from` to `to` ms.
    Jump {
        from: i64,
        to: i64,
    },
}

#[derive(Debug, Default)]
pub struct TagDemuxer {
    clock: Unwrapper,
    config: CodecConfig,
    config_dirty: bool,
    last_dts: Option<i64>,
    /// The track served per kind (video, audio): the first with a sequence start.
    served: [Option<u8>; 2],
    /// Other tracks already noted, per kind (a bit per track id).
    noted: [[u64; 4]; 2],
    /// Serves no video (an audio track's stream).
    no_video: bool,
    scratch: Vec<TrackDemuxed>,
}

impl TagDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// A demuxer that serves video track `video` of a multitrack publish and the audio
    /// track `publish` serves (the first with a sequence start), starting from the audio
    /// configuration already seen.
    pub fn for_track(video: u8, publish: &TagDemuxer) -> Self {
        let mut d = Self { served: [Some(video), publish.served[1]], ..Self::default() };
        if let Some(audio) = &publish.config.audio {
            d.config.audio = Some(audio.clone());
            d.config_dirty = true;
        }
        d
    }

    /// A demuxer that serves audio track `audio` of a multitrack publish, and no video.
    pub fn for_audio_track(audio: u8) -> Self {
        Self { served: [None, Some(audio)], no_video: true, ..Self::default() }
    }

    /// The configuration the served tracks have now.
    pub fn config(&self) -> &CodecConfig {
        &self.config
    }

    /// Demuxes one audio or video tag body with its 32-bit RTMP/FLV timestamp,
    /// appending hub events to `out` and what is worth logging to `notes`.
    pub fn push(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        body: Bytes,
        out: &mut Vec<Event>,
        notes: &mut Vec<Note>,
    ) -> Result<(), FlvError> {
        let mut items = std::mem::take(&mut self.scratch);
        items.clear();
        let r = self.demux(kind, timestamp, body, &mut items);
        if r.is_ok() {
            for (track, item) in items.drain(..) {
                if self.takes(kind, track, &item, notes) {
                    self.item(kind, item, out, notes);
                }
            }
        }
        items.clear();
        self.scratch = items;
        r
    }

    /// The first half of [`Self::push`], for a multitrack publish whose tracks several
    /// demuxers serve: unwraps the timestamp on this demuxer's clock and demuxes the body
    /// once into `items`, one per track it carries. Each demuxer then takes its tracks with
    /// [`Self::serve`] (this one first: it notes the tracks it does not serve).
    pub fn demux(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        body: Bytes,
        items: &mut Vec<TrackDemuxed>,
    ) -> Result<(), FlvError> {
        let ts = self.clock.unwrap(timestamp);
        match kind {
            MediaKind::Video => demux_video(ts, body, items),
            MediaKind::Audio => demux_audio(ts, body, items),
        }
    }

    /// The second half of [`Self::push`]: serves this demuxer's tracks of what
    /// [`Self::demux`] gave (those of a message that demuxed whole), appending hub events to
    /// `out` and notes to `notes`.
    pub fn serve(&mut self, kind: MediaKind, items: &[TrackDemuxed], out: &mut Vec<Event>, notes: &mut Vec<Note>) {
        for (track, item) in items {
            if self.takes(kind, *track, item, notes) {
                self.item(kind, item.clone(), out, notes);
            }
        }
    }

    /// Whether `item` of `track` is this demuxer's to serve; notes a multitrack publish's
    /// other tracks (once each).
    fn takes(&mut self, kind: MediaKind, track: u8, item: &Demuxed, notes: &mut Vec<Note>) -> bool {
        if matches!(item, Demuxed::Skip) || (self.no_video && kind == MediaKind::Video) {
            return false;
        }
        let k = usize::from(kind == MediaKind::Audio);
        let served = match self.served[k] {
            Some(t) => t,
            None if matches!(item, Demuxed::VideoConfig(_) | Demuxed::AudioConfig(_))
                || matches!(item, Demuxed::Audio(c, _) if c.self_describing()) =>
            {
                self.served[k] = Some(track);
                track
            }
            None => track,
        };
        if track != served {
            let bit = &mut self.noted[k][usize::from(track / 64)];
            if *bit & (1 << (track % 64)) == 0 {
                *bit |= 1 << (track % 64);
                notes.push(Note::OtherTrack { kind, track });
            }
            return false;
        }
        true
    }

    fn item(&mut self, kind: MediaKind, item: Demuxed, out: &mut Vec<Event>, notes: &mut Vec<Note>) {
        match item {
            Demuxed::VideoConfig(v) => {
                if self.config.video.as_deref() == Some(&v) {
                    return;
                }
                let v = Arc::new(v);
                self.config.video = Some(v.clone());
                self.config_dirty = true;
                notes.push(Note::VideoConfig(v));
            }
            Demuxed::AudioConfig(a) => {
                if self.config.audio.as_deref() == Some(&a) {
                    return;
                }
                let a = Arc::new(a);
                self.config.audio = Some(a.clone());
                self.config_dirty = true;
                notes.push(Note::AudioConfig(a));
            }
            Demuxed::VideoMetadata(m) => {
                if self.config.video_metadata.as_ref() != Some(&m) {
                    self.config.video_metadata = Some(m);
                    self.config_dirty = true;
                }
            }
            Demuxed::Video(codec, frame) => match self.config.video.as_deref().map(VideoConfig::codec) {
                None => notes.push(Note::FrameBeforeConfig),
                Some(c) if c != codec => {
                    notes.push(Note::CodecMismatch { kind, configured: c.name(), frame: codec.name() })
                }
                Some(_) => self.frame(Frame::Video(frame), out, notes),
            },
            Demuxed::Audio(codec, frame) => {
                let configured = self.config.audio.as_deref().map(AudioConfig::codec);
                if configured != Some(codec) && codec.self_describing() {
                    if let Some(a) = AudioConfig::from_frame(codec, &frame.data) {
                        let a = Arc::new(a);
                        self.config.audio = Some(a.clone());
                        self.config_dirty = true;
                        notes.push(Note::AudioConfig(a));
                        return self.frame(Frame::Audio(frame), out, notes);
                    }
                }
                match configured {
                    None => notes.push(Note::FrameBeforeConfig),
                    Some(c) if c != codec => {
                        notes.push(Note::CodecMismatch { kind, configured: c.name(), frame: codec.name() })
                    }
                    Some(_) => self.frame(Frame::Audio(frame), out, notes),
                }
            }
            Demuxed::Skip => {}
        }
    }

    fn frame(&mut self, frame: Frame, out: &mut Vec<Event>, notes: &mut Vec<Note>) {
        if self.config_dirty {
            if let (Frame::Video(v), Some(cfg)) = (&frame, &self.config.video) {
                // VP9 (and AV1 from a TS descriptor) learn their picture size here
                if v.keyframe && cfg.width() == 0 {
                    let mut c = VideoConfig::clone(cfg);
                    if c.fill_size_from_keyframe(&v.data) {
                        self.config.video = Some(Arc::new(c));
                    }
                }
            }
            self.config_dirty = false;
            self.config.generation += 1;
            out.push(Event::Config(self.config.clone()));
        }
        let dts = frame.dts();
        if let Some(last) = self.last_dts {
            if (dts - last).abs() > MAX_TIMESTAMP_JUMP_MS {
                out.push(Event::Discontinuity);
                notes.push(Note::Jump { from: last, to: dts });
            }
        }
        self.last_dts = Some(dts);
        out.push(Event::Frame(frame));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::AVCC_320X240;

    fn push(d: &mut TagDemuxer, kind: MediaKind, ts: u32, body: Bytes, out: &mut Vec<Event>) -> Vec<Note> {
        let mut notes = Vec::new();
        d.push(kind, ts, body, out, &mut notes).unwrap();
        notes
    }

    fn video_seq() -> Bytes {
        let mut v = vec![0x17, 0, 0, 0, 0];
        v.extend_from_slice(AVCC_320X240);
        Bytes::from(v)
    }

    #[test]
    fn config_is_announced_once_before_the_first_frame_with_both_tracks() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        assert!(matches!(&push(&mut d, MediaKind::Video, 0, video_seq(), &mut out)[..], [Note::VideoConfig(_)]));
        assert!(matches!(
            &push(&mut d, MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), &mut out)[..],
            [Note::AudioConfig(_)]
        ));
        assert!(out.is_empty());
        push(&mut d, MediaKind::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]), &mut out);
        push(&mut d, MediaKind::Audio, 10, Bytes::from_static(&[0xaf, 1, 0x21]), &mut out);
        assert!(matches!(&out[0], Event::Config(c) if c.video.is_some() && c.audio.is_some() && c.generation == 1));
        assert!(matches!(out[1], Event::Frame(Frame::Video(_))));
        assert!(matches!(out[2], Event::Frame(Frame::Audio(_))));
        // a repeated sequence header changes nothing
        assert_eq!(push(&mut d, MediaKind::Video, 20, video_seq(), &mut out), vec![]);
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn frames_before_their_sequence_header_are_dropped_and_jumps_marked() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert_eq!(push(&mut d, MediaKind::Video, 0, key.clone(), &mut out), vec![Note::FrameBeforeConfig]);
        assert!(out.is_empty());
        push(&mut d, MediaKind::Video, 0, video_seq(), &mut out);
        push(&mut d, MediaKind::Video, 40, key.clone(), &mut out);
        let jump = push(&mut d, MediaKind::Video, 40 + 3_600_000, key, &mut out);
        assert_eq!(jump, vec![Note::Jump { from: 40, to: 3_600_040 }]);
        assert!(matches!(out[out.len() - 2], Event::Discontinuity));
    }

    #[test]
    fn timestamps_are_unwrapped_across_2_pow_32() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        push(&mut d, MediaKind::Video, u32::MAX - 40, video_seq(), &mut out);
        for ts in [u32::MAX - 40, u32::MAX - 7, 26, 59] {
            push(&mut d, MediaKind::Video, ts, Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]), &mut out);
        }
        let dts: Vec<i64> =
            out.iter().filter_map(|e| if let Event::Frame(f) = e { Some(f.dts()) } else { None }).collect();
        let base = i64::from(u32::MAX);
        assert_eq!(dts, vec![base - 40, base - 7, base + 27, base + 60]);
        assert!(!out.contains(&Event::Discontinuity));
    }

    fn fixture(file: &'static [u8]) -> (Vec<Event>, Vec<Note>) {
        fixture_with(TagDemuxer::new(), file)
    }

    fn fixture_with(mut d: TagDemuxer, file: &'static [u8]) -> (Vec<Event>, Vec<Note>) {
        let tags = crate::flv::file::read_tags(&Bytes::from_static(file)).unwrap();
        let (mut out, mut notes) = (Vec::new(), Vec::new());
        for t in tags {
            let kind = match t.tag_type {
                8 => MediaKind::Audio,
                9 => MediaKind::Video,
                _ => continue,
            };
            d.push(kind, t.timestamp, t.body, &mut out, &mut notes).unwrap();
        }
        (out, notes)
    }

    #[test]
    fn a_multitrack_publish_serves_its_first_track_and_notes_the_other_once() {
        let (out, notes) = fixture(include_bytes!("../../../fixtures/ertmp/multi.flv"));
        let others: Vec<_> = notes.iter().filter(|n| matches!(n, Note::OtherTrack { .. })).collect();
        assert_eq!(others, vec![&Note::OtherTrack { kind: MediaKind::Video, track: 1 }]);
        let Some(Event::Config(c)) = out.first() else { panic!("{:?}", out.first()) };
        assert_eq!(c.video.as_ref().map(|v| v.width()), Some(320));
        assert!(!notes.contains(&Note::FrameBeforeConfig));
    }

    #[test]
    fn an_audio_track_demuxer_serves_that_track_and_no_video() {
        const FILE: &[u8] = include_bytes!("../../../fixtures/ertmp/multi_audio.flv");
        // the publish's own demuxer: video 0, the AAC track 0, and notes the other two
        let (out, notes) = fixture(FILE);
        let others: Vec<_> = notes.iter().filter(|n| matches!(n, Note::OtherTrack { .. })).collect();
        assert_eq!(
            others,
            vec![
                &Note::OtherTrack { kind: MediaKind::Video, track: 1 },
                &Note::OtherTrack { kind: MediaKind::Audio, track: 1 }
            ]
        );
        let Some(Event::Config(c)) = out.first() else { panic!("{:?}", out.first()) };
        assert_eq!(c.audio.as_ref().map(|a| a.codec_string()).as_deref(), Some("mp4a.40.2"));
        // audio track 1 (Opus, sent as a multitrack OneTrack message) alone
        let (out, notes) = fixture_with(TagDemuxer::for_audio_track(1), FILE);
        assert!(!notes.iter().any(|n| matches!(n, Note::FrameBeforeConfig | Note::VideoConfig(_))), "{notes:?}");
        let Some(Event::Config(c)) = out.first() else { panic!("{:?}", out.first()) };
        assert!(c.video.is_none());
        assert_eq!(c.audio.as_ref().map(|a| a.codec_string()).as_deref(), Some("opus"));
        let frames = out.iter().filter(|e| matches!(e, Event::Frame(_))).count();
        assert!(frames > 50, "{frames} Opus frames in 2 s");
        assert!(out.iter().all(|e| !matches!(e, Event::Frame(f) if f.is_video())));
    }

    #[test]
    fn self_describing_audio_and_vp9_sizes_are_learnt_from_frames() {
        let (out, notes) = fixture(include_bytes!("../../../fixtures/ertmp/h264_ac3.flv"));
        assert!(!notes.contains(&Note::FrameBeforeConfig), "{notes:?}");
        let configs: Vec<&CodecConfig> =
            out.iter().filter_map(|e| if let Event::Config(c) = e { Some(c) } else { None }).collect();
        assert!(configs.last().is_some_and(|c| c.audio.as_ref().is_some_and(|a| a.codec_string() == "ac-3")));
        let (out, _) = fixture(include_bytes!("../../../fixtures/ertmp/vp9_flac.flv"));
        let Some(Event::Config(c)) = out.first() else { panic!() };
        let v = c.video.as_ref().unwrap();
        assert_eq!((v.codec_string().as_str(), v.width(), v.height()), ("vp09.00.10.08", 160, 120));
        assert!(c.video_metadata.as_ref().is_some_and(|m| m.windows(9).any(|w| w == b"colorInfo")));
    }

    #[test]
    fn a_message_demuxed_once_serves_each_track_stream_its_tracks() {
        let mut main = TagDemuxer::new();
        let mut out = Vec::new();
        push(&mut main, MediaKind::Video, 0, video_seq(), &mut out);
        push(&mut main, MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), &mut out);
        // video track 1's stream, started once the publish's audio track (0) is known
        let mut track = TagDemuxer::for_track(1, &main);
        // one audio message with AAC frames on tracks 0 and 1, demuxed once
        let msg = Bytes::from_static(b"\x95\x11mp4a\x00\x00\x00\x02\x21\x00\x01\x00\x00\x02\x21\x01");
        let mut items = Vec::new();
        main.demux(MediaKind::Audio, 10, msg, &mut items).unwrap();
        assert_eq!(items.len(), 2);
        let (mut notes, mut main_out, mut track_out) = (Vec::new(), Vec::new(), Vec::new());
        main.serve(MediaKind::Audio, &items, &mut main_out, &mut notes);
        track.serve(MediaKind::Audio, &items, &mut track_out, &mut Vec::new());
        assert_eq!(
            notes,
            vec![Note::OtherTrack { kind: MediaKind::Audio, track: 1 }],
            "noted by the publish's demuxer"
        );
        let audio = |out: &[Event]| -> Vec<Vec<u8>> {
            out.iter()
                .filter_map(|e| match e {
                    Event::Frame(Frame::Audio(a)) => Some(a.data.to_vec()),
                    _ => None,
                })
                .collect()
        };
        // both carry audio track 0 only (the track stream took any audio track before)
        assert_eq!(audio(&main_out), vec![vec![0x21, 0x00]]);
        assert_eq!(audio(&track_out), vec![vec![0x21, 0x00]]);
        assert!(matches!(&track_out[0], Event::Config(c) if c.audio.is_some() && c.video.is_none()));
    }

    #[test]
    fn a_fourcc_switch_without_a_sequence_start_drops_the_frame() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        push(&mut d, MediaKind::Video, 0, video_seq(), &mut out);
        let notes = push(&mut d, MediaKind::Video, 40, Bytes::from_static(b"\x93av01\x12\x00"), &mut out);
        assert_eq!(notes, vec![Note::CodecMismatch { kind: MediaKind::Video, configured: "h264", frame: "av1" }]);
        assert!(out.is_empty());
    }
}
