//! Vectored socket writes of queued `Bytes` pieces (RTMP chunk headers, WebSocket frame
//! headers and shared payload slices), so a payload is never copied into a per-viewer
//! buffer.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncWrite, AsyncWriteExt};

const MAX_IOVECS: usize = 64;

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
    /// was not written stays queued.
    pub(crate) async fn flush(&mut self) -> std::io::Result<usize> {
        let mut total = 0;
        while !self.queue.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, b) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(b);
                count += 1;
            }
            let mut n = self.sock.write_vectored(&slices[..count]).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            total += n;
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
        // TLS streams hold the last record until flushed; a no-op for TCP
        self.sock.flush().await?;
        Ok(total)
    }
}
