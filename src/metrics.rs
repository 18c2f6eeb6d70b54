//! Process-wide Prometheus metrics (`prometheus-client`), rendered at `/metrics`.
//! Counters are bumped where things happen; gauges of live state (streams,
//! viewers) are read at scrape time, from the hub and (viewers per output) from what
//! the caller passes (`session::output`, which this module does not import).

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::hub::{Hub, HubObserver};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProtocolLabel {
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabel {
    pub limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodecLabel {
    pub video: &'static str,
    pub audio: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub fn protocol(p: &'static str) -> ProtocolLabel {
    ProtocolLabel { protocol: p }
}

pub fn reason(r: &'static str) -> ReasonLabel {
    ReasonLabel { reason: r }
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Accepted connections by listener protocol (rtmp, rtmps, http).
    pub connections: Family<ProtocolLabel, Counter>,
    pub bytes_in: Counter,
    /// Media bytes sent to viewers by output (`session::output`, which counts them).
    pub bytes_out: Family<ProtocolLabel, Counter>,
    pub publishes: Counter,
    pub lag_skips: Counter,
    pub evictions: Counter,
    pub segments: Counter,
    /// Refused connections, publishes and plays by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    pub handshake_failures: Counter,
    /// Times a byte or count bound was hit (a connection closed, a segment cut early, a
    /// frame or held playlist dropped), by bound.
    pub limit_hits: Family<LimitLabel, Counter>,
    /// HLS requests answered, by kind: `playlist`, `blocking_playlist` (Low-Latency
    /// delivery directives), `segment`, `part`, `init`.
    pub hls_requests: Family<KindLabel, Counter>,
    /// Low-Latency HLS: from the arrival of a part's last frame to the part being listed.
    pub hls_part_delay: prometheus_client::metrics::histogram::Histogram,
    /// Media messages from publishers that were dropped, by reason: `unsupported_codec`
    /// (a codec id or FourCC livegate does not carry), `malformed` (a body or codec record
    /// that does not parse), `codec_mismatch` (a frame of another codec than its track's
    /// sequence start), `other_track` (a multitrack track that is not served),
    /// `before_config` (a frame before its sequence header).
    pub media_dropped: Family<ReasonLabel, Counter>,
    /// Bytes written to push targets, skips (frames dropped up to a keyframe for a target
    /// that fell behind) and reconnects of push targets.
    pub push_bytes: Counter,
    pub push_skips: Counter,
    pub push_reconnects: Counter,
    /// Push targets by state (`connecting`, `publishing`, `waiting`, `refused`).
    pushes: Family<StateLabel, Gauge>,
    streams: Gauge,
    /// Live streams by codec pair (`none` for a missing track).
    streams_by_codec: Family<CodecLabel, Gauge>,
    viewers: Family<ProtocolLabel, Gauge>,
    /// 1 while the cluster directory (Redis) answers (`[cluster]` only).
    cluster_redis_up: Gauge,
    /// Stream keys this node claims in the cluster directory.
    cluster_claims: Gauge,
    /// Claims this node found taken by another node (its stream then ended here).
    pub cluster_claims_lost: Counter,
    /// What happens, for `/api/events` (the console): publishes, refusals, bounds hit, push
    /// and recording states. Here because every component that counts also reports.
    pub events: crate::events::Events,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("livegate");
        let m = Self {
            connections: Family::default(),
            bytes_in: Counter::default(),
            bytes_out: Family::default(),
            publishes: Counter::default(),
            lag_skips: Counter::default(),
            evictions: Counter::default(),
            segments: Counter::default(),
            rejected: Family::default(),
            handshake_failures: Counter::default(),
            limit_hits: Family::default(),
            hls_requests: Family::default(),
            hls_part_delay: prometheus_client::metrics::histogram::Histogram::new([
                0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.2, 0.5,
            ]),
            media_dropped: Family::default(),
            push_bytes: Counter::default(),
            push_skips: Counter::default(),
            push_reconnects: Counter::default(),
            pushes: Family::default(),
            streams: Gauge::default(),
            streams_by_codec: Family::default(),
            viewers: Family::default(),
            cluster_redis_up: Gauge::default(),
            cluster_claims: Gauge::default(),
            cluster_claims_lost: Counter::default(),
            registry: Registry::default(),
            events: crate::events::Events::new(),
        };
        registry.register("connections", "Accepted connections by protocol", m.connections.clone());
        registry.register("bytes_in", "Bytes received from publishers", m.bytes_in.clone());
        registry.register("bytes_out", "Media bytes sent to viewers by protocol", m.bytes_out.clone());
        registry.register("publishes", "Publish sessions started", m.publishes.clone());
        registry.register("lag_skips", "Times a lagging viewer skipped to the latest keyframe", m.lag_skips.clone());
        registry.register("evictions", "Viewers disconnected for lagging or stalling", m.evictions.clone());
        registry.register("hls_segments", "HLS segments written", m.segments.clone());
        registry.register("rejected", "Refused connections, publishes and plays by reason", m.rejected.clone());
        registry.register(
            "handshake_failures",
            "RTMP handshakes that failed or timed out",
            m.handshake_failures.clone(),
        );
        registry.register("limit_hits", "Times a memory or count bound was hit, by bound", m.limit_hits.clone());
        registry.register("hls_requests", "HLS requests answered, by kind", m.hls_requests.clone());
        registry.register(
            "hls_part_delay_seconds",
            "Low-Latency HLS: from the arrival of a part's last frame to the part being listed",
            m.hls_part_delay.clone(),
        );
        registry.register("media_dropped", "Publisher media messages dropped, by reason", m.media_dropped.clone());
        registry.register("push_bytes", "Bytes written to push targets", m.push_bytes.clone());
        registry.register(
            "push_skips",
            "Times a push target fell behind and frames up to the next keyframe were dropped for it",
            m.push_skips.clone(),
        );
        registry.register(
            "push_reconnects",
            "Push target connections that failed and were retried",
            m.push_reconnects.clone(),
        );
        registry.register("pushes", "Push targets by state", m.pushes.clone());
        registry.register("streams", "Live streams", m.streams.clone());
        registry.register("streams_by_codec", "Live streams by video and audio codec", m.streams_by_codec.clone());
        registry.register("viewers", "Current viewers by protocol", m.viewers.clone());
        registry.register(
            "cluster_redis_up",
            "1 while the cluster directory (Redis) answers, 0 while it does not",
            m.cluster_redis_up.clone(),
        );
        registry.register(
            "cluster_claims",
            "Stream keys this node claims in the cluster directory",
            m.cluster_claims.clone(),
        );
        registry.register(
            "cluster_claims_lost",
            "Claims found taken by another node (the stream then ended here)",
            m.cluster_claims_lost.clone(),
        );
        Self { registry, ..m }
    }

    pub fn set_cluster_redis_up(&self, up: bool) {
        self.cluster_redis_up.set(i64::from(up));
    }

    pub fn set_cluster_claims(&self, n: usize) {
        self.cluster_claims.set(n as i64);
    }

    /// Counts one hit of the bound named `limit` (and reports it, rate-limited).
    pub fn limit_hit(&self, limit: &'static str) {
        self.limit_hits.get_or_create(&LimitLabel { limit }).inc();
        self.events.warn("limit", serde_json::json!({ "limit": limit }));
    }

    /// Counts one refused connection, publish or play by `reason` and reports it
    /// (rate-limited) with `what` (an object: protocol, peer, why).
    pub fn refused(&self, reason: &'static str, mut what: serde_json::Value) {
        self.rejected.get_or_create(&ReasonLabel { reason }).inc();
        if let Some(o) = what.as_object_mut() {
            o.insert("reason".into(), reason.into());
        }
        self.events.warn("refused", what);
    }

    /// Counts one dropped media message (see [`Self::media_dropped`]).
    pub fn media_dropped(&self, why: &'static str) {
        self.media_dropped.get_or_create(&ReasonLabel { reason: why }).inc();
    }

    /// Counts one HLS request of `kind` (see [`Self::hls_requests`]).
    pub fn hls_request(&self, kind: &'static str) {
        self.hls_requests.get_or_create(&KindLabel { kind }).inc();
    }

    /// Sets the push-target gauge from the states of every push (at scrape time).
    pub fn set_push_states<'a>(&self, states: impl IntoIterator<Item = &'a str>) {
        self.pushes.clear();
        for state in ["connecting", "publishing", "waiting", "refused"] {
            self.pushes.get_or_create(&StateLabel { state }).set(0);
        }
        for state in states {
            if let Some(s) =
                ["connecting", "publishing", "waiting", "refused", "stopped"].into_iter().find(|s| *s == state)
            {
                self.pushes.get_or_create(&StateLabel { state: s }).inc();
            }
        }
    }

    /// Prometheus text exposition, with live gauges refreshed from `hub` and `viewers` (the
    /// viewers of all streams by output name: `session::output::viewers_by_output`).
    pub fn render(&self, hub: &Hub, viewers: impl IntoIterator<Item = (&'static str, usize)>) -> String {
        let streams = hub.streams();
        self.streams.set(streams.len() as i64);
        self.streams_by_codec.clear();
        for s in &streams {
            let c = s.codec();
            let video = c.video.as_ref().map_or("none", |v| v.codec().name());
            let audio = c.audio.as_ref().map_or("none", |a| a.codec().name());
            self.streams_by_codec.get_or_create(&CodecLabel { video, audio }).inc();
        }
        for (name, n) in viewers {
            self.viewers.get_or_create(&protocol(name)).set(n as i64);
        }
        let mut out = String::new();
        // writing into a String cannot fail
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl HubObserver for Metrics {
    fn bytes_in(&self, n: u64) {
        self.bytes_in.inc_by(n);
    }

    fn lag_skip(&self) {
        self.lag_skips.inc();
    }

    fn eviction(&self) {
        self.evictions.inc();
    }

    fn limit_hit(&self, limit: &'static str) {
        Metrics::limit_hit(self, limit);
    }

    fn lifecycle(&self, key: &crate::hub::StreamKey, event: crate::hub::Lifecycle) {
        use crate::hub::Lifecycle;
        use serde_json::json;
        let stream = key.to_string();
        match event {
            Lifecycle::Published(peer) => {
                self.events.emit("publish", json!({ "stream": stream, "publisher": peer.to_string() }))
            }
            Lifecycle::Resumed(peer) => {
                self.events.emit("reconnect", json!({ "stream": stream, "publisher": peer.to_string() }))
            }
            Lifecycle::Waiting => self.events.emit("waiting", json!({ "stream": stream })),
            Lifecycle::Ended => self.events.emit("unpublish", json!({ "stream": stream })),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubConfig;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.connections.get_or_create(&protocol("rtmp")).inc();
        m.rejected.get_or_create(&reason("bad_key")).inc_by(2);
        let hub = Hub::new(HubConfig::default());
        let text = m.render(&hub, [("rtmp", 0)]);
        assert!(text.contains("livegate_connections_total{protocol=\"rtmp\"} 1"), "{text}");
        assert!(text.contains("livegate_rejected_total{reason=\"bad_key\"} 2"), "{text}");
        assert!(text.contains("livegate_streams 0"), "{text}");
        assert!(text.contains("# TYPE livegate_viewers gauge"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }
}
