//! The stream hub: registry of live streams, per-stream codec config, GOP
//! cache and a bounded fan-out ring. Publishers never wait; viewers that lag
//! skip to the next keyframe and are evicted if they keep lagging.

use bytes::Bytes;

use crate::media::{CodecConfig, Frame};

/// What flows from a publisher to its viewers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubEvent {
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
