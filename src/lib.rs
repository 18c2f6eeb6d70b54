//! livegate: a live-streaming gateway. RTMP in; HLS, HTTP-FLV and RTMP play out.
//!
//! Protocol and container code (`rtmp`, `flv`, `media`, `hls` muxing) is sans-IO and
//! lives in the `livegate-proto` crate (re-exported here under the same names);
//! `server` (`server::rtmp`, `server::http`) and `app` are the I/O edges; `net` (the
//! listener, the socket writer) is what they share with the relays. See ARCHITECTURE.md.

pub use livegate_proto::{flv, media, rtmp, Inline, Piece};

pub mod app;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod events;
pub mod hls;
pub mod hub;
pub mod metrics;
pub mod net;
pub mod record;
pub mod relay;
pub mod server;
pub mod session;
