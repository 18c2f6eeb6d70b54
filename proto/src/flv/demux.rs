//! FLV tag body → `Demuxed`: legacy FLV (H.264 codec id 7, HEVC codec id 12, AAC sound
//! format 10, MP3 sound format 2) and Enhanced RTMP v1/v2 (veovera/enhanced-rtmp):
//! `ExVideoTagHeader`/`ExAudioTagHeader` with a FourCC, their packet types, ModEx and
//! multitrack (OneTrack, ManyTracks, ManyTracksManyCodecs).

use bytes::Bytes;
use thiserror::Error;

use crate::media::aac::AacError;
use crate::media::av1::Av1Error;
use crate::media::flac::FlacError;
use crate::media::h264::H264Error;
use crate::media::hevc::HevcError;
use crate::media::opus::OpusError;
use crate::media::vp9::Vp9Error;
use crate::media::{
    AacConfig, AudioCodec, AudioConfig, AudioFrame, Av1Config, AvcConfig, FlacConfig, HevcConfig, OpusConfig,
    VideoCodec, VideoConfig, VideoFrame, Vp9Config,
};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("empty tag body")]
    Empty,
    #[error("{kind} tag body of {len} bytes is shorter than its header")]
    Truncated { kind: &'static str, len: usize },
    #[error("unsupported {kind} codec id {id}")]
    UnsupportedCodec { kind: &'static str, id: u8 },
    #[error("unsupported {kind} FourCC {fourcc:?}")]
    UnsupportedFourCc { kind: &'static str, fourcc: String },
    #[error("unknown AVC packet type {0}")]
    BadAvcPacketType(u8),
    #[error("unknown Enhanced RTMP {kind} packet type {ptype}")]
    BadPacketType { kind: &'static str, ptype: u8 },
    #[error("Enhanced RTMP {kind} ModEx chain longer than {MAX_MODEX}")]
    ModExLoop { kind: &'static str },
    #[error("Enhanced RTMP {kind} multitrack message nested in a multitrack message")]
    NestedMultitrack { kind: &'static str },
    #[error("Enhanced RTMP {kind} multitrack message with more than {MAX_TRACKS_PER_MESSAGE} tracks")]
    TooManyTracks { kind: &'static str },
    #[error("bad AVC sequence header: {0}")]
    AvcConfig(#[from] H264Error),
    #[error("bad HEVC sequence start: {0}")]
    HevcConfig(#[from] HevcError),
    #[error("bad AV1 sequence start: {0}")]
    Av1Config(#[from] Av1Error),
    #[error("bad VP9 sequence start: {0}")]
    Vp9Config(#[from] Vp9Error),
    #[error("bad AAC sequence header: {0}")]
    AacConfig(#[from] AacError),
    #[error("bad Opus sequence start: {0}")]
    OpusConfig(#[from] OpusError),
    #[error("bad FLAC sequence start: {0}")]
    FlacConfig(#[from] FlacError),
}

/// What one track's part of a tag body turns into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Demuxed {
    VideoConfig(VideoConfig),
    AudioConfig(AudioConfig),
    /// Enhanced RTMP video Metadata: an AMF0 body (`colorInfo`).
    VideoMetadata(Bytes),
    Video(VideoCodec, VideoFrame),
    Audio(AudioCodec, AudioFrame),
    /// Nothing to forward: an end of sequence, a command frame, a channel layout, the
    /// empty sequence start of a codec whose frames describe themselves.
    Skip,
}

/// One track's result: the track id (0 for single-track messages) and what it carried.
pub type TrackDemuxed = (u8, Demuxed);

/// ModEx entries one message may chain.
pub const MAX_MODEX: usize = 8;
/// Tracks one multitrack message may carry (the id is a byte, so 256 at most anyway).
pub const MAX_TRACKS_PER_MESSAGE: usize = 64;
/// Bytes of its message a track's payload may leave unused and still share the message's
/// allocation (a tag header, a short ModEx entry, a OneTrack header). A payload that leaves
/// more (a track of a multitrack message, a frame behind a long ModEx chain) is copied out:
/// a frame or configuration never keeps alive more than its own size and this, whatever
/// the message around it held, so the byte bounds that count payloads (ring, GOP cache,
/// HLS) are true.
pub const MAX_SHARED_OVERHEAD: usize = 64;

const CODEC_AVC: u8 = 7;
const CODEC_HEVC_LEGACY: u8 = 12;
const SOUND_MP3: u8 = 2;
const SOUND_MP3_8K: u8 = 14;
const SOUND_EX_HEADER: u8 = 9;
const SOUND_AAC: u8 = 10;

const VIDEO_SEQUENCE_START: u8 = 0;
const VIDEO_CODED_FRAMES: u8 = 1;
const VIDEO_SEQUENCE_END: u8 = 2;
const VIDEO_CODED_FRAMES_X: u8 = 3;
const VIDEO_METADATA: u8 = 4;
const VIDEO_MPEG2TS_SEQUENCE_START: u8 = 5;
const VIDEO_MULTITRACK: u8 = 6;
const PACKET_MODEX: u8 = 7;
const AUDIO_SEQUENCE_START: u8 = 0;
const AUDIO_CODED_FRAMES: u8 = 1;
const AUDIO_SEQUENCE_END: u8 = 2;
const AUDIO_MULTICHANNEL_CONFIG: u8 = 4;
const AUDIO_MULTITRACK: u8 = 5;
const FRAME_TYPE_COMMAND: u8 = 5;

const MULTITRACK_ONE_TRACK: u8 = 0;
const MULTITRACK_MANY_CODECS: u8 = 2;

/// `body[range]` as a payload of its own: a slice of `body` when it is nearly all of it,
/// otherwise a copy (see [`MAX_SHARED_OVERHEAD`]).
fn payload(body: &Bytes, range: std::ops::Range<usize>) -> Bytes {
    if body.len() - range.len() <= MAX_SHARED_OVERHEAD {
        body.slice(range)
    } else {
        Bytes::copy_from_slice(&body[range])
    }
}

fn take<'a>(body: &'a [u8], pos: &mut usize, n: usize, kind: &'static str) -> Result<&'a [u8], FlvError> {
    let s = body.get(*pos..*pos + n).ok_or(FlvError::Truncated { kind, len: body.len() })?;
    *pos += n;
    Ok(s)
}

/// Skips a ModEx chain (`packet_type` is ModEx on entry) and returns the packet type it
/// ends in. Only TimestampOffsetNano is defined, and it is below our millisecond clock.
fn skip_modex(body: &[u8], pos: &mut usize, kind: &'static str) -> Result<u8, FlvError> {
    for _ in 0..MAX_MODEX {
        let mut size = usize::from(take(body, pos, 1, kind)?[0]) + 1;
        if size == 256 {
            let s = take(body, pos, 2, kind)?;
            size = usize::from(u16::from_be_bytes([s[0], s[1]])) + 1;
        }
        take(body, pos, size, kind)?;
        let next = take(body, pos, 1, kind)?[0] & 0x0f;
        if next != PACKET_MODEX {
            return Ok(next);
        }
    }
    Err(FlvError::ModExLoop { kind })
}

/// The tracks of an enhanced body after its header byte (and ModEx): `(track, fourcc,
/// payload)` for a multitrack message, or the one FourCC-tagged payload.
fn tracks(
    body: &Bytes,
    mut pos: usize,
    multitrack: bool,
    kind: &'static str,
    mut each: impl FnMut(u8, &[u8], Bytes, u8) -> Result<(), FlvError>,
    packet_type: u8,
) -> Result<(), FlvError> {
    if !multitrack {
        let fourcc = take(body, &mut pos, 4, kind)?;
        return each(0, fourcc, payload(body, pos..body.len()), packet_type);
    }
    let b = take(body, &mut pos, 1, kind)?[0];
    let (mt_type, ptype) = (b >> 4, b & 0x0f);
    if ptype == VIDEO_MULTITRACK && kind == "video" || ptype == AUDIO_MULTITRACK && kind == "audio" {
        return Err(FlvError::NestedMultitrack { kind });
    }
    let mut fourcc = [0u8; 4];
    if mt_type != MULTITRACK_MANY_CODECS {
        fourcc.copy_from_slice(take(body, &mut pos, 4, kind)?);
    }
    let mut n = 0;
    while pos < body.len() {
        n += 1;
        if n > MAX_TRACKS_PER_MESSAGE {
            return Err(FlvError::TooManyTracks { kind });
        }
        if mt_type == MULTITRACK_MANY_CODECS {
            fourcc.copy_from_slice(take(body, &mut pos, 4, kind)?);
        }
        let track = take(body, &mut pos, 1, kind)?[0];
        if mt_type == MULTITRACK_ONE_TRACK {
            return each(track, &fourcc, payload(body, pos..body.len()), ptype);
        }
        let s = take(body, &mut pos, 3, kind)?;
        let size = (usize::from(s[0]) << 16) | (usize::from(s[1]) << 8) | usize::from(s[2]);
        take(body, &mut pos, size, kind)?;
        each(track, &fourcc, payload(body, pos - size..pos), ptype)?;
    }
    Ok(())
}

/// Whether a tag body is an Enhanced RTMP multitrack message (of `kind`).
pub fn is_multitrack(kind: crate::media::MediaKind, body: &[u8]) -> bool {
    match (kind, body.first()) {
        (crate::media::MediaKind::Video, Some(&b)) => b & 0x80 != 0 && b & 0x0f == VIDEO_MULTITRACK,
        (crate::media::MediaKind::Audio, Some(&b)) => b >> 4 == SOUND_EX_HEADER && b & 0x0f == AUDIO_MULTITRACK,
        _ => false,
    }
}

/// Demuxes a video tag body received at `dts` (ms, already unwrapped), appending one
/// result per track it carries.
pub fn demux_video(dts: i64, body: Bytes, out: &mut Vec<TrackDemuxed>) -> Result<(), FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    if first & 0x80 == 0 {
        out.push((0, legacy_video(dts, first, &body)?));
        return Ok(());
    }
    let frame_type = (first >> 4) & 0x07;
    let mut pos = 1;
    let mut ptype = first & 0x0f;
    if ptype == PACKET_MODEX {
        ptype = skip_modex(&body, &mut pos, "video")?;
    }
    if frame_type == FRAME_TYPE_COMMAND && ptype != VIDEO_METADATA {
        out.push((0, Demuxed::Skip)); // a VideoCommand (seek start/end): nothing to forward
        return Ok(());
    }
    let multitrack = ptype == VIDEO_MULTITRACK;
    let keyframe = frame_type == 1;
    tracks(
        &body,
        pos,
        multitrack,
        "video",
        |track, fourcc, data, ptype| {
            out.push((track, video_packet(dts, keyframe, fourcc, ptype, data)?));
            Ok(())
        },
        ptype,
    )
}

fn legacy_video(dts: i64, first: u8, body: &Bytes) -> Result<Demuxed, FlvError> {
    let frame_type = first >> 4;
    let codec = match first & 0x0f {
        CODEC_AVC => VideoCodec::Avc,
        CODEC_HEVC_LEGACY => VideoCodec::Hevc,
        id => return Err(FlvError::UnsupportedCodec { kind: "video", id }),
    };
    if frame_type == FRAME_TYPE_COMMAND {
        return Ok(Demuxed::Skip);
    }
    if body.len() < 5 {
        return Err(FlvError::Truncated { kind: "video", len: body.len() });
    }
    let cts = si24(&body[2..5]);
    match body[1] {
        0 => Ok(Demuxed::VideoConfig(match codec {
            VideoCodec::Hevc => VideoConfig::Hevc(HevcConfig::parse(body.slice(5..))?),
            _ => VideoConfig::Avc(AvcConfig::parse(body.slice(5..))?),
        })),
        1 if body.len() == 5 => Ok(Demuxed::Skip),
        1 => Ok(Demuxed::Video(codec, VideoFrame { dts, cts, keyframe: frame_type == 1, data: body.slice(5..) })),
        2 => Ok(Demuxed::Skip),
        other => Err(FlvError::BadAvcPacketType(other)),
    }
}

fn si24(b: &[u8]) -> i32 {
    let raw = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
    ((raw << 8) as i32) >> 8
}

fn fourcc_error(kind: &'static str, fourcc: &[u8]) -> FlvError {
    FlvError::UnsupportedFourCc { kind, fourcc: String::from_utf8_lossy(fourcc).into_owned() }
}

fn video_packet(dts: i64, keyframe: bool, fourcc: &[u8], ptype: u8, data: Bytes) -> Result<Demuxed, FlvError> {
    let codec = VideoCodec::from_fourcc(fourcc).ok_or_else(|| fourcc_error("video", fourcc))?;
    Ok(match ptype {
        VIDEO_SEQUENCE_START => Demuxed::VideoConfig(match codec {
            VideoCodec::Avc => VideoConfig::Avc(AvcConfig::parse(data)?),
            VideoCodec::Hevc => VideoConfig::Hevc(HevcConfig::parse(data)?),
            VideoCodec::Av1 => VideoConfig::Av1(Av1Config::parse(data)?),
            VideoCodec::Vp9 => VideoConfig::Vp9(Vp9Config::parse(data)?),
        }),
        VIDEO_MPEG2TS_SEQUENCE_START if codec == VideoCodec::Av1 => {
            Demuxed::VideoConfig(VideoConfig::Av1(Av1Config::from_ts_descriptor(&data)?))
        }
        VIDEO_CODED_FRAMES | VIDEO_CODED_FRAMES_X => {
            let with_cts = ptype == VIDEO_CODED_FRAMES && matches!(codec, VideoCodec::Avc | VideoCodec::Hevc);
            let (cts, payload) = if with_cts {
                if data.len() < 3 {
                    return Err(FlvError::Truncated { kind: "video", len: data.len() });
                }
                (si24(&data[..3]), data.slice(3..))
            } else {
                (0, data)
            };
            if payload.is_empty() {
                return Ok(Demuxed::Skip);
            }
            Demuxed::Video(codec, VideoFrame { dts, cts, keyframe, data: payload })
        }
        VIDEO_SEQUENCE_END => Demuxed::Skip,
        VIDEO_METADATA => Demuxed::VideoMetadata(data),
        other => return Err(FlvError::BadPacketType { kind: "video", ptype: other }),
    })
}

/// Demuxes an audio tag body received at `pts` (ms, already unwrapped), appending one
/// result per track it carries.
pub fn demux_audio(pts: i64, body: Bytes, out: &mut Vec<TrackDemuxed>) -> Result<(), FlvError> {
    let first = *body.first().ok_or(FlvError::Empty)?;
    let format = first >> 4;
    match format {
        SOUND_AAC => {
            if body.len() < 2 {
                return Err(FlvError::Truncated { kind: "audio", len: body.len() });
            }
            out.push((
                0,
                match body[1] {
                    0 => Demuxed::AudioConfig(AudioConfig::Aac(AacConfig::parse(body.slice(2..))?)),
                    _ if body.len() == 2 => Demuxed::Skip,
                    _ => Demuxed::Audio(AudioCodec::Aac, AudioFrame { pts, data: body.slice(2..) }),
                },
            ));
            Ok(())
        }
        SOUND_MP3 | SOUND_MP3_8K => {
            let frame = if body.len() > 1 {
                Demuxed::Audio(AudioCodec::Mp3, AudioFrame { pts, data: body.slice(1..) })
            } else {
                Demuxed::Skip
            };
            out.push((0, frame));
            Ok(())
        }
        SOUND_EX_HEADER => {
            let mut pos = 1;
            let mut ptype = first & 0x0f;
            if ptype == PACKET_MODEX {
                ptype = skip_modex(&body, &mut pos, "audio")?;
            }
            let multitrack = ptype == AUDIO_MULTITRACK;
            tracks(
                &body,
                pos,
                multitrack,
                "audio",
                |track, fourcc, data, ptype| {
                    out.push((track, audio_packet(pts, fourcc, ptype, data)?));
                    Ok(())
                },
                ptype,
            )
        }
        id => Err(FlvError::UnsupportedCodec { kind: "audio", id }),
    }
}

fn audio_packet(pts: i64, fourcc: &[u8], ptype: u8, data: Bytes) -> Result<Demuxed, FlvError> {
    let codec = AudioCodec::from_fourcc(fourcc).ok_or_else(|| fourcc_error("audio", fourcc))?;
    Ok(match ptype {
        AUDIO_SEQUENCE_START => match codec {
            AudioCodec::Aac => Demuxed::AudioConfig(AudioConfig::Aac(AacConfig::parse(data)?)),
            AudioCodec::Opus => Demuxed::AudioConfig(AudioConfig::Opus(OpusConfig::parse(data)?)),
            AudioCodec::Flac => Demuxed::AudioConfig(AudioConfig::Flac(FlacConfig::parse(data)?)),
            // the frames carry the configuration
            AudioCodec::Ac3 | AudioCodec::Eac3 | AudioCodec::Mp3 => Demuxed::Skip,
        },
        AUDIO_CODED_FRAMES if data.is_empty() => Demuxed::Skip,
        AUDIO_CODED_FRAMES => Demuxed::Audio(codec, AudioFrame { pts, data }),
        AUDIO_SEQUENCE_END | AUDIO_MULTICHANNEL_CONFIG => Demuxed::Skip,
        other => return Err(FlvError::BadPacketType { kind: "audio", ptype: other }),
    })
}

#[cfg(test)]
mod tests;
