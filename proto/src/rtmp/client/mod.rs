//! The client side of RTMP, sans-IO ([`ClientSession`]): bytes out for the handshake,
//! commands and media; bytes in, decoded messages or flow events out. No sockets, clocks or
//! randomness.
//!
//! Two ways to drive it. A relay (or any production client) starts a flow
//! ([`ClientSession::start`], in `flow`): connect → createStream → publish or play, with
//! every answer turned into a [`ClientEvent`], window acknowledgements both ways, and media
//! sent as pieces sharing the caller's payload. Tests, fuzzing and the benchmark may also
//! build messages one by one (`chunks`, `message`, `command`, `media`: any chunk size,
//! header compression, even malformed sequences) and read raw messages back
//! ([`ClientSession::handle_input`]). Protocol control (Set Chunk Size, acknowledgements,
//! pings) is answered in both.

use std::collections::{HashMap, VecDeque};

use bytes::BytesMut;

use super::amf0::Amf0Value;
use super::chunk::{ChunkDecoder, ChunkEncoder, RawMessage};
use super::handshake::{HANDSHAKE_SIZE, RTMP_VERSION};
use super::message as msg;
use super::{MediaKind, RtmpError};
use crate::piece::Piece;

mod flow;
#[cfg(test)]
mod tests;

pub use flow::{ClientEvent, ClientFailure, ClientRole, ClientStage, ClientState, ConnectParams, NotPublishing};

const EXT: u32 = 0xFF_FFFF;

#[derive(Debug, Clone, Copy)]
struct Last {
    ts: u32,
    field: u32,
    len: usize,
    type_id: u8,
    sid: u32,
}

/// How a [`ClientSession`] encodes what it sends.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Chunk size of what the client sends (change it with [`ClientSession::set_chunk_size`]).
    pub chunk_size: u32,
    /// Repeat the extended timestamp on type-3 continuation chunks (ffmpeg/librtmp do).
    pub repeat_ext_on_continuation: bool,
    /// Use fmt 1/2/3 headers where possible (otherwise always fmt 0).
    pub compress: bool,
    /// Largest message accepted from the server.
    pub max_message_size: u32,
    /// Fills the C1 random bytes (the caller draws it: no OS randomness in here).
    pub rng_seed: u64,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            chunk_size: 128,
            repeat_ext_on_continuation: true,
            compress: true,
            max_message_size: 64 << 20,
            rng_seed: 0,
        }
    }
}

/// Where the handshake is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Handshake {
    /// Waiting for S0 + S1 + S2; C2 (the echo of S1) is still to be sent.
    AwaitServer,
    /// Waiting for S0 + S1 + S2; C2 went out already (see [`ClientSession::handshake`]).
    AwaitServerC2Sent,
    Done,
}

/// The client side of an RTMP connection, sans-IO: it encodes the handshake, commands and
/// media (chunk sizes and header compression chosen by [`ClientConfig`]: fmt 0/1/2/3,
/// extended timestamps, both continuation conventions) and decodes what the server sends
/// into messages ([`Self::handle_input`], which also follows the server's Set Chunk Size).
/// Used by the unit tests (against [`super::ServerSession`] in memory), the integration
/// tests, the fuzz targets and the benchmark; ready for relays.
#[derive(Debug)]
pub struct ClientSession {
    pub config: ClientConfig,
    last: HashMap<u32, Last>,
    tx: f64,
    decoder: ChunkDecoder,
    handshake: Handshake,
    /// What the session queued itself, in order: C2, acknowledgements, ping answers and,
    /// in a flow, C0 + C1, commands and media (media payloads shared, never copied).
    out: VecDeque<Piece>,
    out_bytes: usize,
    /// The flow's encoder (type-0 headers; media without a copy).
    encoder: ChunkEncoder,
    acks: flow::Acks,
    flow: Option<flow::Flow>,
    events: VecDeque<ClientEvent>,
}

impl ClientSession {
    pub fn new(config: ClientConfig) -> Self {
        let decoder = ChunkDecoder::new(config.max_message_size);
        ClientSession {
            config,
            last: HashMap::new(),
            tx: 0.0,
            decoder,
            handshake: Handshake::AwaitServer,
            out: VecDeque::new(),
            out_bytes: 0,
            encoder: ChunkEncoder::default(),
            acks: flow::Acks::default(),
            flow: None,
            events: VecDeque::new(),
        }
    }

    /// C0 + C1: the first bytes to send. C2 follows from [`Self::poll_transmit`] once the
    /// server's S1 arrived.
    pub fn handshake_start(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + HANDSHAKE_SIZE);
        v.push(RTMP_VERSION);
        // time 0, zero version (the plain handshake), then bytes from the seed
        v.extend([0u8; 8]);
        let mut x = self.config.rng_seed | 1;
        v.extend((8..HANDSHAKE_SIZE).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        }));
        v
    }

    /// C0 + C1 + C2 at once, without waiting for S1: for servers that do not check C2 (as
    /// livegate does not; strict servers want [`Self::handshake_start`]).
    pub fn handshake(&mut self) -> Vec<u8> {
        let mut v = self.handshake_start();
        v.extend(std::iter::repeat_n(0u8, HANDSHAKE_SIZE));
        self.handshake = Handshake::AwaitServerC2Sent;
        v
    }

    /// Whether S0 + S1 + S2 arrived.
    pub fn is_handshake_done(&self) -> bool {
        self.handshake == Handshake::Done
    }

    /// The next bytes the session itself wants sent (C2, acknowledgements, pings; in a
    /// flow also its commands and media), in order.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Piece> {
        let p = self.out.pop_front()?;
        self.out_bytes -= p.len();
        Some(p)
    }

    /// Encodes one message as separate chunks (the first with its message header).
    pub fn chunks(&mut self, csid: u32, type_id: u8, sid: u32, ts: u32, payload: &[u8]) -> Vec<Vec<u8>> {
        let prev = self.last.get(&csid).copied();
        let (fmt, field) = match prev {
            Some(p) if self.config.compress && p.sid == sid && ts >= p.ts => {
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
        let mut pieces = payload.chunks(self.config.chunk_size as usize);
        first.extend(pieces.next().unwrap_or(&[]));
        out.push(first);
        for p in pieces {
            let mut c = Vec::new();
            basic(3, &mut c);
            if field >= EXT && self.config.repeat_ext_on_continuation {
                c.extend(field.to_be_bytes());
            }
            c.extend(p);
            out.push(c);
        }
        out
    }

    pub fn message(&mut self, csid: u32, type_id: u8, sid: u32, ts: u32, payload: &[u8]) -> Vec<u8> {
        self.chunks(csid, type_id, sid, ts, payload).concat()
    }

    pub fn command(&mut self, sid: u32, name: &str, values: &[Amf0Value]) -> Vec<u8> {
        self.tx += 1.0;
        let p = msg::command_payload(name, self.tx, values);
        self.message(if sid == 0 { 3 } else { 8 }, msg::COMMAND_AMF0, sid, 0, &p)
    }

    pub fn connect(&mut self, app: &str) -> Vec<u8> {
        self.connect_with(app, Vec::new())
    }

    /// `connect` with more command-object properties (Enhanced RTMP's `fourCcList`,
    /// `capsEx`, ...).
    pub fn connect_with(&mut self, app: &str, extra: Vec<(String, Amf0Value)>) -> Vec<u8> {
        let mut props = vec![
            ("app".to_string(), Amf0Value::string(app)),
            ("type".to_string(), Amf0Value::string("nonprivate")),
            ("tcUrl".to_string(), Amf0Value::string(format!("rtmp://127.0.0.1/{app}"))),
            ("objectEncoding".to_string(), Amf0Value::Number(0.0)),
        ];
        props.extend(extra);
        self.command(0, "connect", &[Amf0Value::Object(props)])
    }

    pub fn create_stream(&mut self) -> Vec<u8> {
        self.command(0, "createStream", &[Amf0Value::Null])
    }

    pub fn publish(&mut self, sid: u32, name: &str) -> Vec<u8> {
        self.command(sid, "publish", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::string("live")])
    }

    pub fn play(&mut self, sid: u32, name: &str) -> Vec<u8> {
        self.command(sid, "play", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::Number(-2000.0)])
    }

    /// Set Chunk Size message; the new size applies to everything encoded afterwards.
    pub fn set_chunk_size(&mut self, size: u32) -> Vec<u8> {
        let m = self.message(2, msg::SET_CHUNK_SIZE, 0, 0, &size.to_be_bytes());
        self.config.chunk_size = size;
        m
    }

    pub fn media(&mut self, sid: u32, kind: MediaKind, ts: u32, payload: &[u8]) -> Vec<u8> {
        let (csid, t) = match kind {
            MediaKind::Audio => (4, msg::AUDIO),
            MediaKind::Video => (6, msg::VIDEO),
        };
        self.message(csid, t, sid, ts, payload)
    }

    /// Consumes what the server sent from `input` (S0 + S1 + S2 first, then chunks) and
    /// appends the messages it completes to `out` (protocol control included, after it is
    /// answered: see the module documentation).
    pub fn handle_input(&mut self, input: &mut BytesMut, out: &mut Vec<RawMessage>) -> Result<(), RtmpError> {
        if !self.take_handshake(input)? {
            return Ok(());
        }
        while let Some(m) = self.next_message(input)? {
            out.push(m);
        }
        Ok(())
    }

    /// Takes S0 + S1 + S2 off `input` while the handshake runs (queueing C2 unless it went
    /// out already); true once it is done.
    fn take_handshake(&mut self, input: &mut BytesMut) -> Result<bool, RtmpError> {
        if self.handshake == Handshake::Done {
            return Ok(true);
        }
        if input.len() < 1 + 2 * HANDSHAKE_SIZE {
            return Ok(false);
        }
        let s = input.split_to(1 + 2 * HANDSHAKE_SIZE);
        self.count_received(s.len());
        if s[0] != RTMP_VERSION {
            return Err(RtmpError::BadHandshakeVersion(s[0]));
        }
        if self.handshake == Handshake::AwaitServer {
            self.push_out(s.freeze().slice(1..1 + HANDSHAKE_SIZE)); // C2 echoes S1
        }
        self.handshake = Handshake::Done;
        Ok(true)
    }

    /// The next complete message off `input`, protocol control answered.
    fn next_message(&mut self, input: &mut BytesMut) -> Result<Option<RawMessage>, RtmpError> {
        let before = input.len();
        let m = self.decoder.decode(input);
        self.count_received(before - input.len());
        let m = m?;
        if let Some(m) = &m {
            self.control(m)?;
        }
        Ok(m)
    }
}
