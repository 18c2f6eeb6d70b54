//! Vectored socket writes of queued pieces (RTMP chunk headers, FLV tag headers and
//! WebSocket frame headers held inline, shared payloads), so a payload is never copied into
//! a per-viewer buffer.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use crate::Piece;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const MAX_IOVECS: usize = 64;

/// A connection taken apart into what reads and what writes it, which a viewer polls in
/// turn on every batch. A TCP socket splits into owned halves that share it by reference
/// count; `tokio::io::split`, used for the other streams (TLS, hyper's upgraded
/// connection), takes a lock on every poll of either half.
pub(crate) trait Halves: AsyncRead + AsyncWrite + Sized {
    type Read: AsyncRead + Unpin + Send + 'static;
    type Write: AsyncWrite + Unpin + Send + 'static;
    fn halves(self) -> (Self::Read, Self::Write);
}

impl Halves for TcpStream {
    type Read = OwnedReadHalf;
    type Write = OwnedWriteHalf;
    fn halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

/// Split with `tokio::io::split` (a lock per poll).
macro_rules! locked_halves {
    ($t:ty) => {
        impl Halves for $t {
            type Read = tokio::io::ReadHalf<$t>;
            type Write = tokio::io::WriteHalf<$t>;
            fn halves(self) -> (Self::Read, Self::Write) {
                tokio::io::split(self)
            }
        }
    };
}
locked_halves!(tokio_rustls::server::TlsStream<TcpStream>);
locked_halves!(hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>);
/// Queue slots kept reserved between bursts.
const KEEP_QUEUE: usize = 24;

pub(crate) struct Writer<W> {
    sock: W,
    queue: VecDeque<Piece>,
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub(crate) fn new(sock: W) -> Self {
        Self { sock, queue: VecDeque::new() }
    }

    pub(crate) fn queue(&mut self, b: impl Into<Piece>) {
        self.queue.push_back(b.into());
    }

    /// Queues every piece of `pieces` (left empty). When nothing is queued, the two queues
    /// are swapped: no piece moves, and a batch touches one buffer of its viewer, not two.
    pub(crate) fn append(&mut self, pieces: &mut VecDeque<Piece>) {
        if self.queue.is_empty() {
            std::mem::swap(&mut self.queue, pieces);
        } else {
            self.queue.append(pieces);
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
        loop {
            // empty pieces are dropped here, the one place that writes: a write of only empty
            // pieces would take nothing and read as a closed socket
            while self.queue.front().is_some_and(|p| p.is_empty()) {
                self.queue.pop_front();
            }
            if self.queue.is_empty() {
                break;
            }
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
