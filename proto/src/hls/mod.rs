//! The pure parts of HLS: `ts` (the MPEG-TS muxer), `fmp4` (the fragmented MP4 muxer),
//! `segmenter` (where to cut, driving either muxer) and
//! `playlist` (the live media playlist). No clocks: wall-clock time is passed in by
//! the caller. The store, the per-stream task and the disk mirror are the I/O side, in
//! the `livegate` crate.

pub mod fmp4;
pub mod llhls;
pub mod playlist;
pub mod segmenter;
pub mod ts;

#[cfg(test)]
mod golden;
#[cfg(test)]
pub(crate) mod testutil;

pub use fmp4::Fmp4Muxer;
pub use playlist::{render_multivariant, AudioRendition, PartInfo, Playlist, PlaylistConfig, SegmentInfo, Variant};
pub use segmenter::{Container, InitSegment, Part, Segment, Segmenter, SegmenterConfig};
pub use ts::{MuxError, TsMuxer};
