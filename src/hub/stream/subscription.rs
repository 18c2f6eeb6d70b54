//! The read side of a stream: one [`Subscription`] per viewer. It starts with the metadata,
//! codec config and GOP cache, then follows the ring; a viewer that lags skips to the latest
//! keyframe and is evicted when it keeps lagging. Viewers park their wakers in the stream's
//! state, under the same lock as the ring, so no wake-up is missed.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use thiserror::Error;

use super::{lock, HubEvent, State, Stream};

impl Stream {
    /// Metadata and codec config first, then the GOP cache, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let mut st = lock(&self.state);
        st.subscribers += 1;
        let mut pending = VecDeque::with_capacity(st.gop.len() + 3);
        if let Some(m) = &st.metadata {
            pending.push_back(HubEvent::Metadata(m.clone()));
        }
        let has_config = st.codec.video.is_some() || st.codec.audio.is_some();
        if has_config {
            pending.push_back(HubEvent::Config(st.codec.clone()));
        }
        pending.extend(st.gop.events().cloned());
        if st.ended {
            pending.push_back(HubEvent::EndOfStream);
        }
        Subscription {
            stream: self.clone(),
            pending,
            next: st.end_seq(),
            skips: 0,
            config_generation: has_config.then_some(st.codec.generation),
            need_keyframe: false,
            done: false,
            registered: None,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("viewer evicted: it kept lagging behind live")]
pub struct Evicted;

/// The read side for one viewer.
#[derive(Debug)]
pub struct Subscription {
    stream: Arc<Stream>,
    pending: VecDeque<HubEvent>,
    next: u64,
    skips: u32,
    config_generation: Option<u32>,
    need_keyframe: bool,
    done: bool,
    /// The wake epoch and waker this viewer is registered with, if any.
    registered: Option<(u64, Waker)>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.stream.state).subscribers -= 1;
    }
}

impl Subscription {
    pub fn stream(&self) -> &Arc<Stream> {
        &self.stream
    }

    /// The next event; `Ok(None)` once the stream has ended and everything was delivered.
    pub async fn recv(&mut self) -> Result<Option<HubEvent>, Evicted> {
        let mut one = Vec::with_capacity(1);
        if std::future::poll_fn(|cx| self.poll_recv_many(cx, &mut one, 1)).await? {
            Ok(one.pop())
        } else {
            Ok(None)
        }
    }

    /// Waits for at least one event and appends up to `max` to `out`.
    /// Returns false once the stream has ended and everything was delivered.
    pub async fn recv_many(&mut self, out: &mut Vec<HubEvent>, max: usize) -> Result<bool, Evicted> {
        std::future::poll_fn(|cx| self.poll_recv_many(cx, out, max)).await
    }

    /// Appends up to `max` available events to `out`: `Ready(Ok(true))` if any were added,
    /// `Ready(Ok(false))` once the stream has ended and everything was delivered, `Pending`
    /// (the task is woken at the stream's next wake-up) when nothing is available yet.
    pub fn poll_recv_many(
        &mut self,
        cx: &mut Context<'_>,
        out: &mut Vec<HubEvent>,
        max: usize,
    ) -> Poll<Result<bool, Evicted>> {
        if self.done && self.pending.is_empty() {
            return Poll::Ready(Ok(false));
        }
        match self.recv_inner(out, max.max(1), Some(cx)) {
            Ok(true) => Poll::Ready(Ok(true)),
            Ok(false) if self.done => Poll::Ready(Ok(false)),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn observe(&mut self, ev: &HubEvent) {
        match ev {
            HubEvent::Config(c) => self.config_generation = Some(c.generation),
            HubEvent::EndOfStream => self.done = true,
            HubEvent::Frame(f) if f.is_keyframe() => self.need_keyframe = false,
            _ => {}
        }
    }

    /// Appends up to `max` available events to `out` without waiting; true if any were added.
    pub fn try_recv_many(&mut self, out: &mut Vec<HubEvent>, max: usize) -> Result<bool, Evicted> {
        self.recv_inner(out, max, None)
    }

    /// [`Self::try_recv_many`]; with `cx`, registers its waker when nothing was added.
    fn recv_inner(
        &mut self,
        out: &mut Vec<HubEvent>,
        max: usize,
        cx: Option<&mut Context<'_>>,
    ) -> Result<bool, Evicted> {
        let start = out.len();
        while out.len() - start < max {
            let Some(ev) = self.pending.pop_front() else { break };
            self.observe(&ev);
            out.push(ev);
        }
        if self.done || out.len() - start >= max {
            return Ok(out.len() > start);
        }
        let stream = self.stream.clone();
        let mut st = lock(&stream.state);
        let end = st.end_seq();
        if self.is_lagging(&st) {
            self.skips += 1;
            self.stream.stats.lag_skips.fetch_add(1, Ordering::Relaxed);
            self.stream.observer.lag_skip();
            if self.skips > self.stream.config.max_lag_skips {
                self.stream.count_eviction();
                self.done = true;
                return Err(Evicted);
            }
            let latest_key = st.ring.iter().rposition(|e| matches!(e, HubEvent::Frame(f) if f.is_keyframe()));
            // Never back: with a GOP longer than the lag limit the latest keyframe
            // may be behind `next`; then the viewer resumes at the next keyframe.
            self.next = latest_key.map_or(end, |i| st.first_seq + i as u64).max(self.next);
            self.need_keyframe = st.codec.video.is_some();
            if self.config_generation != Some(st.codec.generation) {
                let ev = HubEvent::Config(st.codec.clone());
                self.observe(&ev);
                out.push(ev);
            }
        }
        while self.next < end && out.len() - start < max {
            let idx = (self.next - st.first_seq) as usize;
            self.next += 1;
            let Some(ev) = st.ring.get(idx) else { break };
            if self.need_keyframe && matches!(ev, HubEvent::Frame(f) if f.is_video() && !f.is_keyframe()) {
                continue;
            }
            self.observe(ev);
            out.push(ev.clone());
            if self.done {
                break;
            }
        }
        if self.next >= end {
            self.skips = 0;
        }
        let got = out.len() > start;
        if let (false, false, Some(cx)) = (got, self.done, cx) {
            let fresh = match &self.registered {
                Some((epoch, w)) => *epoch == st.wake_epoch && w.will_wake(cx.waker()),
                None => false,
            };
            if !fresh {
                // wakers of viewers that left stay until the next wake-up; when a stream that
                // does not wake (a silent publisher) sees many viewers come and go, wake them all
                // early: the live ones register again, the others are dropped
                let stale = if st.waiters.len() >= 2 * st.subscribers + 64 {
                    st.wake_epoch += 1;
                    std::mem::take(&mut st.waiters)
                } else {
                    Vec::new()
                };
                let w = cx.waker().clone();
                st.waiters.push(w.clone());
                self.registered = Some((st.wake_epoch, w));
                drop(st);
                for w in stale {
                    w.wake();
                }
            }
        }
        Ok(got)
    }

    fn is_lagging(&self, st: &State) -> bool {
        if self.next < st.first_seq {
            return true;
        }
        if self.next < st.timeline_seq {
            // The viewer is still before a timestamp jump: the media-time
            // distance to live says nothing; the ring bound still applies.
            return false;
        }
        let idx = (self.next - st.first_seq) as usize;
        match st.ring.get(idx) {
            Some(HubEvent::Frame(f)) => st.newest_dts.saturating_sub(f.dts()) > self.stream.config.max_lag_ms as i64,
            _ => false,
        }
    }
}
