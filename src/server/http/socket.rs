//! An admitted viewer's FLV body written straight to its socket, off hyper: as WebSocket
//! binary frames (WebSocket-FLV, after hyper's upgrade) or as HTTP/1.1 chunks (HTTP-FLV
//! served by [`super::direct`]). One batch of FLV pieces becomes one frame or chunk,
//! written vectored after its header (the media is never copied). What the client sends
//! is read too: WebSocket frames by [`ClientFrames`], anything on an HTTP-FLV connection
//! is ignored within [`MAX_CLIENT_DATA`].

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::flv::FlvBody;
use super::ws::{ClientEvent, ClientFrames, MAX_CLIENT_DATA, MAX_CLIENT_FRAME};
use crate::server::writer::{Halves, Writer};
use crate::{Inline, Piece};

/// Pieces gathered into one frame or chunk at most.
const MAX_PIECES: usize = 256;
/// How long the last bytes (end of stream, a close) may take to go out.
const FINAL_FLUSH: Duration = Duration::from_secs(2);

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
    let mut input = BytesMut::with_capacity(256);
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
            read = rd.read_buf(&mut input), if input.len() < 2 * MAX_CLIENT_FRAME as usize => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                match framing {
                    Framing::WebSocket => closing = client_frames(&mut frames, &mut input, &mut writer, peer),
                    Framing::Chunked => {
                        // a player has nothing to say on an HTTP-FLV connection
                        ignored += input.len() as u64;
                        input.clear();
                        if ignored > MAX_CLIENT_DATA {
                            warn!(%peer, "HTTP-FLV client sent {ignored} bytes; closing");
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
