//! FLV: the tag bodies RTMP carries, demuxed into `media` frames and codec
//! configurations, and the reverse (tag headers for HTTP-FLV and RTMP play).
//! Sans-IO.
//!
//! Only H.264 (codec id 7) and AAC (sound format 10) are supported, which is
//! what hls.js, mpegts.js and MPEG-TS outputs carry. Other codecs are reported
//! as `FlvError::UnsupportedCodec` so the ingest can log and drop them.

mod demux;
pub mod file;
mod mux;
mod stream;
mod writer;

pub use demux::{demux_audio, demux_video, Demuxed, FlvError};
pub use mux::{
    audio_config_body, audio_tag_header, file_header, tag_bodies, tag_header, video_config_body, video_tag_header,
    TagBody, TagType, PREV_TAG_SIZE_LEN, TAG_HEADER_LEN,
};
pub use stream::{Note, TagDemuxer, MAX_TIMESTAMP_JUMP_MS};
pub use writer::FlvWriter;
