#![warn(unreachable_pub)]
//! livegate-proto: the sans-IO core of livegate. Bytes, events and `now` go in;
//! events and bytes come out. No sockets, no tasks, no clocks, no OS randomness: the
//! crate does not depend on tokio, hyper or prometheus, so the compiler keeps it pure.
//!
//! # Layout
//! - [`rtmp`]: the server side of an RTMP connection (handshake, chunk stream, AMF0,
//!   commands) as a state machine ([`rtmp::ServerSession`]), and the client side
//!   ([`rtmp::ClientSession`]: tests, fuzzing, the benchmark, relays to come). Every byte
//!   bound on input lives here (message size, unfinished-message budget).
//! - [`flv`]: FLV tag bodies to and from [`media`] frames and configs; the FLV writer; the
//!   one FLV tag reader ([`flv::file`]: whole files and live streams).
//! - [`media`]: frames, codec configurations (H.264, AAC), the 64-bit timestamp
//!   unwrapper and [`media::Event`], what flows from a publisher to its viewers.
//! - [`mux`]: the MPEG-TS and fragmented MP4 muxers (HLS and recordings).
//! - [`hls`]: the segmenter and the live playlist.
//! - [`StreamKey`]: `APP/STREAM` and the name rules.
//! - [`Piece`]: what goes out to a viewer, a shared payload or a small header held inline.
//!
//! The `livegate` crate is the I/O around this: listeners, connection drivers, the hub
//! (fan-out), HTTP, the HLS store, metrics and configuration.

pub mod flv;
pub mod hls;
mod key;
pub mod media;
pub mod mux;
mod piece;
pub mod rtmp;

pub use key::{valid_name, valid_stream_name, StreamKey, Track};
pub use piece::{Inline, Piece, INLINE};

/// Fuzz target bodies: for tests and `cargo fuzz` only (`--cfg fuzzing`).
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub mod fuzzing;
