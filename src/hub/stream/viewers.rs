//! Viewer admission and counting: the stream's viewers that hold a connection to it (what
//! `max_viewers_per_stream` limits; checked and counted in one step), and the guard that
//! keeps a viewer counted while it is connected. What a viewer watches through (HTTP-FLV,
//! RTMP, ...) is not the hub's business: `session::output` counts viewers and bytes per
//! output.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use super::Stream;

/// Counters of one stream, updated without locks.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub bytes_in: AtomicU64,
    pub frames_in: AtomicU64,
    pub video_frames_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub lag_skips: AtomicU64,
    pub evictions: AtomicU64,
    /// Viewers that hold a connection to the stream (HTTP-FLV, WebSocket-FLV, RTMP play):
    /// what `max_viewers_per_stream` limits.
    viewers: AtomicUsize,
}

impl StreamStats {
    pub fn viewers(&self) -> usize {
        self.viewers.load(Ordering::Relaxed)
    }
}

impl Stream {
    /// Viewers connected now (admitted with [`Self::admit_viewer`] and not gone).
    pub fn viewers(&self) -> usize {
        self.stats.viewers()
    }

    /// Counts a viewer unless the stream already has `max` (checked and counted in one
    /// step, so concurrent joins cannot overshoot). Counted as long as the guard lives.
    pub fn admit_viewer(self: &Arc<Self>, max: usize) -> Option<ViewerGuard> {
        let n = &self.stats.viewers;
        n.try_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1)).ok()?;
        Some(ViewerGuard { stream: self.clone() })
    }
}

/// Keeps a viewer counted in [`StreamStats`].
#[derive(Debug)]
pub struct ViewerGuard {
    stream: Arc<Stream>,
}

impl Drop for ViewerGuard {
    fn drop(&mut self) {
        self.stream.stats.viewers.fetch_sub(1, Ordering::Relaxed);
    }
}
