//! Containers: the MPEG-TS muxer ([`ts`]) and the fragmented MP4 (CMAF) muxer ([`fmp4`]).
//! HLS cuts segments with them (`hls::segmenter`); the recorder writes its files with the
//! fMP4 one. They do not decide where anything is cut. Sans-IO.

pub mod fmp4;
pub mod mp4file;
pub mod ts;

pub use fmp4::Fmp4Muxer;
pub use ts::{MuxError, TsMuxer};
