//! The read side of a stream: one [`Subscription`] per viewer. It starts with the metadata,
//! codec config and GOP cache, then follows the ring; a viewer that lags skips to the latest
//! keyframe and is evicted when it keeps lagging. Viewers park their wakers in the stream's
//! state, under the same lock as the ring, so no wake-up is missed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use thiserror::Error;

use super::{lock, HubEvent, Stream};
use crate::hub::fanout::Cursor;

impl Stream {
    /// Metadata and codec config first, then the GOP cache, then live events.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let mut st = lock(&self.state);
        st.subscribers += 1;
        Subscription { stream: self.clone(), cursor: st.fanout.cursor(), registered: None, eager: false, lag_skips: 0 }
    }

    /// [`Self::subscribe`], woken for every event instead of in batches: for outputs whose
    /// latency is measured in frames (Low-Latency HLS finishes a part when the next frame
    /// arrives), at one wake-up per frame for this one subscription.
    pub fn subscribe_eager(self: &Arc<Self>) -> Subscription {
        let mut sub = self.subscribe();
        sub.eager = true;
        sub
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("viewer evicted: it kept lagging behind live")]
pub struct Evicted;

/// The read side for one viewer.
#[derive(Debug)]
pub struct Subscription {
    stream: Arc<Stream>,
    cursor: Cursor,
    /// The wake epoch and waker this viewer is registered with, if any.
    registered: Option<(u64, Waker)>,
    /// Woken by every event (see [`Stream::subscribe_eager`]).
    eager: bool,
    /// Times this viewer lagged and skipped to the latest keyframe.
    lag_skips: u32,
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

    /// Times this viewer lagged and skipped ahead to the latest keyframe (what it skipped
    /// it never gets).
    pub fn lag_skips(&self) -> u32 {
        self.lag_skips
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
        if self.cursor.is_done() && self.cursor.pending_is_empty() {
            return Poll::Ready(Ok(false));
        }
        match self.recv_inner(out, max.max(1), Some(cx)) {
            Ok(true) => Poll::Ready(Ok(true)),
            Ok(false) if self.cursor.is_done() => Poll::Ready(Ok(false)),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
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
        self.cursor.take_pending(out, max);
        if self.cursor.is_done() || out.len() - start >= max {
            return Ok(out.len() > start);
        }
        let stream = self.stream.clone();
        let mut st = lock(&stream.state);
        let read = st.fanout.read(&mut self.cursor, out, max - (out.len() - start));
        if read.as_ref().map_or(true, |r| r.skipped) {
            self.lag_skips = self.lag_skips.saturating_add(1);
            self.stream.stats.lag_skips.fetch_add(1, Ordering::Relaxed);
            self.stream.observer.lag_skip();
        }
        if read.is_err() {
            drop(st);
            self.stream.count_eviction();
            return Err(Evicted);
        }
        let got = out.len() > start;
        if let (false, false, Some(cx), true) = (got, self.cursor.is_done(), cx.as_deref(), self.eager) {
            let fresh =
                matches!(&self.registered, Some((epoch, w)) if *epoch == st.eager_epoch && w.will_wake(cx.waker()));
            if !fresh {
                let w = cx.waker().clone();
                st.eager.push(w.clone());
                self.registered = Some((st.eager_epoch, w));
            }
            return Ok(got);
        }
        if let (false, false, Some(cx)) = (got, self.cursor.is_done(), cx) {
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
}
