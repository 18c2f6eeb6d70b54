//! Errors of the RTMP protocol core. Every error is fatal for the connection it came from.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RtmpError {
    #[error("unsupported RTMP handshake version {0} (expected 3)")]
    BadHandshakeVersion(u8),
    #[error("peer set chunk size {0}, above 0x7FFFFFFF")]
    ChunkSizeTooLarge(u32),
    #[error("peer set chunk size 0")]
    ChunkSizeZero,
    #[error("message length {0} exceeds the configured maximum")]
    MessageTooLarge(u32),
    #[error("a {length}-byte message would take unfinished messages past the buffer budget ({held} + {length} > {budget} bytes)")]
    BufferBudget { held: usize, length: u32, budget: usize },
    #[error("a {length}-byte message would take the shared budget of unfinished messages past its limit")]
    SharedBudget { length: u32 },
    #[error("too many chunk streams in progress at once ({0})")]
    TooManyChunkStreams(usize),
    #[error("chunk stream {0} continued (fmt {1}) without a preceding type-0 header")]
    MissingChunkHeader(u32, u8),
    #[error("chunk stream {csid}: message length changed from {expected} to {got} mid-message")]
    MessageLengthChanged { csid: u32, expected: u32, got: u32 },
    #[error("AMF0 nesting deeper than {0}")]
    AmfTooDeep(usize),
    #[error("AMF0 message decodes to more than {0} values")]
    AmfTooManyValues(usize),
    #[error("AMF0 value truncated")]
    AmfTruncated,
    #[error("unknown AMF0 marker 0x{0:02x}")]
    AmfUnknownMarker(u8),
    #[error("AMF0 string is not valid UTF-8")]
    AmfInvalidUtf8,
    #[error("AMF0 array declares {0} elements, more than the message could hold")]
    AmfArrayTooLong(u32),
    #[error("malformed {0} message")]
    MalformedMessage(&'static str),
}
