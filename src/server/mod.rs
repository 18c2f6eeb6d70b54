//! The I/O edges, named by protocol: each drives sans-IO state machines from
//! `livegate-proto` over sockets and connects them to the hub.
//!
//! - [`rtmp`]: RTMP and RTMPS connections, publishing and playing (one
//!   `rtmp::ServerSession` per connection, driven by one `select!` loop).
//! - [`http`]: HTTP-FLV, HLS playlists and segments, the API, metrics, the player page.
//! - [`listener`]: binding, backlogs, connection limits, the accept loop, the open-file
//!   limit; shared by both.
//! - `writer`: vectored writes of queued pieces (RTMP connections, WebSocket-FLV).

pub mod http;
pub mod listener;
pub mod rtmp;
mod writer;
