//! An admitted viewer's FLV body written straight to its socket, off hyper: as WebSocket
//! binary frames (WebSocket-FLV, after hyper's upgrade) or as HTTP/1.1 chunks (HTTP-FLV
//! served by [`super::direct`]). One batch of FLV pieces becomes one frame or chunk,
//! written vectored after its header (the media is never copied). What the client sends
//! is read too: WebSocket frames by [`ClientFrames`], anything on an HTTP-FLV connection
//! is dropped within [`MAX_CLIENT_DATA`] ([`discard`]).

use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::warn;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::flv::FlvBody;
use super::ws_frames::{ClientEvent, ClientFrames, MAX_CLIENT_DATA, MAX_CLIENT_FRAME};
use crate::net::writer::{Halves, Writer};
use crate::{Inline, Piece};

/// Pieces gathered into one frame or chunk at most.
const MAX_PIECES: usize = 256;
/// How long the last bytes (end of stream, a close) may take to go out.
const FINAL_FLUSH: Duration = Duration::from_secs(2);
/// One read of what an HTTP-FLV client sends (dropped at once; on the stack, not kept).
const DISCARD_READ: usize = 16 * 1024;

/// How a batch of FLV pieces goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// One binary WebSocket frame per batch.
    WebSocket,
    /// One HTTP/1.1 chunk per batch (the response head went out before).
    Chunked,
}

impl Framing {
    fn open(self, len: u64) -> Piece {
        match self {
            Framing::WebSocket => ws_header(OpCode::Data(Data::Binary), len),
            Framing::Chunked => Piece::Inline(Inline::build(|w| {
                // at most 16 hex digits and CRLF: it always fits
                let _ = write!(w, "{len:X}\r\n");
            })),
        }
    }

    fn close(self) -> Option<Piece> {
        match self {
            Framing::WebSocket => None,
            Framing::Chunked => Some(Piece::copy_from_slice(b"\r\n")),
        }
    }
}

/// Streams `body` until the stream ends, the client closes or breaks a rule, or the
/// watchdog cancels `kill` (a stalled viewer).
pub(crate) async fn play<S: Halves>(
    io: S,
    mut body: FlvBody,
    kill: CancellationToken,
    peer: SocketAddr,
    framing: Framing,
) {
    let (mut rd, wr) = io.halves();
    let mut writer = Writer::new(wr);
    let mut frames = ClientFrames::default();
    // (an HTTP-FLV connection reads into no buffer of its own: see discard)
    let mut input = BytesMut::with_capacity(if framing == Framing::WebSocket { 256 } else { 0 });
    let mut ignored: u64 = 0;
    let mut closing: Option<(u16, &str)> = None;
    // one wait for the whole play (not a new one, registered and dropped, per select)
    let killed = kill.cancelled();
    tokio::pin!(killed);
    loop {
        // (a stalled viewer is killed while its socket is full: in the flush below)
        tokio::select! {
            more = next_batch(&mut body) => {
                let (len, pieces) = body.take_pieces(MAX_PIECES);
                if len > 0 {
                    writer.queue(framing.open(len));
                    for p in pieces {
                        writer.queue(p);
                    }
                    if let Some(end) = framing.close() {
                        writer.queue(end);
                    }
                }
                if !more {
                    closing = Some((1000, "stream ended"));
                }
            }
            read = read_client(&mut rd, &mut input, &mut ignored, framing),
                if input.len() < 2 * MAX_CLIENT_FRAME as usize =>
            {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                match framing {
                    Framing::WebSocket => closing = client_frames(&mut frames, &mut input, &mut writer, peer),
                    Framing::Chunked => {
                        if ignored > MAX_CLIENT_DATA {
                            warn!(%peer, "HTTP-FLV client sent {ignored} bytes, over {MAX_CLIENT_DATA}; closing");
                            break;
                        }
                    }
                }
            }
        }
        if let Some((code, why)) = closing {
            match framing {
                Framing::WebSocket => {
                    let mut payload = code.to_be_bytes().to_vec();
                    payload.extend_from_slice(why.as_bytes());
                    writer.queue(ws_header(OpCode::Control(Control::Close), payload.len() as u64));
                    writer.queue(Bytes::from(payload));
                }
                // the last chunk
                Framing::Chunked => writer.queue(Bytes::from_static(b"0\r\n\r\n")),
            }
            let _ = tokio::time::timeout(FINAL_FLUSH, writer.flush()).await;
            break;
        }
        // the flush first: the kill is polled (its lock taken) only when the socket is full
        let flushed = tokio::select! {
            biased;
            r = writer.flush() => r,
            _ = &mut killed => break,
        };
        if flushed.is_err() {
            break;
        }
    }
}

/// Reads what the client sent: into `input` (WebSocket frames), or, on an HTTP-FLV
/// connection, all that is readable now, dropped and counted in `ignored` ([`discard`]).
/// `Ok(0)` once the client closed.
async fn read_client<R: AsyncRead + Unpin>(
    rd: &mut R,
    input: &mut BytesMut,
    ignored: &mut u64,
    framing: Framing,
) -> std::io::Result<usize> {
    match framing {
        Framing::WebSocket => rd.read_buf(input).await,
        Framing::Chunked => std::future::poll_fn(|cx| discard(Pin::new(&mut *rd), cx, ignored)).await,
    }
}

/// Drops what an HTTP-FLV client sent (a player has nothing to say there), adding it to
/// `ignored`: everything readable at this poll, read after read, but never more than
/// [`MAX_CLIENT_DATA`] + 1 bytes in all. So the client's first byte past the budget is
/// always the last one taken, however often the play loop gets to turn (one read per turn
/// let a chatty client fill the kernel's buffers with megabytes while a busy server went
/// through its budget 256 bytes a turn). Ready with the bytes read once nothing more is
/// readable after some, the budget is exceeded, or the client closed (`Ok(0)`) or failed.
fn discard<R: AsyncRead>(mut rd: Pin<&mut R>, cx: &mut Context<'_>, ignored: &mut u64) -> Poll<std::io::Result<usize>> {
    let mut buf = [0u8; DISCARD_READ];
    let mut got = 0;
    while *ignored <= MAX_CLIENT_DATA {
        // at most one byte past the budget
        let room = (MAX_CLIENT_DATA + 1 - *ignored).min(DISCARD_READ as u64) as usize;
        let mut read = ReadBuf::new(&mut buf[..room]);
        match rd.as_mut().poll_read(cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Poll::Ready(Ok(got)),
            Poll::Ready(Ok(())) => {
                got += read.filled().len();
                *ignored += read.filled().len() as u64;
            }
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending if got == 0 => return Poll::Pending,
            Poll::Pending => break,
        }
    }
    Poll::Ready(Ok(got))
}

/// Answers what the client's WebSocket frames ask; the close to send when they end the play.
fn client_frames<W>(
    frames: &mut ClientFrames,
    input: &mut BytesMut,
    writer: &mut Writer<W>,
    peer: SocketAddr,
) -> Option<(u16, &'static str)>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    while let Some(ev) = frames.next(input) {
        match ev {
            ClientEvent::Ping(payload) => {
                writer.queue(ws_header(OpCode::Control(Control::Pong), payload.len() as u64));
                writer.queue(payload);
            }
            ClientEvent::Close(code) => return Some((code.unwrap_or(1000), "")),
            ClientEvent::Violation(code, why) => {
                warn!(%peer, "WebSocket-FLV client: {why}; closing");
                return Some((code, why));
            }
        }
    }
    None
}

/// Waits until the body has pieces to send (taken with `FlvBody::take_pieces`); false once
/// the body is over. A new batch is asked for only once the last was written, as hyper
/// does: asking tells the stall watchdog that the socket took it.
async fn next_batch(body: &mut FlvBody) -> bool {
    std::future::poll_fn(|cx| body.poll_ready(cx)).await
}

/// A server WebSocket frame header (final, unmasked, at most 10 bytes) for a payload of
/// `len` bytes.
fn ws_header(opcode: OpCode, len: u64) -> Piece {
    Piece::Inline(Inline::build(|w| {
        let h = FrameHeader { opcode, ..FrameHeader::default() };
        // at most 10 bytes: it always fits
        let _ = h.format(len, w);
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn discard_once<R: AsyncRead + Unpin>(rd: &mut R, ignored: &mut u64) -> std::io::Result<usize> {
        std::future::poll_fn(|cx| discard(Pin::new(&mut *rd), cx, ignored)).await
    }

    #[tokio::test]
    async fn discard_drains_what_is_readable_and_stops_one_byte_past_the_budget() {
        let (mut client, mut server) = tokio::io::duplex(4 << 20);
        let mut ignored = 0;
        // what is readable is taken in one go, whatever the read size
        client.write_all(&[b'x'; 1000]).await.unwrap();
        assert_eq!(discard_once(&mut server, &mut ignored).await.unwrap(), 1000);
        assert_eq!(ignored, 1000);
        // a flood: one poll takes it up to the first byte past the budget, and no more
        let flood = vec![b'x'; 1 << 20];
        client.write_all(&flood).await.unwrap();
        let got = discard_once(&mut server, &mut ignored).await.unwrap();
        assert_eq!(ignored, MAX_CLIENT_DATA + 1);
        assert_eq!(got as u64, MAX_CLIENT_DATA + 1 - 1000);
        client.shutdown().await.unwrap();
        let mut left = Vec::new();
        server.read_to_end(&mut left).await.unwrap();
        assert_eq!(left.len() as u64, 1000 + (1 << 20) - (MAX_CLIENT_DATA + 1), "the rest is not read");
    }

    #[tokio::test]
    async fn discard_sees_the_client_close() {
        let (client, mut server) = tokio::io::duplex(1024);
        drop(client);
        let mut ignored = 0;
        assert_eq!(discard_once(&mut server, &mut ignored).await.unwrap(), 0);
        assert_eq!(ignored, 0);
    }
}
