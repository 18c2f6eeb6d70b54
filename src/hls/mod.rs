//! HLS output. The muxer (`ts`), the segmenter and the playlist are sans-IO and live
//! in `livegate-proto` (re-exported here). The I/O side: `task` (one task per stream
//! feeding the segmenter, and the driver that sleeps until the next deadline), `store`
//! (what the HTTP side reads, bounded in bytes, and the optional disk mirror), `lifecycle`
//! (one key's state and its deadlines, time as an input) and `name` (segment names).

mod ladder;
mod lifecycle;
pub mod name;
mod store;
mod task;

pub use livegate_proto::hls::{playlist, segmenter, ts};
pub use livegate_proto::hls::{
    Container, MuxError, Playlist, PlaylistConfig, Segment, SegmentInfo, Segmenter, SegmenterConfig, TsMuxer,
};
pub use name::{FileKind, SegmentName};
pub use store::{HlsStore, PlaylistReply};
pub use task::run;
