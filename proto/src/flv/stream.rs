//! A publisher's tag stream → hub events. Unwraps the 32-bit timestamps (once,
//! here), demuxes tag bodies, and announces codec configuration just before
//! the first frame that follows a change, so viewers see the complete set of
//! tracks (encoders send the video and audio sequence headers as two separate
//! messages). Large timestamp jumps become `Discontinuity`. Sans-IO.

use std::sync::Arc;

use bytes::Bytes;

use super::demux::{demux_audio, demux_video, Demuxed, FlvError};
use crate::media::Event;
use crate::media::{AacConfig, AvcConfig, CodecConfig, Frame, Unwrapper};

/// A forward or backward jump of the timeline larger than this is a discontinuity.
pub const MAX_TIMESTAMP_JUMP_MS: i64 = 10_000;

use crate::media::MediaKind;

/// What `push` did besides emitting events, for the caller to log.
#[derive(Debug, PartialEq, Eq)]
pub enum Note {
    VideoConfig(Arc<AvcConfig>),
    AudioConfig(Arc<AacConfig>),
    /// A frame arrived before its track's sequence header and was dropped.
    FrameBeforeConfig,
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
}

impl TagDemuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Demuxes one audio or video tag body with its 32-bit RTMP/FLV timestamp,
    /// appending hub events to `out`.
    pub fn push(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        body: Bytes,
        out: &mut Vec<Event>,
    ) -> Result<Option<Note>, FlvError> {
        let ts = self.clock.unwrap(timestamp);
        let demuxed = match kind {
            MediaKind::Video => demux_video(ts, body)?,
            MediaKind::Audio => demux_audio(ts, body)?,
        };
        Ok(match demuxed {
            Demuxed::VideoConfig(v) => {
                if self.config.video.as_deref() == Some(&v) {
                    return Ok(None);
                }
                let v = Arc::new(v);
                self.config.video = Some(v.clone());
                self.config_dirty = true;
                Some(Note::VideoConfig(v))
            }
            Demuxed::AudioConfig(a) => {
                if self.config.audio.as_deref() == Some(&a) {
                    return Ok(None);
                }
                let a = Arc::new(a);
                self.config.audio = Some(a.clone());
                self.config_dirty = true;
                Some(Note::AudioConfig(a))
            }
            Demuxed::Frame(frame) => self.frame(frame, out),
            Demuxed::Skip => None,
        })
    }

    fn frame(&mut self, frame: Frame, out: &mut Vec<Event>) -> Option<Note> {
        let has_config = match &frame {
            Frame::Video(_) => self.config.video.is_some(),
            Frame::Audio(_) => self.config.audio.is_some(),
        };
        if !has_config {
            return Some(Note::FrameBeforeConfig);
        }
        if self.config_dirty {
            self.config_dirty = false;
            self.config.generation += 1;
            out.push(Event::Config(self.config.clone()));
        }
        let dts = frame.dts();
        let mut note = None;
        if let Some(last) = self.last_dts {
            if (dts - last).abs() > MAX_TIMESTAMP_JUMP_MS {
                out.push(Event::Discontinuity);
                note = Some(Note::Jump { from: last, to: dts });
            }
        }
        self.last_dts = Some(dts);
        out.push(Event::Frame(frame));
        note
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::AVCC_320X240;

    fn video_seq() -> Bytes {
        let mut v = vec![0x17, 0, 0, 0, 0];
        v.extend_from_slice(AVCC_320X240);
        Bytes::from(v)
    }

    #[test]
    fn config_is_announced_once_before_the_first_frame_with_both_tracks() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        assert!(matches!(d.push(MediaKind::Video, 0, video_seq(), &mut out), Ok(Some(Note::VideoConfig(_)))));
        assert!(matches!(
            d.push(MediaKind::Audio, 0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10]), &mut out),
            Ok(Some(Note::AudioConfig(_)))
        ));
        assert!(out.is_empty());
        d.push(MediaKind::Video, 0, Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]), &mut out).unwrap();
        d.push(MediaKind::Audio, 10, Bytes::from_static(&[0xaf, 1, 0x21]), &mut out).unwrap();
        assert!(matches!(&out[0], Event::Config(c) if c.video.is_some() && c.audio.is_some() && c.generation == 1));
        assert!(matches!(out[1], Event::Frame(Frame::Video(_))));
        assert!(matches!(out[2], Event::Frame(Frame::Audio(_))));
        // a repeated sequence header changes nothing
        assert_eq!(d.push(MediaKind::Video, 20, video_seq(), &mut out), Ok(None));
        assert_eq!(out.len(), 3);
    }

    #[test]
    fn frames_before_their_sequence_header_are_dropped_and_jumps_marked() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]);
        assert_eq!(d.push(MediaKind::Video, 0, key.clone(), &mut out), Ok(Some(Note::FrameBeforeConfig)));
        assert!(out.is_empty());
        d.push(MediaKind::Video, 0, video_seq(), &mut out).unwrap();
        d.push(MediaKind::Video, 40, key.clone(), &mut out).unwrap();
        let jump = d.push(MediaKind::Video, 40 + 3_600_000, key, &mut out).unwrap();
        assert_eq!(jump, Some(Note::Jump { from: 40, to: 3_600_040 }));
        assert!(matches!(out[out.len() - 2], Event::Discontinuity));
    }

    #[test]
    fn timestamps_are_unwrapped_across_2_pow_32() {
        let mut d = TagDemuxer::new();
        let mut out = Vec::new();
        d.push(MediaKind::Video, u32::MAX - 40, video_seq(), &mut out).unwrap();
        for ts in [u32::MAX - 40, u32::MAX - 7, 26, 59] {
            d.push(MediaKind::Video, ts, Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]), &mut out).unwrap();
        }
        let dts: Vec<i64> =
            out.iter().filter_map(|e| if let Event::Frame(f) = e { Some(f.dts()) } else { None }).collect();
        let base = i64::from(u32::MAX);
        assert_eq!(dts, vec![base - 40, base - 7, base + 27, base + 60]);
        assert!(!out.contains(&Event::Discontinuity));
    }
}
