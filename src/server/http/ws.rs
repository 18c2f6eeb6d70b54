//! WebSocket-FLV: the HTTP-FLV stream over a WebSocket at the same URL
//! (`ws://HOST:8080/APP/STREAM.flv`, an HTTP/1.1 upgrade), for players and networks that
//! need WebSockets (mpegts.js plays it). Same admission (keys, callback, viewer limit) and
//! the same body and stall watchdog as HTTP-FLV; each batch of FLV pieces goes out as one
//! binary frame, written vectored after its frame header (no copy of the media).
//!
//! The framing comes from `tungstenite` (frame headers, the accept key); its whole
//! `WebSocket` type is not used because it copies every message into its own buffer. The
//! client's frames are read by [`ClientFrames`] (sans-IO): pings are answered, a close is
//! echoed and ends the play, data frames are ignored within a budget, an oversized frame
//! or a protocol error closes the connection.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tracing::debug;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::response::{empty, text};
use super::socket::{play, Framing};
use super::{Body, HttpContext};
use crate::hub::{Protocol, StreamKey};

/// The largest frame a client may send (control frames are at most 125 bytes).
pub(crate) const MAX_CLIENT_FRAME: u64 = 16 * 1024;
/// Data a client may send over a play, all frames together; it is ignored, and more
/// closes the connection.
pub(crate) const MAX_CLIENT_DATA: u64 = 256 * 1024;

/// Whether `req` asks for a WebSocket (RFC 6455 §4.2.1).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

/// Answers a WebSocket upgrade of `key`'s FLV: `101 Switching Protocols` and a task that
/// streams the FLV once hyper hands over the connection; or the refusal.
pub(crate) async fn serve<B>(
    mut req: Request<B>,
    key: StreamKey,
    query: &str,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
) -> Response<Body> {
    let version_ok = req.headers().get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    let Some(client_key) = req.headers().get(SEC_WEBSOCKET_KEY).map(|k| k.as_bytes().to_vec()) else {
        return text(StatusCode::BAD_REQUEST, "WebSocket upgrade without Sec-WebSocket-Key\n");
    };
    if !version_ok {
        let mut r = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        r.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let (stream, guard) = match super::flv::admit(&key, query, peer, ctx, Protocol::WsFlv).await {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let kill = CancellationToken::new();
    let body = super::flv::start(stream, guard, key, query, peer, ctx, kill.clone(), Protocol::WsFlv);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => play(TokioIo::new(io), body, kill, peer, Framing::WebSocket).await,
            Err(e) => debug!(%peer, "WebSocket upgrade did not complete: {e}"),
        }
    });
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let accept = tungstenite::handshake::derive_accept_key(&client_key);
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}

/// What the client's frames ask of the server.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ClientEvent {
    /// Answer with a pong carrying this payload.
    Ping(Bytes),
    /// The client closes (with its status code, if it gave one).
    Close(Option<u16>),
    /// The client broke a rule: close with this code.
    Violation(u16, &'static str),
}

/// Reads a client's frames (sans-IO): everything but pings and a close is skipped, up to
/// [`MAX_CLIENT_DATA`] in all.
#[derive(Debug, Default)]
pub(crate) struct ClientFrames {
    /// Payload bytes of the current data frame still to skip.
    skip: u64,
    data: u64,
    done: bool,
}

impl ClientFrames {
    /// The next event in `input` (consuming what it read), or None until more arrives.
    pub(crate) fn next(&mut self, input: &mut BytesMut) -> Option<ClientEvent> {
        loop {
            if self.done {
                return None;
            }
            if self.skip > 0 {
                let n = self.skip.min(input.len() as u64);
                let _ = input.split_to(n as usize);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            let mut cursor = Cursor::new(&input[..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(h)) => h,
                Ok(None) => return None,
                Err(_) => return Some(self.violation(1002, "malformed frame")),
            };
            let header_len = cursor.position() as usize;
            if header.mask.is_none() {
                return Some(self.violation(1002, "unmasked client frame"));
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Some(self.violation(1002, "reserved bits set"));
            }
            if len > MAX_CLIENT_FRAME {
                return Some(self.violation(1009, "client frame too large"));
            }
            match header.opcode {
                OpCode::Control(c) => {
                    if len > 125 || !header.is_final {
                        return Some(self.violation(1002, "bad control frame"));
                    }
                    if input.len() < header_len + len as usize {
                        return None;
                    }
                    let _ = input.split_to(header_len);
                    let mut payload = input.split_to(len as usize);
                    if let Some(mask) = header.mask {
                        for (i, b) in payload.iter_mut().enumerate() {
                            *b ^= mask[i % 4];
                        }
                    }
                    match c {
                        Control::Ping => return Some(ClientEvent::Ping(payload.freeze())),
                        Control::Pong => {}
                        Control::Close => {
                            self.done = true;
                            let code = (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]));
                            return Some(ClientEvent::Close(code));
                        }
                        Control::Reserved(_) => return Some(self.violation(1002, "reserved opcode")),
                    }
                }
                OpCode::Data(Data::Reserved(_)) => return Some(self.violation(1002, "reserved opcode")),
                OpCode::Data(_) => {
                    // what a player sends (if anything) is not for a live stream: skipped
                    self.data += len;
                    if self.data > MAX_CLIENT_DATA {
                        return Some(self.violation(1008, "client sent too much data"));
                    }
                    let _ = input.split_to(header_len);
                    self.skip = len;
                }
            }
        }
    }

    fn violation(&mut self, code: u16, why: &'static str) -> ClientEvent {
        self.done = true;
        ClientEvent::Violation(code, why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn frame(opcode: OpCode, payload: &[u8], fin: bool) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = Vec::new();
        FrameHeader { is_final: fin, opcode, mask: Some(mask), ..FrameHeader::default() }
            .format(payload.len() as u64, &mut out)
            .unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn events(frames: &mut ClientFrames, bytes: &[u8]) -> Vec<ClientEvent> {
        let mut input = BytesMut::from(bytes);
        std::iter::from_fn(|| frames.next(&mut input)).collect()
    }

    #[test]
    fn pings_are_answered_data_is_skipped_and_close_ends() {
        let mut wire = frame(OpCode::Data(Data::Text), b"hello", true);
        wire.extend(frame(OpCode::Control(Control::Ping), b"p1", true));
        wire.extend(frame(OpCode::Data(Data::Binary), &[9; 3000], true));
        wire.extend(frame(OpCode::Control(Control::Close), &1001u16.to_be_bytes(), true));
        wire.extend(frame(OpCode::Control(Control::Ping), b"after", true));
        let mut f = ClientFrames::default();
        assert_eq!(
            events(&mut f, &wire),
            vec![ClientEvent::Ping(Bytes::from_static(b"p1")), ClientEvent::Close(Some(1001))]
        );
        // byte by byte: the same
        let mut f = ClientFrames::default();
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        for b in &wire {
            input.extend_from_slice(&[*b]);
            while let Some(ev) = f.next(&mut input) {
                got.push(ev);
            }
        }
        assert_eq!(got, vec![ClientEvent::Ping(Bytes::from_static(b"p1")), ClientEvent::Close(Some(1001))]);
    }

    #[test]
    fn hostile_frames_close_the_connection() {
        let big = frame(OpCode::Data(Data::Binary), &vec![0; MAX_CLIENT_FRAME as usize + 1], true);
        assert_eq!(
            events(&mut ClientFrames::default(), &big),
            vec![ClientEvent::Violation(1009, "client frame too large")]
        );
        // only the header of an oversized frame is needed to refuse it
        assert_eq!(
            events(&mut ClientFrames::default(), &big[..10]),
            vec![ClientEvent::Violation(1009, "client frame too large")]
        );
        let mut unmasked = Vec::new();
        FrameHeader::default().format(2, &mut unmasked).unwrap();
        unmasked.extend_from_slice(b"hi");
        assert_eq!(
            events(&mut ClientFrames::default(), &unmasked),
            vec![ClientEvent::Violation(1002, "unmasked client frame")]
        );
        let long_ping = frame(OpCode::Control(Control::Ping), &[0; 126], true);
        assert_eq!(
            events(&mut ClientFrames::default(), &long_ping),
            vec![ClientEvent::Violation(1002, "bad control frame")]
        );
        // many small data frames: ignored up to the budget, then closed
        let mut f = ClientFrames::default();
        let chunk = frame(OpCode::Data(Data::Binary), &[0; 8000], true);
        let mut got = Vec::new();
        for _ in 0..40 {
            got.extend(events(&mut f, &chunk));
        }
        assert_eq!(got, vec![ClientEvent::Violation(1008, "client sent too much data")]);
    }
}
