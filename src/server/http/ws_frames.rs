//! What a WebSocket-FLV client sends, read sans-IO: [`ClientFrames`] turns its frames into
//! [`ClientEvent`]s (pings to answer, a close, a broken rule) and skips its data within a
//! budget. Used by `socket` (the play loop, which also bounds what an HTTP-FLV client may
//! send by [`MAX_CLIENT_DATA`]); `ws` only answers the upgrade. A leaf: it imports nothing
//! from the other HTTP modules.

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

/// The largest frame a client may send (control frames are at most 125 bytes).
pub(crate) const MAX_CLIENT_FRAME: u64 = 16 * 1024;
/// Data a client may send over a play, all frames together; it is ignored, and more
/// closes the connection.
pub(crate) const MAX_CLIENT_DATA: u64 = 256 * 1024;

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
