//! The server side of one RTMP connection, sans-IO: bytes in, events and bytes out.
//!
//! `handle_input` runs the handshake, decodes chunks and answers protocol control and
//! command messages itself; decisions (may this publish/play go ahead?) are raised as
//! [`SessionEvent`]s and answered with [`ServerSession::accept`] / [`ServerSession::reject`].
//! Outgoing bytes are pulled with `poll_transmit`. No sockets, no clocks, no tokio.

use std::collections::{HashMap, VecDeque};

/// Outgoing piece slots kept reserved once the queue drains.
const KEEP_OUT: usize = 32;

use bytes::{Bytes, BytesMut};

use super::amf0::Amf0Value;
use super::chunk::{ChunkDecoder, ChunkEncoder, RawMessage};
use super::handshake::ServerHandshake;
use super::message::{self as msg, Command};
use super::RtmpError;
use crate::piece::Piece;

/// Streams (createStream / publish / play targets) one connection may have at once.
const MAX_STREAMS: usize = 16;

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Largest message length accepted; larger declared lengths are an error.
    pub max_message_size: u32,
    /// Chunk size we announce and use for output.
    pub out_chunk_size: u32,
    pub window_ack_size: u32,
    pub peer_bandwidth: u32,
    /// Seed of the handshake's random bytes (the caller draws it; the session draws no
    /// OS randomness).
    pub rng_seed: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_message_size: 8 * 1024 * 1024,
            out_chunk_size: 65536,
            window_ack_size: 2_500_000,
            peer_bandwidth: 2_500_000,
            rng_seed: 0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RequestId(pub u64);

pub use crate::media::MediaKind;

/// What an Enhanced RTMP client announced in `connect`: the codecs it handles
/// (`fourCcList`, and the keys of `videoFourCcInfoMap`/`audioFourCcInfoMap` whose flags say
/// it can decode or forward them; `*` is every codec) and its `capsEx` flags. A client
/// that announced nothing (legacy, or ffmpeg playing) has `codecs: None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientCapabilities {
    pub codecs: Option<Vec<String>>,
    pub caps_ex: u32,
}

impl ClientCapabilities {
    /// Whether the client announced `fourcc` (or `*`). None when it announced no list.
    pub fn announced(&self, fourcc: &[u8; 4]) -> Option<bool> {
        let list = self.codecs.as_ref()?;
        Some(list.iter().any(|c| c == "*" || c.as_bytes() == fourcc))
    }

    pub(crate) fn parse(cmd: &Amf0Value) -> Self {
        const CAN_DECODE: f64 = 1.0;
        const CAN_FORWARD: f64 = 4.0;
        let mut codecs: Option<Vec<String>> = None;
        if let Some(Amf0Value::StrictArray(list)) = cmd.get("fourCcList") {
            codecs = Some(list.iter().filter_map(Amf0Value::as_str).take(64).map(str::to_string).collect());
        }
        for map in ["videoFourCcInfoMap", "audioFourCcInfoMap"] {
            let Some(props) = cmd.get(map).and_then(Amf0Value::properties) else { continue };
            let list = codecs.get_or_insert_with(Vec::new);
            for (fourcc, flags) in props.iter().take(64) {
                let flags = flags.as_number().unwrap_or(0.0) as u32;
                if flags & (CAN_DECODE as u32 | CAN_FORWARD as u32) != 0 && !list.contains(fourcc) {
                    list.push(fourcc.clone());
                }
            }
        }
        let caps_ex = cmd.get("capsEx").and_then(Amf0Value::as_number).unwrap_or(0.0);
        Self { codecs, caps_ex: if caps_ex.is_finite() && caps_ex >= 0.0 { caps_ex as u32 } else { 0 } }
    }
}

/// `capsEx` bits (Enhanced RTMP v2): reconnect request, multitrack, ModEx, nanosecond
/// timestamp offsets.
pub const CAPS_EX_RECONNECT: u32 = 0x01;
pub const CAPS_EX_MULTITRACK: u32 = 0x02;
pub const CAPS_EX_MODEX: u32 = 0x04;
pub const CAPS_EX_TIMESTAMP_NANO_OFFSET: u32 = 0x08;

/// The FourCCs this server ingests and forwards.
pub const VIDEO_FOURCCS: [&str; 4] = ["avc1", "hvc1", "av01", "vp09"];
pub const AUDIO_FOURCCS: [&str; 6] = ["mp4a", "Opus", "fLaC", "ac-3", "ec-3", ".mp3"];

#[derive(Debug, Clone, PartialEq)]
pub enum SessionEvent {
    /// connect was answered (`_result` already queued).
    Connected {
        app: String,
        tc_url: Option<String>,
        caps: ClientCapabilities,
    },
    PublishRequested {
        req: RequestId,
        stream_id: u32,
        app: String,
        name: String,
        query: String,
    },
    PlayRequested {
        req: RequestId,
        stream_id: u32,
        app: String,
        name: String,
        query: String,
    },
    /// Audio/video of an accepted publish; `payload` is the FLV tag body as received.
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// AMF0 `"onMetaData", object` of an accepted publish.
    Metadata {
        payload: Bytes,
    },
    Unpublished,
    PlayStopped,
    /// A play-control command on a stream that is playing (the driver answers it).
    PlayControl {
        stream_id: u32,
        control: PlayControl,
    },
}

/// What a viewer asked of its play.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlayControl {
    /// `pause` true (stop media) or false (resume at the live edge).
    Pause(bool),
    /// `receiveAudio`: turn audio off or on.
    ReceiveAudio(bool),
    /// `receiveVideo`: turn video off or on (on: from the next keyframe).
    ReceiveVideo(bool),
    /// `seek` to a position in milliseconds (a live stream cannot).
    Seek(f64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamRole {
    Idle,
    PublishPending(RequestId),
    Publishing,
    PlayPending(RequestId),
    Playing,
}

#[derive(Debug)]
struct Connection {
    app: String,
    app_query: String,
}

/// One RTMP server connection.
#[derive(Debug)]
pub struct ServerSession {
    config: SessionConfig,
    handshake: ServerHandshake,
    decoder: ChunkDecoder,
    encoder: ChunkEncoder,
    events: VecDeque<SessionEvent>,
    out: VecDeque<Piece>,
    out_bytes: usize,
    conn: Option<Connection>,
    streams: HashMap<u32, StreamRole>,
    next_stream_id: u32,
    next_request: u64,
    /// Total bytes received (wraps, as the Acknowledgement sequence number does).
    bytes_received: u32,
    unacked: u64,
    peer_window: u32,
    /// A publish/play request is waiting for accept/reject: input processing is paused.
    awaiting_decision: bool,
}

impl ServerSession {
    pub fn new(config: SessionConfig) -> Self {
        ServerSession {
            decoder: ChunkDecoder::new(config.max_message_size),
            handshake: ServerHandshake::new(config.rng_seed),
            config,
            encoder: ChunkEncoder::default(),
            events: VecDeque::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            conn: None,
            streams: HashMap::new(),
            next_stream_id: 1,
            next_request: 0,
            bytes_received: 0,
            unacked: 0,
            peer_window: 0,
            awaiting_decision: false,
        }
    }

    /// Counts unfinished incoming messages in a budget shared with other sessions (see
    /// [`ChunkDecoder::set_shared_budget`]).
    pub fn set_shared_budget(&mut self, shared: Option<std::sync::Arc<dyn super::chunk::SharedBudget>>) -> bool {
        self.decoder.set_shared_budget(shared)
    }

    pub fn is_handshake_done(&self) -> bool {
        self.handshake.is_done()
    }

    /// Consumes as many complete units from `input` as possible (leaving a partial remainder).
    /// Errors are fatal for the connection.
    ///
    /// After raising `PublishRequested` / `PlayRequested` the session stops consuming input
    /// until [`accept`](Self::accept) or [`reject`](Self::reject) is called for it; call
    /// `handle_input` again afterwards to process what is still buffered. (ffmpeg and OBS wait
    /// for the onStatus reply anyway; this keeps pipelined media of a not-yet-accepted publish
    /// from being dropped or buffered without bound.)
    pub fn handle_input(&mut self, input: &mut BytesMut) -> Result<(), RtmpError> {
        let before = input.len();
        let result = self.process(input);
        let consumed = (before - input.len()) as u64;
        self.bytes_received = self.bytes_received.wrapping_add(consumed as u32);
        self.unacked += consumed;
        if self.peer_window > 0 && self.unacked >= self.peer_window as u64 {
            self.unacked = 0;
            self.queue_control(msg::ACKNOWLEDGEMENT, msg::u32_payload(self.bytes_received));
        }
        result
    }

    fn process(&mut self, input: &mut BytesMut) -> Result<(), RtmpError> {
        if !self.handshake.is_done() {
            if let Some(reply) = self.handshake.handle_input(input)? {
                self.push_out(reply);
            }
            if !self.handshake.is_done() {
                return Ok(());
            }
        }
        while !self.awaiting_decision {
            let Some(m) = self.decoder.decode(input)? else { break };
            self.handle_message(m)?;
        }
        Ok(())
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<SessionEvent> {
        self.events.pop_front()
    }

    /// Outgoing bytes in order. Media queued with `send_media` comes out as chunk-header
    /// pieces (held inline) and the payload itself (or zero-copy slices of it).
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Piece> {
        let Some(b) = self.out.pop_front() else {
            self.release_drained_out();
            return None;
        };
        self.out_bytes -= b.len();
        Some(b)
    }

    /// Everything queued to send, in order, handed to `sink` as the session's own queue:
    /// what `sink` takes (all of it, or a swap with an empty queue) is sent, what it leaves
    /// stays queued. One call per batch instead of a [`Self::poll_transmit`] per piece.
    pub fn transmit_with(&mut self, sink: impl FnOnce(&mut VecDeque<Piece>)) {
        sink(&mut self.out);
        self.out_bytes = self.out.iter().map(|p| p.len()).sum();
        if self.out.is_empty() {
            self.release_drained_out();
        }
    }

    /// The transmit queue was drained: a join's burst (a GOP's pieces) is not kept reserved
    /// for the viewer's life.
    fn release_drained_out(&mut self) {
        if self.out.capacity() > KEEP_OUT {
            self.out.shrink_to(KEEP_OUT);
        }
    }

    pub fn pending_transmit_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Lets a requested publish or play go ahead.
    pub fn accept(&mut self, req: RequestId) {
        self.awaiting_decision = self.awaiting_other(req);
        let Some((stream_id, role)) = self.find_request(req) else {
            tracing::debug!(?req, "accept for an unknown or withdrawn request");
            return;
        };
        match role {
            StreamRole::PublishPending(_) => {
                self.streams.insert(stream_id, StreamRole::Publishing);
                self.queue_user_control(msg::UC_STREAM_BEGIN, stream_id);
                self.queue_status(stream_id, "status", "NetStream.Publish.Start", "Start publishing");
            }
            StreamRole::PlayPending(_) => {
                self.streams.insert(stream_id, StreamRole::Playing);
                self.queue_user_control(msg::UC_STREAM_BEGIN, stream_id);
                self.queue_status(stream_id, "status", "NetStream.Play.Reset", "Playing and resetting");
                self.queue_status(stream_id, "status", "NetStream.Play.Start", "Started playing");
                // No |RtmpSampleAccess / NetStream.Data.Start data messages: only Flash
                // used them, and ffmpeg turns each into a spurious data stream.
            }
            _ => {}
        }
    }

    /// Refuses a requested publish or play with an error-level onStatus carrying `code`.
    /// The caller should flush output and close the connection.
    pub fn reject(&mut self, req: RequestId, code: &str, description: &str) {
        self.awaiting_decision = self.awaiting_other(req);
        let Some((stream_id, _)) = self.find_request(req) else {
            return;
        };
        self.streams.insert(stream_id, StreamRole::Idle);
        self.queue_status(stream_id, "error", code, description);
    }

    /// Sends a data message (type 18) with `payload` (AMF0 "onMetaData" + object) as given.
    pub fn send_metadata(&mut self, stream_id: u32, payload: Bytes) {
        self.send_message(msg::CSID_STREAM, msg::DATA_AMF0, stream_id, 0, &[], payload);
    }

    /// Sends one audio/video message (FLV tag body) without copying the payload.
    pub fn send_media(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, payload: Bytes) {
        self.send_media_parts(stream_id, kind, timestamp, &[], payload);
    }

    /// Sends one audio/video message whose FLV tag body is `header` (the few
    /// codec bytes, copied) followed by `payload` (shared, never copied).
    pub fn send_media_parts(&mut self, stream_id: u32, kind: MediaKind, timestamp: u32, header: &[u8], payload: Bytes) {
        let (csid, type_id) = match kind {
            MediaKind::Audio => (msg::CSID_AUDIO, msg::AUDIO),
            MediaKind::Video => (msg::CSID_VIDEO, msg::VIDEO),
        };
        self.send_message(csid, type_id, stream_id, timestamp, header, payload);
    }

    /// Queues one message whose body is `header` (copied) followed by `payload` (shared):
    /// chunk headers are held inline, the payload goes out as itself (or slices of it).
    fn send_message(&mut self, csid: u32, type_id: u8, stream_id: u32, timestamp: u32, header: &[u8], payload: Bytes) {
        let enc = &self.encoder;
        let (out, out_bytes) = (&mut self.out, &mut self.out_bytes);
        enc.write_zero_copy(
            |b| {
                *out_bytes += b.len();
                out.push_back(b)
            },
            csid,
            timestamp,
            type_id,
            stream_id,
            header,
            payload,
        );
    }

    /// Enhanced RTMP v2: asks the client to reconnect (`NetConnection.Connect.ReconnectRequest`
    /// on the NetConnection), to `tc_url` when given, else to the URL it is connected to.
    /// Only for clients that announced the reconnect capability (`capsEx` bit 1).
    pub fn send_reconnect_request(&mut self, tc_url: Option<&str>, description: &str) {
        let mut status = msg::status_object("status", "NetConnection.Connect.ReconnectRequest", description);
        if let (Some(url), Amf0Value::Object(props)) = (tc_url, &mut status) {
            props.push(("tcUrl".to_string(), Amf0Value::string(url)));
        }
        self.queue_command(0, "onStatus", 0.0, &[Amf0Value::Null, status]);
    }

    /// Answers a viewer's `pause`: `NetStream.Pause.Notify`, or on resuming Stream Begin and
    /// `NetStream.Unpause.Notify`.
    pub fn send_pause_notify(&mut self, stream_id: u32, paused: bool) {
        if paused {
            self.queue_status(stream_id, "status", "NetStream.Pause.Notify", "Paused live stream");
        } else {
            self.queue_user_control(msg::UC_STREAM_BEGIN, stream_id);
            self.queue_status(stream_id, "status", "NetStream.Unpause.Notify", "Resumed live stream at its live edge");
        }
    }

    /// Tells a viewer the publisher went away: onStatus NetStream.Play.UnpublishNotify + StreamEOF.
    pub fn send_end_of_stream(&mut self, stream_id: u32) {
        self.queue_status(stream_id, "status", "NetStream.Play.UnpublishNotify", "Stream is now unpublished");
        self.queue_user_control(msg::UC_STREAM_EOF, stream_id);
    }

    fn awaiting_other(&self, req: RequestId) -> bool {
        self.streams
            .values()
            .any(|r| matches!(r, StreamRole::PublishPending(x) | StreamRole::PlayPending(x) if *x != req))
    }

    fn find_request(&self, req: RequestId) -> Option<(u32, StreamRole)> {
        self.streams.iter().find_map(|(&sid, &role)| match role {
            StreamRole::PublishPending(r) | StreamRole::PlayPending(r) if r == req => Some((sid, role)),
            _ => None,
        })
    }

    // ---- output helpers ----

    fn push_out(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.out_bytes += b.len();
            self.out.push_back(Piece::Shared(b));
        }
    }

    fn queue_message(&mut self, csid: u32, timestamp: u32, type_id: u8, stream_id: u32, payload: &[u8]) {
        let mut buf = BytesMut::with_capacity(payload.len() + 16);
        self.encoder.write(&mut buf, csid, timestamp, type_id, stream_id, payload);
        self.push_out(buf.freeze());
    }

    fn queue_control(&mut self, type_id: u8, payload: Bytes) {
        self.queue_message(msg::CSID_CONTROL, 0, type_id, 0, &payload);
    }

    fn queue_user_control(&mut self, event: u16, value: u32) {
        self.queue_control(msg::USER_CONTROL, msg::user_control_payload(event, value));
    }

    fn queue_command(&mut self, stream_id: u32, name: &str, transaction_id: f64, values: &[Amf0Value]) {
        let csid = if stream_id == 0 { msg::CSID_COMMAND } else { msg::CSID_STREAM };
        let payload = msg::command_payload(name, transaction_id, values);
        self.queue_message(csid, 0, msg::COMMAND_AMF0, stream_id, &payload);
    }

    /// Sends an onStatus notification on `stream_id` (e.g. a publisher told the server is closing).
    pub fn send_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        self.queue_status(stream_id, level, code, description);
    }

    fn queue_status(&mut self, stream_id: u32, level: &str, code: &str, description: &str) {
        let status = msg::status_object(level, code, description);
        self.queue_command(stream_id, "onStatus", 0.0, &[Amf0Value::Null, status]);
    }

    fn queue_call_failed(&mut self, transaction_id: f64, description: &str) {
        if transaction_id != 0.0 {
            let status = msg::status_object("error", "NetConnection.Call.Failed", description);
            self.queue_command(0, "_error", transaction_id, &[Amf0Value::Null, status]);
        }
    }

    fn queue_result(&mut self, transaction_id: f64, values: &[Amf0Value]) {
        if transaction_id != 0.0 {
            self.queue_command(0, "_result", transaction_id, values);
        }
    }

    // ---- input ----

    fn handle_message(&mut self, m: RawMessage) -> Result<(), RtmpError> {
        match m.type_id {
            msg::SET_CHUNK_SIZE => {
                // The top bit is reserved; a value with it set is out of range.
                let size = msg::read_u32(&m.payload, "Set Chunk Size")?;
                self.decoder.set_chunk_size(size)?;
            }
            msg::ABORT => {
                let csid = msg::read_u32(&m.payload, "Abort Message")?;
                self.decoder.abort(csid);
            }
            msg::ACKNOWLEDGEMENT => {}
            msg::WINDOW_ACK_SIZE => {
                self.peer_window = msg::read_u32(&m.payload, "Window Acknowledgement Size")?;
            }
            msg::SET_PEER_BANDWIDTH => {}
            msg::USER_CONTROL => self.handle_user_control(&m.payload),
            msg::AUDIO | msg::VIDEO => {
                if self.streams.get(&m.stream_id) == Some(&StreamRole::Publishing) {
                    let kind = if m.type_id == msg::AUDIO { MediaKind::Audio } else { MediaKind::Video };
                    self.events.push_back(SessionEvent::Media { kind, timestamp: m.timestamp, payload: m.payload });
                } else {
                    tracing::trace!(stream_id = m.stream_id, "media on a stream that is not publishing; dropped");
                }
            }
            msg::DATA_AMF0 | msg::DATA_AMF3 => {
                if self.streams.get(&m.stream_id) != Some(&StreamRole::Publishing) {
                    return Ok(());
                }
                match msg::metadata_payload(m.type_id, &m.payload) {
                    Ok(Some(payload)) => self.events.push_back(SessionEvent::Metadata { payload }),
                    Ok(None) => tracing::debug!("data message other than onMetaData ignored"),
                    Err(e) => tracing::debug!(error = %e, "malformed data message ignored"),
                }
            }
            msg::COMMAND_AMF0 | msg::COMMAND_AMF3 => {
                let cmd = Command::parse(m.type_id, &m.payload)?;
                self.handle_command(m.stream_id, cmd);
            }
            msg::AGGREGATE => {
                if self.streams.get(&m.stream_id) != Some(&StreamRole::Publishing) {
                    tracing::trace!(stream_id = m.stream_id, "aggregate on a stream that is not publishing; dropped");
                    return Ok(());
                }
                for sub in msg::aggregate_parts(&m) {
                    let sub = sub?;
                    if matches!(sub.type_id, msg::AUDIO | msg::VIDEO | msg::DATA_AMF0 | msg::DATA_AMF3) {
                        self.handle_message(sub)?;
                    } else {
                        tracing::debug!(type_id = sub.type_id, "message type not allowed in an aggregate ignored");
                    }
                }
            }
            other => tracing::debug!(type_id = other, len = m.payload.len(), "unhandled message type ignored"),
        }
        Ok(())
    }

    fn handle_user_control(&mut self, payload: &[u8]) {
        if payload.len() < 2 {
            return;
        }
        let event = u16::from_be_bytes([payload[0], payload[1]]);
        if event == msg::UC_PING_REQUEST && payload.len() >= 6 {
            let ts = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
            self.queue_user_control(msg::UC_PING_RESPONSE, ts);
        }
    }

    fn handle_command(&mut self, stream_id: u32, cmd: Command) {
        let tx = cmd.transaction_id;
        match cmd.name.as_str() {
            "connect" => self.on_connect(&cmd),
            "createStream" => {
                if self.streams.len() >= MAX_STREAMS {
                    self.queue_call_failed(tx, "too many streams");
                    return;
                }
                let id = self.next_stream_id;
                self.next_stream_id = self.next_stream_id.wrapping_add(1).max(1);
                self.streams.insert(id, StreamRole::Idle);
                self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Number(id as f64)]);
            }
            "releaseStream" => self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Undefined]),
            "FCPublish" => {
                let name = cmd.arg_str(0).unwrap_or("").to_string();
                let status = Amf0Value::object([
                    ("code", Amf0Value::string("NetStream.Publish.Start")),
                    ("description", Amf0Value::string(name)),
                ]);
                self.queue_command(0, "onFCPublish", 0.0, &[Amf0Value::Null, status]);
                self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Undefined]);
            }
            "FCUnpublish" => {
                let name = cmd.arg_str(0).unwrap_or("").to_string();
                let status = Amf0Value::object([
                    ("code", Amf0Value::string("NetStream.Unpublish.Success")),
                    ("description", Amf0Value::string(name)),
                ]);
                self.queue_command(0, "onFCUnpublish", 0.0, &[Amf0Value::Null, status]);
                self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Undefined]);
                let publishing: Vec<u32> = self.streams_with(|r| r == StreamRole::Publishing);
                for sid in publishing {
                    self.end_stream(sid, false);
                }
            }
            "publish" => self.on_publish_or_play(stream_id, &cmd, true),
            "play" => self.on_publish_or_play(stream_id, &cmd, false),
            "deleteStream" => {
                let sid = cmd.arg_number(0).map_or(stream_id, |n| n as u32);
                self.end_stream(sid, true);
            }
            "closeStream" => self.end_stream(stream_id, false),
            "getStreamLength" => self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Number(0.0)]),
            "receiveAudio" | "receiveVideo" | "pause" | "seek" => {
                if self.streams.get(&stream_id) != Some(&StreamRole::Playing) {
                    tracing::debug!(command = %cmd.name, stream_id, "play control on a stream that is not playing ignored");
                    return;
                }
                let control = match cmd.name.as_str() {
                    "pause" => cmd.arg_bool(0).map(PlayControl::Pause),
                    "receiveAudio" => cmd.arg_bool(0).map(PlayControl::ReceiveAudio),
                    "receiveVideo" => cmd.arg_bool(0).map(PlayControl::ReceiveVideo),
                    _ => Some(PlayControl::Seek(cmd.arg_number(0).unwrap_or(0.0))),
                };
                match control {
                    Some(control) => self.events.push_back(SessionEvent::PlayControl { stream_id, control }),
                    None => tracing::debug!(command = %cmd.name, "play control without its argument ignored"),
                }
            }
            "_checkbw" => self.queue_result(tx, &[Amf0Value::Null, Amf0Value::Undefined]),
            other => {
                tracing::debug!(command = other, "unknown command");
                self.queue_call_failed(tx, "unknown command");
            }
        }
    }

    fn streams_with(&self, pred: impl Fn(StreamRole) -> bool) -> Vec<u32> {
        let mut v: Vec<u32> = self.streams.iter().filter(|(_, &r)| pred(r)).map(|(&s, _)| s).collect();
        v.sort_unstable();
        v
    }

    /// closeStream / deleteStream / FCUnpublish: ends what the stream was doing.
    fn end_stream(&mut self, stream_id: u32, delete: bool) {
        match self.streams.get(&stream_id).copied() {
            Some(StreamRole::Publishing) => self.events.push_back(SessionEvent::Unpublished),
            Some(StreamRole::Playing) => self.events.push_back(SessionEvent::PlayStopped),
            _ => {}
        }
        if delete {
            self.streams.remove(&stream_id);
        } else if self.streams.contains_key(&stream_id) {
            self.streams.insert(stream_id, StreamRole::Idle);
        }
    }

    fn on_connect(&mut self, cmd: &Command) {
        let tx = cmd.transaction_id;
        if self.conn.is_some() {
            self.queue_call_failed(tx, "already connected");
            return;
        }
        let app_full = cmd.object.get("app").and_then(Amf0Value::as_str).unwrap_or("");
        let (app, app_query) = msg::split_query(app_full);
        let app = app.trim_end_matches('/').to_string();
        let app_query = app_query.to_string();
        let tc_url = cmd.object.get("tcUrl").and_then(Amf0Value::as_str).map(str::to_string);
        let object_encoding = cmd.object.get("objectEncoding").and_then(Amf0Value::as_number).unwrap_or(0.0);

        self.queue_control(msg::WINDOW_ACK_SIZE, msg::u32_payload(self.config.window_ack_size));
        self.queue_control(msg::SET_PEER_BANDWIDTH, msg::peer_bandwidth_payload(self.config.peer_bandwidth, 2));
        let out_chunk = self.config.out_chunk_size.clamp(1, super::chunk::MAX_CHUNK_SIZE);
        self.queue_control(msg::SET_CHUNK_SIZE, msg::u32_payload(out_chunk));
        self.encoder.set_chunk_size(out_chunk);
        let caps = ClientCapabilities::parse(&cmd.object);
        // Enhanced RTMP: what this server takes and forwards (flag 4, CanForward: it does
        // not decode), and the extensions it reads
        let info_map =
            |list: &[&str]| Amf0Value::Object(list.iter().map(|f| (f.to_string(), Amf0Value::Number(4.0))).collect());
        let all: Vec<Amf0Value> = VIDEO_FOURCCS.iter().chain(&AUDIO_FOURCCS).map(|f| Amf0Value::string(*f)).collect();
        let props = Amf0Value::object([
            ("fmsVer", Amf0Value::string("FMS/3,0,1,123")),
            ("capabilities", Amf0Value::Number(31.0)),
            ("fourCcList", Amf0Value::StrictArray(all)),
            ("videoFourCcInfoMap", info_map(&VIDEO_FOURCCS)),
            ("audioFourCcInfoMap", info_map(&AUDIO_FOURCCS)),
            (
                "capsEx",
                Amf0Value::Number(f64::from(
                    CAPS_EX_RECONNECT | CAPS_EX_MULTITRACK | CAPS_EX_MODEX | CAPS_EX_TIMESTAMP_NANO_OFFSET,
                )),
            ),
        ]);
        let info = Amf0Value::object([
            ("level", Amf0Value::string("status")),
            ("code", Amf0Value::string("NetConnection.Connect.Success")),
            ("description", Amf0Value::string("Connection succeeded.")),
            ("objectEncoding", Amf0Value::Number(object_encoding)),
        ]);
        self.queue_command(0, "_result", if tx == 0.0 { 1.0 } else { tx }, &[props, info]);
        self.conn = Some(Connection { app: app.clone(), app_query });
        self.events.push_back(SessionEvent::Connected { app, tc_url, caps });
    }

    fn on_publish_or_play(&mut self, stream_id: u32, cmd: &Command, publish: bool) {
        let what = if publish { "publish" } else { "play" };
        let Some(conn) = &self.conn else {
            tracing::warn!("{what} before connect");
            let code = if publish { "NetStream.Publish.BadConnection" } else { "NetStream.Play.Failed" };
            self.queue_status(stream_id, "error", code, "not connected");
            return;
        };
        let full_name = cmd.arg_str(0).unwrap_or("");
        let (name, query) = msg::split_query(full_name);
        let query = if query.is_empty() { conn.app_query.clone() } else { query.to_string() };
        let (name, app) = (name.to_string(), conn.app.clone());

        match self.streams.get(&stream_id) {
            // Lenient: ffmpeg/OBS always createStream first, but publishing on a stream id we
            // did not hand out (or 0) is harmless as long as the number of streams is bounded.
            None if self.streams.len() >= MAX_STREAMS => {
                self.queue_status(stream_id, "error", "NetStream.Publish.Failed", "too many streams");
                return;
            }
            None | Some(StreamRole::Idle) => {}
            Some(_) => {
                tracing::debug!(stream_id, "{what} on a busy stream ignored");
                let code = if publish { "NetStream.Publish.BadName" } else { "NetStream.Play.Failed" };
                self.queue_status(stream_id, "error", code, "stream busy");
                return;
            }
        }
        let req = RequestId(self.next_request);
        self.next_request += 1;
        let role = if publish { StreamRole::PublishPending(req) } else { StreamRole::PlayPending(req) };
        self.streams.insert(stream_id, role);
        self.awaiting_decision = true;
        self.events.push_back(if publish {
            SessionEvent::PublishRequested { req, stream_id, app, name, query }
        } else {
            SessionEvent::PlayRequested { req, stream_id, app, name, query }
        });
    }
}
