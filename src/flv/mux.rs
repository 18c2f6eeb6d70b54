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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{demux_video, Demuxed};
    use crate::media::Frame;
    use bytes::Bytes;

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
