//! How the hub reports what happens, without knowing who listens: `metrics`
//! implements [`HubObserver`] (the hub imports nothing from `metrics`); a hub
//! without one reports to [`NoObserver`].

/// Receives the hub's counts. Called on hot paths (every message from a publisher):
/// implementations must be cheap (an atomic add).
pub trait HubObserver: Send + Sync + std::fmt::Debug {
    /// Bytes received from a publisher.
    fn bytes_in(&self, n: u64);
    /// A lagging viewer skipped to the latest keyframe.
    fn lag_skip(&self);
    /// A viewer was disconnected for lagging or stalling.
    fn eviction(&self);
    /// The bound named `limit` was hit (`livegate_limit_hits_total{limit}`).
    fn limit_hit(&self, limit: &'static str);
    /// A publish's life (not a multitrack publish's track streams): called outside the hot
    /// path, at most a few times per publish.
    fn lifecycle(&self, _key: &super::StreamKey, _event: Lifecycle) {}
}

/// What happens to a publish, for [`HubObserver::lifecycle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// A new stream: its first publisher.
    Published(std::net::SocketAddr),
    /// A publisher came back within the reconnect grace and continues the stream.
    Resumed(std::net::SocketAddr),
    /// The publisher left; the stream waits for it (the reconnect grace).
    Waiting,
    /// The stream ended and its key is free.
    Ended,
}

/// Counts nothing (tests, tools).
#[derive(Debug, Default)]
pub struct NoObserver;

impl HubObserver for NoObserver {
    fn bytes_in(&self, _: u64) {}
    fn lag_skip(&self) {}
    fn eviction(&self) {}
    fn limit_hit(&self, _: &'static str) {}
}
