//! Sans-IO RTMP protocol core: handshake, chunk stream codec, AMF0, messages and the server
//! session state machine. No sockets, no clocks, no tokio: bytes in, events and bytes out.
//! The I/O edge (`livegate::server::rtmp`) owns timeouts, socket reads/writes and closing.

pub mod amf0;
pub mod chunk;
mod client;
mod error;
pub mod handshake;
pub mod http_probe;
pub mod message;
pub mod session;
#[cfg(test)]
mod testclient;

pub use client::{
    ClientConfig, ClientEvent, ClientFailure, ClientRole, ClientSession, ClientStage, ClientState, ConnectParams,
    NotPublishing,
};
pub use error::RtmpError;
pub use session::{ClientCapabilities, MediaKind, PlayControl, RequestId, ServerSession, SessionConfig, SessionEvent};
#[cfg(test)]
mod tests;
