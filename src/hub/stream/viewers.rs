//! Viewer admission and counting: viewers per protocol, the per-stream limit on HTTP-FLV
//! and RTMP viewers (checked and counted in one step), and the guard that keeps a viewer
//! counted while it is connected.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Stream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    HttpFlv,
    RtmpPlay,
    Hls,
    /// WebSocket-FLV: HTTP-FLV's body in WebSocket frames.
    WsFlv,
}

impl Protocol {
    pub const ALL: [Protocol; 4] = [Protocol::HttpFlv, Protocol::RtmpPlay, Protocol::Hls, Protocol::WsFlv];

    pub fn name(self) -> &'static str {
        match self {
            Protocol::HttpFlv => "http_flv",
            Protocol::RtmpPlay => "rtmp",
            Protocol::Hls => "hls",
            Protocol::WsFlv => "ws_flv",
        }
    }
}

/// Counters of one stream, updated without locks.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    pub video_frames_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub lag_skips: AtomicU64,
    pub evictions: AtomicU64,
    viewers: [AtomicUsize; 4],
    /// HTTP-FLV, WebSocket-FLV and RTMP-play viewers: what `max_viewers_per_stream` limits.
    streaming_viewers: AtomicUsize,
}

impl StreamStats {
    pub fn viewers(&self, p: Protocol) -> usize {
        self.viewers[p as usize].load(Ordering::Relaxed)
    }
}

impl Protocol {
    /// Whether viewers of this protocol hold a live connection to the stream (count towards
    /// the viewer limit).
    fn is_streaming(self) -> bool {
        matches!(self, Protocol::HttpFlv | Protocol::WsFlv | Protocol::RtmpPlay)
    }
}

impl Stream {
    /// Viewers of `protocol` connected now (HTTP-FLV, RTMP play). HLS has no connection to
    /// count: the HLS store counts its viewers (`HlsStore::viewers`).
    pub fn viewers(&self, protocol: Protocol) -> usize {
        self.stats.viewers(protocol)
    }

    /// Counts a viewer of `protocol` for as long as the guard lives.
    pub fn viewer_guard(self: &Arc<Self>, protocol: Protocol) -> ViewerGuard {
        if protocol.is_streaming() {
            self.stats.streaming_viewers.fetch_add(1, Ordering::Relaxed);
        }
        self.stats.viewers[protocol as usize].fetch_add(1, Ordering::Relaxed);
        ViewerGuard { stream: self.clone(), protocol }
    }

    /// Counts a viewer of `protocol` unless the stream already has `max` HTTP-FLV and RTMP
    /// viewers (checked and counted in one step, so concurrent joins cannot overshoot).
    pub fn admit_viewer(self: &Arc<Self>, protocol: Protocol, max: usize) -> Option<ViewerGuard> {
        if protocol.is_streaming() {
            let n = &self.stats.streaming_viewers;
            n.try_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        }
        self.stats.viewers[protocol as usize].fetch_add(1, Ordering::Relaxed);
        Some(ViewerGuard { stream: self.clone(), protocol })
    }
}

/// Keeps a viewer counted in [`StreamStats`].
#[derive(Debug)]
pub struct ViewerGuard {
    stream: Arc<Stream>,
    protocol: Protocol,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        if self.protocol.is_streaming() {
            self.stream.stats.streaming_viewers.fetch_sub(1, Ordering::Relaxed);
        }
        self.stream.stats.viewers[self.protocol as usize].fetch_sub(1, Ordering::Relaxed);
    }
}
