//! HLS output. `ts` (MPEG-TS muxer), `segmenter` (where to cut) and
//! `playlist` (the live media playlist) are sans-IO: no tokio, no clocks;
//! wall-clock time is passed in by the caller.

pub mod playlist;
pub mod segmenter;
pub mod ts;

#[cfg(test)]
pub(crate) mod testutil;

pub use playlist::{Playlist, PlaylistConfig, SegmentInfo};
pub use segmenter::{Segment, Segmenter, SegmenterConfig};
pub use ts::{MuxError, TsMuxer};
