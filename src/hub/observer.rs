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
