//! The pure parts of HLS: `segmenter` (where to cut, driving either muxer of
//! [`crate::mux`]: `ts`, `fmp4`, re-exported here under their old names) and
//! `playlist` (the live media playlist). No clocks: wall-clock time is passed in by
//! the caller. The store, the per-stream task and the disk mirror are the I/O side, in
//! the `livegate` crate.

pub use crate::mux::{fmp4, ts};
pub mod llhls;
pub mod playlist;
pub mod segmenter;

#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) mod testutil;

pub use fmp4::Fmp4Muxer;
pub use playlist::{render_multivariant, AudioRendition, PartInfo, Playlist, PlaylistConfig, SegmentInfo, Variant};
pub use segmenter::{Container, InitSegment, Part, Segment, Segmenter, SegmenterConfig};
pub use ts::{MuxError, TsMuxer};
