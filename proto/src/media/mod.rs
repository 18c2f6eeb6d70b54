//! Codec-level media model shared by every output: frames with 64-bit
//! millisecond timestamps, codec configurations parsed from the FLV sequence
//! headers, and timestamp unwrapping. Sans-IO: no sockets, no clocks.
//!
//! Payloads are `bytes::Bytes`: the RTMP decoder copies each message once into a buffer
//! of its own size, and everything after it (frames, events, the outputs) shares that
//! buffer by reference count; nothing here copies a payload. (The FLV demuxer copies a
//! track's payload out of its message when sharing would pin much more than it holds,
//! see `flv::MAX_SHARED_OVERHEAD`.)

pub mod aac;
pub mod ac3;
pub mod av1;
pub mod bits;
mod codec;
pub mod flac;
pub mod h264;
pub mod hevc;
pub mod mp3;
pub mod opus;
pub mod timestamp;
pub mod vp9;

use std::sync::Arc;

use bytes::Bytes;

pub use aac::AacConfig;
pub use ac3::Ac3Config;
pub use av1::Av1Config;
pub use codec::{AudioCodec, AudioConfig, VideoCodec, VideoConfig};
pub use flac::FlacConfig;
pub use h264::AvcConfig;
pub use hevc::HevcConfig;
pub use mp3::Mp3Config;
pub use opus::OpusConfig;
pub use timestamp::Unwrapper;
pub use vp9::Vp9Config;

/// The two kinds of media a stream carries: what an RTMP message (type 8 or 9) and an
/// FLV tag hold. One enum for the RTMP session, the FLV demuxer and the outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    Audio,
    Video,
}

/// One video access unit as FLV carries it: H.264/HEVC as length-prefixed NAL units, AV1
/// as a temporal unit of OBUs, VP9 as a frame (the MP4 sample formats, too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoFrame {
    /// Decode timestamp in milliseconds, unwrapped to 64 bits at ingest.
    pub dts: i64,
    /// Composition time offset (PTS - DTS) in milliseconds, signed, as FLV gives it.
    pub cts: i32,
    pub keyframe: bool,
    /// The sample (for H.264/HEVC each NAL unit is prefixed by a `nalu_length_size`-byte length).
    pub data: Bytes,
}

impl VideoFrame {
    pub fn pts(&self) -> i64 {
        self.dts + i64::from(self.cts)
    }
}

/// One audio frame as FLV carries it (AAC without ADTS, an Opus packet, a FLAC frame, an
/// AC-3 syncframe, an MPEG audio frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudioFrame {
    /// Presentation timestamp in milliseconds, unwrapped to 64 bits at ingest.
    pub pts: i64,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Video(VideoFrame),
    Audio(AudioFrame),
}

impl Frame {
    /// Decode time in milliseconds (audio: its presentation time).
    pub fn dts(&self) -> i64 {
        match self {
            Frame::Video(v) => v.dts,
            Frame::Audio(a) => a.pts,
        }
    }

    pub fn is_keyframe(&self) -> bool {
        matches!(self, Frame::Video(v) if v.keyframe)
    }

    pub fn is_video(&self) -> bool {
        matches!(self, Frame::Video(_))
    }

    pub fn payload_len(&self) -> usize {
        match self {
            Frame::Video(v) => v.data.len(),
            Frame::Audio(a) => a.data.len(),
        }
    }
}

/// The codec configuration of a stream at one point in time. `generation`
/// increases whenever either track's configuration changes, so consumers
/// (the HLS segmenter) can tell a real change from a repeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodecConfig {
    pub video: Option<Arc<VideoConfig>>,
    pub audio: Option<Arc<AudioConfig>>,
    /// Enhanced RTMP video Metadata (an AMF0 `colorInfo` body: colour and HDR
    /// information) as the encoder last sent it, passed on to FLV and RTMP viewers.
    pub video_metadata: Option<Bytes>,
    pub generation: u32,
}

impl CodecConfig {
    /// Heap bytes the configuration keeps alive: both tracks' decoded configurations and
    /// the video metadata.
    pub fn heap_size(&self) -> usize {
        self.video.as_deref().map_or(0, VideoConfig::heap_size)
            + self.audio.as_deref().map_or(0, AudioConfig::heap_size)
            + self.video_metadata.as_ref().map_or(0, Bytes::len)
    }
}

/// What flows from a publisher to its viewers: the event vocabulary shared by the
/// hub and every output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// `onMetaData` as an AMF0-encoded script data body: the string
    /// "onMetaData" followed by its object / ECMA array.
    Metadata(Bytes),
    /// New codec configuration (sent before the first frame and whenever it changes).
    Config(CodecConfig),
    Frame(Frame),
    /// The timeline breaks here (e.g. timestamps jumped); outputs restart their clocks.
    Discontinuity,
    /// The publisher left.
    EndOfStream,
}

impl Event {
    /// Approximate heap bytes this event keeps alive: a payload never pins much more than
    /// its own size (each message is allocated at exactly its size, see `rtmp::chunk`, and a
    /// track's payload that would leave more than `flv::MAX_SHARED_OVERHEAD` bytes of its
    /// message unused is copied out), and a configuration counts its decoded size (its
    /// parts are shared with the stream's current configuration, so this may count them
    /// twice: a bound errs high).
    pub fn weight(&self) -> usize {
        let payload = match self {
            Event::Metadata(b) => b.len(),
            Event::Frame(f) => f.payload_len(),
            Event::Config(c) => c.heap_size(),
            _ => 0,
        };
        payload + 64
    }
}
