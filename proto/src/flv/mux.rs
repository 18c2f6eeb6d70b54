//! `media` → FLV bytes: the file header, tag headers and the small tag-body
//! headers that precede a shared payload. Callers write header and payload as
//! separate buffers (vectored), so payloads are never copied per viewer.

use crate::media::{AacConfig, AudioFrame, AvcConfig, VideoFrame};

pub const TAG_HEADER_LEN: usize = 11;
pub const PREV_TAG_SIZE_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    Audio = 8,
    Video = 9,
    Script = 18,
}

/// The 9-byte FLV header followed by PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// An 11-byte tag header. `timestamp` is the low 32 bits of the ms timeline
/// (FLV stores 24 bits plus an 8-bit extension, so it wraps like RTMP).
pub fn tag_header(tag_type: TagType, data_size: usize, timestamp: i64) -> [u8; TAG_HEADER_LEN] {
    let ts = timestamp as u32;
    let size = (data_size as u32).min(0x00ff_ffff);
    [
        tag_type as u8,
        (size >> 16) as u8,
        (size >> 8) as u8,
        size as u8,
        (ts >> 16) as u8,
        (ts >> 8) as u8,
        ts as u8,
        (ts >> 24) as u8,
        0,
        0,
        0,
    ]
}

/// The 5-byte AVC video tag-body header for a coded frame.
pub fn video_tag_header(frame: &VideoFrame) -> [u8; 5] {
    let cts = frame.cts as u32;
    [if frame.keyframe { 0x17 } else { 0x27 }, 1, (cts >> 16) as u8, (cts >> 8) as u8, cts as u8]
}

/// The 2-byte AAC audio tag-body header for a raw frame.
pub fn audio_tag_header(_frame: &AudioFrame) -> [u8; 2] {
    // AAC always signals 44 kHz, 16-bit, stereo here; the real values are in the AudioSpecificConfig.
    [0xaf, 1]
}

/// The full video tag body of the AVC sequence header.
pub fn video_config_body(cfg: &AvcConfig) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + cfg.record.len());
    v.extend_from_slice(&[0x17, 0, 0, 0, 0]);
    v.extend_from_slice(&cfg.record);
    v
}

/// The full audio tag body of the AAC sequence header.
pub fn audio_config_body(cfg: &AacConfig) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + cfg.raw.len());
    v.extend_from_slice(&[0xaf, 0]);
    v.extend_from_slice(&cfg.raw);
    v
}

/// One FLV tag body as a small codec header and a shared payload: what HTTP-FLV writes
/// after its tag header and RTMP play sends as one message. Built from a
/// [`media::Event`](crate::media::Event) by [`tag_bodies`] without copying or allocating:
/// sequence-header bodies are the 5- or 2-byte header and the configuration record the
/// stream already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagBody {
    pub tag_type: TagType,
    /// Milliseconds on the stream's 64-bit timeline.
    pub timestamp: i64,
    header: [u8; 5],
    header_len: u8,
    pub payload: bytes::Bytes,
}

impl TagBody {
    fn new(tag_type: TagType, timestamp: i64, header: &[u8], payload: bytes::Bytes) -> Self {
        let mut h = [0u8; 5];
        h[..header.len()].copy_from_slice(header);
        Self { tag_type, timestamp, header: h, header_len: header.len() as u8, payload }
    }

    /// The script-data (`onMetaData`) tag body of `metadata`.
    pub fn script(metadata: bytes::Bytes, timestamp: i64) -> Self {
        Self::new(TagType::Script, timestamp, &[], metadata)
    }

    /// The codec header that precedes the payload in the tag body.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// The codec header (as an array and its length) and the payload, taken apart.
    pub fn into_parts(self) -> ([u8; 5], usize, bytes::Bytes) {
        (self.header, usize::from(self.header_len), self.payload)
    }

    /// Length of the whole tag body.
    pub fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tag bodies of one event, in order: the sequence headers of a codec configuration
/// (stamped `config_ts`, the time of the last frame), a frame, or metadata; nothing for
/// the other events. The one mapping from events to FLV, shared by HTTP-FLV and RTMP play.
pub fn tag_bodies(ev: &crate::media::Event, config_ts: i64) -> impl Iterator<Item = TagBody> {
    use crate::media::{Event, Frame};
    let (a, b) = match ev {
        Event::Metadata(m) => (Some(TagBody::script(m.clone(), config_ts)), None),
        Event::Config(cfg) => (
            cfg.video.as_ref().map(|v| TagBody::new(TagType::Video, config_ts, &[0x17, 0, 0, 0, 0], v.record.clone())),
            cfg.audio.as_ref().map(|a| TagBody::new(TagType::Audio, config_ts, &[0xaf, 0], a.raw.clone())),
        ),
        Event::Frame(Frame::Video(v)) => {
            (Some(TagBody::new(TagType::Video, v.dts, &video_tag_header(v), v.data.clone())), None)
        }
        Event::Frame(Frame::Audio(a)) => {
            (Some(TagBody::new(TagType::Audio, a.pts, &audio_tag_header(a), a.data.clone())), None)
        }
        Event::Discontinuity | Event::EndOfStream => (None, None),
    };
    a.into_iter().chain(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{demux_video, Demuxed};
    use crate::media::Frame;
    use bytes::Bytes;

    #[test]
    fn tag_bodies_equal_the_full_bodies_and_share_the_payload() {
        use crate::media::h264::tests::AVCC_320X240;
        use crate::media::{CodecConfig, Event};
        use std::sync::Arc;
        let avc = Arc::new(AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap());
        let aac = Arc::new(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap());
        let cfg = CodecConfig { video: Some(avc.clone()), audio: Some(aac.clone()), generation: 1 };
        let bodies: Vec<TagBody> = tag_bodies(&Event::Config(cfg), 7).collect();
        assert_eq!(bodies.len(), 2);
        let whole = |b: &TagBody| [b.header(), &b.payload[..]].concat();
        assert_eq!((bodies[0].tag_type, bodies[0].timestamp), (TagType::Video, 7));
        assert_eq!(whole(&bodies[0]), video_config_body(&avc));
        assert_eq!(bodies[0].payload.as_ptr(), avc.record.as_ptr(), "the record is shared, not copied");
        assert_eq!(whole(&bodies[1]), audio_config_body(&aac));
        let frame = VideoFrame { dts: 40, cts: 80, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 1, 0x65]) };
        let b: Vec<_> = tag_bodies(&Event::Frame(Frame::Video(frame.clone())), 0).collect();
        assert_eq!((b[0].tag_type, b[0].timestamp, b[0].len()), (TagType::Video, 40, 10));
        assert_eq!(b[0].header(), &video_tag_header(&frame));
        assert_eq!(tag_bodies(&Event::EndOfStream, 0).count(), 0);
    }

    #[test]
    fn tag_header_extended_timestamp_and_size() {
        let h = tag_header(TagType::Video, 0x01_0203, 0x1234_5678);
        assert_eq!(h, [9, 0x01, 0x02, 0x03, 0x34, 0x56, 0x78, 0x12, 0, 0, 0]);
        // timestamps past 2^32 ms wrap like the RTMP clock
        let h = tag_header(TagType::Audio, 1, (1i64 << 32) + 5);
        assert_eq!(&h[4..8], &[0, 0, 5, 0]);
    }

    #[test]
    fn video_header_round_trips_negative_cts() {
        let frame = VideoFrame { dts: 10, cts: -40, keyframe: false, data: Bytes::from_static(&[0, 0, 0, 1, 1]) };
        let mut body = video_tag_header(&frame).to_vec();
        body.extend_from_slice(&frame.data);
        let Demuxed::Frame(Frame::Video(back)) = demux_video(10, Bytes::from(body)).unwrap() else { panic!() };
        assert_eq!(back, frame);
    }

    #[test]
    fn file_header_flags() {
        assert_eq!(file_header(true, true)[4], 5);
        assert_eq!(file_header(false, true)[4], 1);
        assert_eq!(file_header(true, false)[4], 4);
    }
}
