//! FLV tag body → `Demuxed`.

use bytes::Bytes;
use thiserror::Error;

use crate::media::aac::AacError;
use crate::media::h264::H264Error;
use crate::media::{AacConfig, AudioFrame, AvcConfig, Frame, VideoFrame};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty tag body")]
    Empty,
    #[error("{kind} tag body of {len} bytes is shorter than its header")]
    Truncated { kind: &'static str, len: usize },
    #[error("unsupported {kind} codec id {id}")]
    UnsupportedCodec { kind: &'static str, id: u8 },
    #[error("unknown AVC packet type {0}")]
    BadAvcPacketType(u8),
    #[error("bad AVC sequence header: {0}")]
    AvcConfig(#[from] H264Error),
    #[error("bad AAC sequence header: {0}")]
    AacConfig(#[from] AacError),
}

/// What one tag body turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Demuxed {
    VideoConfig(AvcConfig),
    AudioConfig(AacConfig),
    Frame(Frame),
    /// Nothing to forward: an AVC end-of-sequence or a video info/command frame.
    Skip,
}

const CODEC_AVC: u8 = 7;
const SOUND_AAC: u8 = 10;

/// Demuxes a video tag body received at `dts` (ms, already unwrapped).
pub fn demux_video(dts: i64, body: Bytes) -> Result<Demuxed, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    if first & 0x80 != 0 {
        // Enhanced RTMP (HEVC/AV1/VP9 via FourCC): not carried by our outputs.
        return Err(FlvError::UnsupportedCodec { kind: "video", id: first & 0x0f });
    }
    let frame_type = first >> 4;
    let codec = first & 0x0f;
    if codec != CODEC_AVC {
        return Err(FlvError::UnsupportedCodec { kind: "video", id: codec });
    }
    if frame_type == 5 {
        return Ok(Demuxed::Skip);
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated { kind: "video", len: body.len() });
    }
    let raw_cts = (u32::from(body[2]) << 16) | (u32::from(body[3]) << 8) | u32::from(body[4]);
    // sign-extend the 24-bit composition time
    let cts = ((raw_cts << 8) as i32) >> 8;
    match body[1] {
        0 => Ok(Demuxed::VideoConfig(AvcConfig::parse(body.slice(5..))?)),
        1 => {
            if body.len() == 5 {
                return Ok(Demuxed::Skip);
            }
            Ok(Demuxed::Frame(Frame::Video(VideoFrame { dts, cts, keyframe: frame_type == 1, data: body.slice(5..) })))
        }
        2 => Ok(Demuxed::Skip),
        other => Err(FlvError::BadAvcPacketType(other)),
    }
}

/// Demuxes an audio tag body received at `pts` (ms, already unwrapped).
pub fn demux_audio(pts: i64, body: Bytes) -> Result<Demuxed, FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    let format = first >> 4;
    if format != SOUND_AAC {
        return Err(FlvError::UnsupportedCodec { kind: "audio", id: format });
    }
    if body.len() < 2 {
        return Err(FlvError::Truncated { kind: "audio", len: body.len() });
    }
    match body[1] {
        0 => Ok(Demuxed::AudioConfig(AacConfig::parse(body.slice(2..))?)),
        _ if body.len() == 2 => Ok(Demuxed::Skip),
        _ => Ok(Demuxed::Frame(Frame::Audio(AudioFrame { pts, data: body.slice(2..) }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::h264::tests::AVCC_320X240;

    #[test]
    fn video_sequence_header_and_frames_with_bframes() {
        let mut seq = vec![0x17, 0, 0, 0, 0];
        seq.extend_from_slice(AVCC_320X240);
        match demux_video(0, Bytes::from(seq)).unwrap() {
            Demuxed::VideoConfig(c) => assert_eq!((c.width, c.height), (320, 240)),
            other => panic!("{other:?}"),
        }
        // keyframe with cts +80 ms, then a B-frame with cts 0 and one with a negative cts
        let key = Bytes::from_static(&[0x17, 1, 0, 0, 80, 0, 0, 0, 1, 0x65]);
        let Demuxed::Frame(Frame::Video(v)) = demux_video(1000, key).unwrap() else { panic!() };
        assert_eq!((v.dts, v.cts, v.keyframe, v.pts()), (1000, 80, true, 1080));
        assert_eq!(&v.data[..], &[0, 0, 0, 1, 0x65]);
        let b = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x01]);
        let Demuxed::Frame(Frame::Video(v)) = demux_video(1040, b).unwrap() else { panic!() };
        assert_eq!((v.cts, v.keyframe), (-40, false));
    }

    #[test]
    fn audio_config_and_frames() {
        let Demuxed::AudioConfig(c) = demux_audio(0, Bytes::from_static(&[0xaf, 0, 0x12, 0x10])).unwrap() else {
            panic!()
        };
        assert_eq!(c.sample_rate, 44100);
        let Demuxed::Frame(Frame::Audio(a)) = demux_audio(23, Bytes::from_static(&[0xaf, 1, 0x21, 0x00])).unwrap()
        else {
            panic!()
        };
        assert_eq!((a.pts, &a.data[..]), (23, &[0x21, 0x00][..]));
    }

    #[test]
    fn hostile_bodies_are_errors_not_panics() {
        for body in [&[][..], &[0x17], &[0x17, 1, 0], &[0x17, 0, 0, 0, 0, 1], &[0x17, 9, 0, 0, 0], &[0x12, 1]] {
            assert!(demux_video(0, Bytes::copy_from_slice(body)).is_err(), "{body:?}");
        }
        for body in [&[][..], &[0xaf], &[0x2f, 1, 2], &[0xaf, 0, 0x12]] {
            assert!(demux_audio(0, Bytes::copy_from_slice(body)).is_err(), "{body:?}");
        }
        assert_eq!(demux_video(0, Bytes::from_static(&[0x57, 0])).unwrap(), Demuxed::Skip);
    }
}
