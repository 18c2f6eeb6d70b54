//! livegate: a live-streaming gateway. RTMP in; HLS, HTTP-FLV and RTMP play out.
//!
//! Protocol and container code (`rtmp`, `flv`, `media`, `hls` muxing) is sans-IO;
//! `ingest`, `http` and `app` are the thin I/O edges. See ARCHITECTURE.md.

pub mod app;
pub mod auth;
pub mod config;
pub mod flv;
pub mod hls;
pub mod http;
pub mod hub;
pub mod ingest;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod rtmp;

#[doc(hidden)]
pub mod fuzzing;
