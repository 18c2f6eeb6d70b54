//! The outputs a stream is watched through, named as the API and the metrics name them
//! (`http_flv`, `rtmp`, `hls`, `ws_flv`), and what is counted per output. The hub counts a
//! stream's viewers as one number (those that hold a connection, for the viewer limit) and
//! knows no outputs; here, beside the session layer that admits viewers:
//!
//! - each stream's viewers per output ([`StreamOutputs`], kept in the stream's extension
//!   slot, `hub::Stream::extension`), read by `/api/streams` and `/metrics`;
//! - the bytes sent per output (`livegate_bytes_out_total{protocol}`), counted through the
//!   viewer's [`OutputGuard`], which holds the counters it adds to (a relaxed atomic add
//!   per batch, no lookup).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;

use crate::hub::{Stream, StreamKey, ViewerGuard};
use crate::metrics::{protocol, Metrics};

/// What a viewer watches a stream through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    HttpFlv,
    RtmpPlay,
    Hls,
    /// WebSocket-FLV: HTTP-FLV's body in WebSocket frames.
    WsFlv,
}

impl Output {
    pub const ALL: [Output; 4] = [Output::HttpFlv, Output::RtmpPlay, Output::Hls, Output::WsFlv];

    /// The output's name in `/api/streams`, `/metrics` and auth callbacks.
    pub fn name(self) -> &'static str {
        match self {
            Output::HttpFlv => "http_flv",
            Output::RtmpPlay => "rtmp",
            Output::Hls => "hls",
            Output::WsFlv => "ws_flv",
        }
    }

    /// Whether viewers of this output hold a live connection to the stream: the hub counts
    /// them (the viewer limit). An HLS viewer fetches files (the HLS store counts those).
    pub fn holds_connection(self) -> bool {
        matches!(self, Output::HttpFlv | Output::WsFlv | Output::RtmpPlay)
    }
}

/// One stream's viewers per output, updated without locks.
#[derive(Debug, Default)]
pub struct StreamOutputs {
    viewers: [AtomicUsize; 4],
}

impl StreamOutputs {
    /// The counts of `stream` (made on its first viewer, kept in its extension slot). Should
    /// the slot hold something else, a detached instance: counts lost, nothing breaks.
    pub fn of(stream: &Stream) -> Arc<Self> {
        stream.extension::<Self>().unwrap_or_default()
    }

    /// Viewers of `output` admitted through [`Outputs::admit`] and still there.
    pub fn viewers(&self, output: Output) -> usize {
        self.viewers[output as usize].load(Ordering::Relaxed)
    }
}

/// Viewers of `stream` on `output` now; HLS viewers hold no connection and are counted by
/// the HLS store (`hls_viewers`, e.g. `HlsStore::viewers`).
pub fn viewers(stream: &Stream, output: Output, hls_viewers: &dyn Fn(&StreamKey) -> usize) -> usize {
    match output {
        Output::Hls => hls_viewers(stream.key()),
        o => StreamOutputs::of(stream).viewers(o),
    }
}

/// The viewers of all `streams` per output, by output name (the `livegate_viewers` gauge).
pub fn viewers_by_output(
    streams: &[Arc<Stream>],
    hls_viewers: &dyn Fn(&StreamKey) -> usize,
) -> [(&'static str, usize); 4] {
    Output::ALL.map(|o| (o.name(), streams.iter().map(|s| viewers(s, o, hls_viewers)).sum()))
}

/// The gateway's per-output counters (one instance, in `Services`).
#[derive(Debug)]
pub struct Outputs {
    /// `livegate_bytes_out_total` of each output, looked up once (counted on every write).
    bytes_out: [Counter; 4],
}

impl Outputs {
    pub fn new(metrics: &Metrics) -> Self {
        Self { bytes_out: Output::ALL.map(|o| metrics.bytes_out.get_or_create(&protocol(o.name())).clone()) }
    }

    /// Counts a viewer of `stream` on `output`, unless it holds a connection and the stream
    /// already has `max` such viewers (checked and counted in one step by the hub, so
    /// concurrent joins cannot overshoot). Counted until the guard is dropped.
    pub fn admit(&self, stream: &Arc<Stream>, output: Output, max: usize) -> Option<OutputGuard> {
        let hub = if output.holds_connection() { Some(stream.admit_viewer(max)?) } else { None };
        let counts = StreamOutputs::of(stream);
        counts.viewers[output as usize].fetch_add(1, Ordering::Relaxed);
        Some(OutputGuard {
            stream: stream.clone(),
            output,
            counts,
            bytes_out: self.bytes_out[output as usize].clone(),
            _hub: hub,
        })
    }
}

/// Keeps an admitted viewer counted, by the hub and per output, and counts what is sent to it.
#[derive(Debug)]
pub struct OutputGuard {
    stream: Arc<Stream>,
    output: Output,
    counts: Arc<StreamOutputs>,
    bytes_out: Counter,
    _hub: Option<ViewerGuard>,
}

impl OutputGuard {
    /// Counts `n` media bytes sent to the viewer: the stream's total and its output's (two
    /// relaxed atomic adds; called on every batch).
    pub fn count_bytes_out(&self, n: u64) {
        self.stream.count_bytes_out(n);
        self.bytes_out.inc_by(n);
    }
}

impl Drop for OutputGuard {
    fn drop(&mut self) {
        self.counts.viewers[self.output as usize].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{Hub, HubConfig};

    #[test]
    fn viewers_are_counted_per_output_and_limited_by_connection() {
        let hub = Hub::new(HubConfig::default());
        let metrics = Metrics::new();
        let outputs = Outputs::new(&metrics);
        let p = hub.publish(StreamKey::new("live", "a"), "127.0.0.1:1".parse().unwrap()).unwrap();
        let s = p.stream();
        let a = outputs.admit(s, Output::HttpFlv, 2).unwrap();
        let _hls = outputs.admit(s, Output::Hls, 2).unwrap();
        let b = outputs.admit(s, Output::RtmpPlay, 2).unwrap();
        assert!(outputs.admit(s, Output::HttpFlv, 2).is_none());
        assert!(outputs.admit(s, Output::WsFlv, 2).is_none());
        assert!(outputs.admit(s, Output::Hls, 2).is_some(), "HLS clients do not count");
        assert_eq!(s.viewers(), 2);
        drop(a);
        assert_eq!(StreamOutputs::of(s).viewers(Output::HttpFlv), 0);
        let c = outputs.admit(s, Output::WsFlv, 2).unwrap();
        assert_eq!(StreamOutputs::of(s).viewers(Output::WsFlv), 1);
        assert_eq!(StreamOutputs::of(s).viewers(Output::RtmpPlay), 1);
        c.count_bytes_out(100);
        b.count_bytes_out(20);
        assert_eq!(s.stats.bytes_out.load(Ordering::Relaxed), 120);
        let text = metrics.render(&hub, []);
        assert!(text.contains("livegate_bytes_out_total{protocol=\"ws_flv\"} 100"), "{text}");
        assert!(text.contains("livegate_bytes_out_total{protocol=\"rtmp\"} 20"), "{text}");
        assert!(text.contains("livegate_bytes_out_total{protocol=\"http_flv\"} 0"), "{text}");
        drop(b);
        assert!(outputs.admit(s, Output::HttpFlv, 2).is_some());
    }
}
