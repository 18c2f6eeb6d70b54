//! HLS output. `ts` (MPEG-TS muxer), `segmenter` (where to cut) and
//! `playlist` (the live media playlist) are sans-IO: no tokio, no clocks;
//! wall-clock time is passed in by the caller. `service` is the I/O side:
//! one task per stream, the in-memory store and the optional disk mirror.

pub mod playlist;
pub mod segmenter;
pub mod service;
pub mod ts;

#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) mod testutil;

pub use playlist::{Playlist, PlaylistConfig, SegmentInfo};
pub use segmenter::{Segment, Segmenter, SegmenterConfig};
pub use service::HlsStore;
pub use ts::{MuxError, TsMuxer};
