//! Vectored socket writes of queued `Bytes` pieces (RTMP chunk headers, WebSocket frame
//! headers and shared payload slices), so a payload is never copied into a per-viewer
//! buffer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

const MAX_IOVECS: usize = 64;
/// Queue slots kept reserved between bursts.
const KEEP_QUEUE: usize = 16;

pub(crate) struct Writer<W> {
    sock: W,
    queue: VecDeque<Bytes>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(crate) fn new(sock: W) -> Self {
        Self { sock, queue: VecDeque::new() }
    }

    pub(crate) fn queue(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.queue.push_back(b);
        }
    }

    /// Writes everything queued; returns the bytes written. Cancel-safe: what
    /// was not written stays queued. (A poll function, so the iovec array lives on the
    /// stack while polled instead of in every waiting connection's future.)
    pub(crate) async fn flush(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        std::future::poll_fn(|cx| self.poll_write_queue(cx, &mut total)).await?;
        // TLS streams hold the last record until flushed; a no-op for TCP
        self.sock.flush().await?;
        if self.queue.is_empty() && self.queue.capacity() > KEEP_QUEUE {
            // a join's burst (a whole GOP of pieces) need not stay reserved
            self.queue.shrink_to(KEEP_QUEUE);
        }
        Ok(total)
    }

    fn poll_write_queue(&mut self, cx: &mut Context<'_>, total: &mut usize) -> Poll<std::io::Result<()>> {
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            let mut n = ready!(Pin::new(&mut self.sock).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into()));
            }
            *total += n;
            while n > 0 {
                let Some(front) = self.queue.front_mut() else { break };
                if front.len() <= n {
                    n -= front.len();
                    self.queue.pop_front();
                } else {
                    front.advance(n);
                    n = 0;
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}
