//! The GOP cache: the events since the latest keyframe, so a new viewer starts
//! decoding at once. Bounded by bytes, frames and duration; a GOP that outgrows
//! the bounds is dropped and the cache waits for the next keyframe. Audio-only
//! streams keep a short sliding window instead.

use std::collections::VecDeque;

use serde::Deserialize;

use super::HubEvent;
use crate::media::Frame;

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GopCacheConfig {
    pub enabled: bool,
    pub max_bytes: usize,
    pub max_frames: usize,
    pub max_duration_ms: u64,
    /// For streams without video: how much recent audio a new viewer gets.
    pub audio_only_ms: u64,
}

impl Default for GopCacheConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_bytes: 16 * 1024 * 1024,
            max_frames: 2000,
            max_duration_ms: 15_000,
            audio_only_ms: 1000,
        }
    }
}

#[derive(Debug)]
pub(crate) struct GopCache {
    config: GopCacheConfig,
    events: VecDeque<HubEvent>,
    bytes: usize,
    /// The current GOP outgrew the bounds: cache nothing until the next keyframe.
    overflowed: bool,
}

impl GopCache {
    pub(crate) fn new(config: GopCacheConfig) -> Self {
        Self { config, events: VecDeque::new(), bytes: 0, overflowed: false }
    }

    pub(crate) fn clear(&mut self) {
        self.events.clear();
        self.bytes = 0;
    }

    pub(crate) fn push(&mut self, frame: &Frame, has_video: bool) {
        if !self.config.enabled {
            return;
        }
        if has_video {
            if frame.is_keyframe() {
                self.clear();
                self.overflowed = false;
            } else if self.overflowed || self.events.is_empty() {
                return;
            }
            self.add(frame);
            if self.over_limit(self.config.max_duration_ms) {
                self.clear();
                self.overflowed = true;
            }
        } else {
            self.add(frame);
            while self.events.len() > 1 && self.over_limit(self.config.audio_only_ms) {
                if let Some(old) = self.events.pop_front() {
                    self.bytes -= old.weight();
                }
            }
        }
    }

    fn add(&mut self, frame: &Frame) {
        let ev = HubEvent::Frame(frame.clone());
        self.bytes += ev.weight();
        self.events.push_back(ev);
    }

    fn over_limit(&self, max_ms: u64) -> bool {
        let span = match (self.events.front(), self.events.back()) {
            (Some(HubEvent::Frame(a)), Some(HubEvent::Frame(b))) => b.dts().saturating_sub(a.dts()).max(0) as u64,
            _ => 0,
        };
        self.bytes > self.config.max_bytes || self.events.len() > self.config.max_frames || span > max_ms
    }

    pub(crate) fn events(&self) -> impl Iterator<Item = &HubEvent> {
        self.events.iter()
    }

    pub(crate) fn len(&self) -> usize {
        self.events.len()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::{AudioFrame, VideoFrame};
    use bytes::Bytes;

    fn v(dts: i64, key: bool, size: usize) -> Frame {
        Frame::Video(VideoFrame { dts, cts: 0, keyframe: key, data: Bytes::from(vec![0u8; size]) })
    }

    fn a(pts: i64) -> Frame {
        Frame::Audio(AudioFrame { pts, data: Bytes::from_static(&[1, 2, 3]) })
    }

    #[test]
    fn starts_at_keyframe_and_resets_on_next() {
        let mut g = GopCache::new(GopCacheConfig::default());
        g.push(&v(0, false, 10), true);
        g.push(&a(0), true);
        assert_eq!(g.len(), 0, "nothing before the first keyframe");
        g.push(&v(40, true, 10), true);
        g.push(&a(50), true);
        g.push(&v(80, false, 10), true);
        assert_eq!(g.len(), 3);
        g.push(&v(2000, true, 10), true);
        assert_eq!(g.len(), 1);
        assert!(g.events().next().is_some_and(|e| matches!(e, HubEvent::Frame(f) if f.is_keyframe())));
    }

    #[test]
    fn oversized_gop_is_dropped_until_next_keyframe() {
        let cfg = GopCacheConfig { max_bytes: 1000, ..Default::default() };
        let mut g = GopCache::new(cfg);
        g.push(&v(0, true, 400), true);
        g.push(&v(40, false, 400), true);
        assert_eq!(g.len(), 2);
        g.push(&v(80, false, 400), true);
        assert_eq!(g.len(), 0);
        g.push(&v(120, false, 10), true);
        assert_eq!(g.len(), 0);
        g.push(&v(160, true, 10), true);
        assert_eq!(g.len(), 1);
        assert!(g.bytes() <= 1000);
    }

    #[test]
    fn duration_and_frame_bounds() {
        let mut g = GopCache::new(GopCacheConfig { max_frames: 10, ..Default::default() });
        g.push(&v(0, true, 1), true);
        for i in 1..20 {
            g.push(&v(i * 40, false, 1), true);
        }
        assert_eq!(g.len(), 0);
        let mut g = GopCache::new(GopCacheConfig { max_duration_ms: 1000, ..Default::default() });
        g.push(&v(0, true, 1), true);
        g.push(&v(1001, false, 1), true);
        assert_eq!(g.len(), 0);
    }

    #[test]
    fn audio_only_keeps_a_sliding_window() {
        let mut g = GopCache::new(GopCacheConfig::default());
        for i in 0..500 {
            g.push(&a(i * 23), false);
        }
        assert!(g.len() > 10 && g.len() <= 45, "{}", g.len());
    }

    #[test]
    fn disabled_cache_holds_nothing() {
        let mut g = GopCache::new(GopCacheConfig { enabled: false, ..Default::default() });
        g.push(&v(0, true, 1), true);
        assert_eq!(g.len(), 0);
    }
}
