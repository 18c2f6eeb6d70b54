//! HLS output. The muxer (`ts`), the segmenter and the playlist are sans-IO and live
//! in `livegate-proto` (re-exported here); `service` is the I/O side: one task per
//! stream, the in-memory store and the optional disk mirror.

pub mod name;
pub mod service;

pub use livegate_proto::hls::{playlist, segmenter, ts};
pub use livegate_proto::hls::{
    MuxError, Playlist, PlaylistConfig, Segment, SegmentInfo, Segmenter, SegmenterConfig, TsMuxer,
};
pub use name::SegmentName;
pub use service::HlsStore;
