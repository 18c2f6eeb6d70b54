//! The I/O edges, named by protocol: each drives sans-IO state machines from
//! `livegate-proto` over sockets and connects them to the hub (through `session`).
//!
//! - [`rtmp`]: RTMP and RTMPS connections, publishing and playing (one
//!   `rtmp::ServerSession` per connection, driven by one `select!` loop).
//! - [`http`]: HTTP-FLV, HLS playlists and segments, the API, metrics, the player page.
//!
//! Binding, connection limits and the accept loop (`net::listener`) and the vectored
//! socket writer (`net::writer`) are crate-wide, in `net`.

pub mod http;
pub mod rtmp;
