//! Test-only RTMP client: encodes a handshake, commands and media with chosen chunk sizes and
//! header compression (fmt 0/1/2/3, extended timestamps, both continuation conventions), and
//! decodes the server's output with our own `ChunkDecoder`. Drives `ServerSession` in memory.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};

use super::amf0::Amf0Value;
use super::chunk::{ChunkDecoder, RawMessage};
use super::handshake::{HANDSHAKE_SIZE, RTMP_VERSION};
use super::message::{self as msg, Command};
use super::{MediaKind, RequestId, ServerSession, SessionEvent};

const EXT: u32 = 0xFF_FFFF;

#[derive(Clone, Copy)]
struct Last {
    ts: u32,
    field: u32,
    len: usize,
    type_id: u8,
    sid: u32,
}

pub(crate) struct TestClient {
    pub chunk_size: u32,
    /// Repeat the extended timestamp on type-3 continuation chunks (ffmpeg/librtmp do).
    pub repeat_ext_on_continuation: bool,
    /// Use fmt 1/2/3 headers where possible (otherwise always fmt 0).
    pub compress: bool,
    last: HashMap<u32, Last>,
    tx: f64,
    decoder: ChunkDecoder,
    inbuf: BytesMut,
    handshake_skipped: bool,
}

impl TestClient {
    pub(crate) fn new() -> Self {
        TestClient {
            chunk_size: 128,
            repeat_ext_on_continuation: true,
            compress: true,
            last: HashMap::new(),
            tx: 0.0,
            decoder: ChunkDecoder::new(64 << 20),
            inbuf: BytesMut::new(),
            handshake_skipped: false,
        }
    }

    /// C0 + C1 + C2 (plain handshake; the server does not validate C2).
    pub(crate) fn handshake(&self) -> Vec<u8> {
        let mut v = vec![RTMP_VERSION];
        v.extend((0..2 * HANDSHAKE_SIZE).map(|i| (i % 251) as u8));
        v
    }

    /// Encodes one message as separate chunks (first with its message header).
    pub(crate) fn chunks(&mut self, csid: u32, type_id: u8, sid: u32, ts: u32, payload: &[u8]) -> Vec<Vec<u8>> {
        let prev = self.last.get(&csid).copied();
        let (fmt, field) = match prev {
            Some(p) if self.compress && p.sid == sid && ts >= p.ts => {
                let delta = ts - p.ts;
                if p.len != payload.len() || p.type_id != type_id {
                    (1, delta)
                } else if delta != p.field {
                    (2, delta)
                } else {
                    (3, delta)
                }
            }
            _ => (0, ts),
        };
        self.last.insert(csid, Last { ts, field, len: payload.len(), type_id, sid });
        let basic = |fmt: u8, out: &mut Vec<u8>| match csid {
            2..=63 => out.push((fmt << 6) | csid as u8),
            64..=319 => out.extend([fmt << 6, (csid - 64) as u8]),
            _ => {
                out.push((fmt << 6) | 1);
                out.extend(((csid - 64) as u16).to_le_bytes());
            }
        };
        let mut first = Vec::new();
        basic(fmt, &mut first);
        if fmt <= 2 {
            first.extend(&field.min(EXT).to_be_bytes()[1..]);
        }
        if fmt <= 1 {
            first.extend(&(payload.len() as u32).to_be_bytes()[1..]);
            first.push(type_id);
        }
        if fmt == 0 {
            first.extend(sid.to_le_bytes());
        }
        if field >= EXT {
            first.extend(field.to_be_bytes());
        }
        let mut out = Vec::new();
        let mut pieces = payload.chunks(self.chunk_size as usize);
        first.extend(pieces.next().unwrap_or(&[]));
        out.push(first);
        for p in pieces {
            let mut c = Vec::new();
            basic(3, &mut c);
            if field >= EXT && self.repeat_ext_on_continuation {
                c.extend(field.to_be_bytes());
            }
            c.extend(p);
            out.push(c);
        }
        out
    }

    pub(crate) fn message(&mut self, csid: u32, type_id: u8, sid: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
        self.chunks(csid, type_id, sid, ts, payload).concat()
    }

    pub(crate) fn command(&mut self, sid: u32, name: &str, values: &[Amf0Value]) -> Vec<u8> {
        self.tx += 1.0;
        let p = msg::command_payload(name, self.tx, values);
        self.message(if sid == 0 { 3 } else { 8 }, msg::COMMAND_AMF0, sid, 0, &p)
    }

    pub(crate) fn connect(&mut self, app: &str) -> Vec<u8> {
        let obj = Amf0Value::object([
            ("app", Amf0Value::string(app)),
            ("type", Amf0Value::string("nonprivate")),
            ("tcUrl", Amf0Value::string(format!("rtmp://127.0.0.1/{app}"))),
            ("objectEncoding", Amf0Value::Number(0.0)),
        ]);
        self.command(0, "connect", &[obj])
    }

    pub(crate) fn create_stream(&mut self) -> Vec<u8> {
        self.command(0, "createStream", &[Amf0Value::Null])
    }

    pub(crate) fn publish(&mut self, sid: u32, name: &str) -> Vec<u8> {
        self.command(sid, "publish", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::string("live")])
    }

    pub(crate) fn play(&mut self, sid: u32, name: &str) -> Vec<u8> {
        self.command(sid, "play", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::Number(-2000.0)])
    }

    /// Set Chunk Size message; the new size applies to everything encoded afterwards.
    pub(crate) fn set_chunk_size(&mut self, size: u32) -> Vec<u8> {
        let m = self.message(2, msg::SET_CHUNK_SIZE, 0, 0, &size.to_be_bytes());
        self.chunk_size = size;
        m
    }

    pub(crate) fn media(&mut self, sid: u32, kind: MediaKind, ts: u32, payload: &[u8]) -> Vec<u8> {
        let (csid, t) = match kind {
            MediaKind::Audio => (4, msg::AUDIO),
            MediaKind::Video => (6, msg::VIDEO),
        };
        self.message(csid, t, sid, ts, payload)
    }

    /// Drains the server's output and decodes it (skipping S0/S1/S2) into messages.
    pub(crate) fn receive(&mut self, server: &mut ServerSession) -> Vec<RawMessage> {
        while let Some(b) = server.poll_transmit() {
            self.inbuf.put_slice(&b);
        }
        assert_eq!(server.pending_transmit_bytes(), 0);
        if !self.handshake_skipped {
            if self.inbuf.len() < 1 + 2 * HANDSHAKE_SIZE {
                return Vec::new();
            }
            let _ = self.inbuf.split_to(1 + 2 * HANDSHAKE_SIZE);
            self.handshake_skipped = true;
        }
        let mut out = Vec::new();
        while let Some(m) = self.decoder.decode(&mut self.inbuf).expect("server output decodes") {
            if m.type_id == msg::SET_CHUNK_SIZE {
                let size = u32::from_be_bytes(m.payload[..4].try_into().unwrap());
                self.decoder.set_chunk_size(size).unwrap();
            }
            out.push(m);
        }
        out
    }

    /// Received commands (name, decoded command) only.
    pub(crate) fn receive_commands(&mut self, server: &mut ServerSession) -> Vec<Command> {
        self.receive(server)
            .into_iter()
            .filter(|m| m.type_id == msg::COMMAND_AMF0)
            .map(|m| Command::parse(m.type_id, &m.payload).unwrap())
            .collect()
    }
}

/// Feeds `pieces` one after another, accepting every publish/play request as soon as it is
/// raised (re-running `handle_input` after each decision), and returns all events.
pub(crate) fn drive<'a>(server: &mut ServerSession, pieces: impl IntoIterator<Item = &'a [u8]>) -> Vec<SessionEvent> {
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    for piece in pieces {
        input.extend_from_slice(piece);
        loop {
            server.handle_input(&mut input).expect("handle_input");
            let mut decided = false;
            while let Some(ev) = server.poll_event() {
                if let SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } = ev {
                    server.accept(req);
                    decided = true;
                }
                events.push(ev);
            }
            if !decided {
                break;
            }
        }
        // Keep output from growing across a long byte-by-byte feed.
        while server.poll_transmit().is_some() {}
    }
    events
}

pub(crate) fn request_id(ev: &SessionEvent) -> Option<RequestId> {
    match ev {
        SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } => Some(*req),
        _ => None,
    }
}

pub(crate) fn bytes_in(piece: &Bytes, whole: &Bytes) -> bool {
    let (a, b) = (whole.as_ptr() as usize, piece.as_ptr() as usize);
    b >= a && b + piece.len() <= a + whole.len()
}
