//! FLV: the tag bodies RTMP carries, demuxed into `media` frames and codec
//! configurations, and the reverse (tag headers for HTTP-FLV and RTMP play).
//! Sans-IO.
//!
//! Legacy FLV (H.264, HEVC as codec id 12, AAC, MP3) and Enhanced RTMP (HEVC, AV1, VP9,
//! H.264 by FourCC; Opus, FLAC, AC-3, E-AC-3, MP3, AAC; ModEx; multitrack) are read.
//! Other codecs are reported as `FlvError::UnsupportedCodec`/`UnsupportedFourCc` so the
//! ingest can log, count and drop them.

mod demux;
pub mod file;
mod labels;
mod mux;
mod stream;
mod writer;

pub use demux::{
    demux_audio, demux_video, is_multitrack, Demuxed, FlvError, TrackDemuxed, MAX_MODEX, MAX_SHARED_OVERHEAD,
    MAX_TRACKS_PER_MESSAGE,
};
pub use labels::{audio_track_labels, TrackLabel};
pub use mux::{
    audio_config_body, audio_tag_header, file_header, tag_bodies, tag_header, video_config_body, video_tag_header,
    TagBody, TagCodecs, TagType, MAX_CODEC_HEADER, PREV_TAG_SIZE_LEN, TAG_HEADER_LEN,
};
pub use stream::{Note, TagDemuxer, MAX_TIMESTAMP_JUMP_MS};
pub use writer::FlvWriter;
