//! The client's command flow, sans-IO: connect → (releaseStream, FCPublish) → createStream
//! → publish or play, each answer (`_result`, `_error`, `onStatus`) read and turned into a
//! [`ClientEvent`]; failures are values ([`ClientFailure`]), never panics. Time comes in as
//! `now` ([`ClientSession::start`], [`ClientSession::receive`],
//! [`ClientSession::handle_timeout`]); the driver sleeps until [`ClientSession::poll_timeout`].
//! Media goes out as pieces that share the caller's payload (no copy per message).

use std::fmt;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::ClientSession;
use crate::piece::Piece;
use crate::rtmp::amf0::Amf0Value;
use crate::rtmp::chunk::{RawMessage, MAX_CHUNK_SIZE};
use crate::rtmp::message::{self as msg, Command};
use crate::rtmp::session::ClientCapabilities;
use crate::rtmp::{MediaKind, RtmpError};

/// `onMetaData` goes out behind `@setDataFrame`, as encoders send it (AMF0 string).
const SET_DATA_FRAME: &[u8] = b"\x02\x00\x0d@setDataFrame";
/// The chunk stream publish/play commands go on (as ffmpeg and OBS use).
const CSID_STREAM_COMMAND: u32 = 8;
/// User control: Set Buffer Length (stream id, milliseconds).
const UC_SET_BUFFER_LENGTH: u16 = 3;

/// Publish to the server, or play from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    Publish,
    Play,
}

/// What a [`ClientSession`] connects to and asks for.
#[derive(Debug, Clone)]
pub struct ConnectParams {
    /// The application (`live`, or `live?query`), as in the URL's first path part.
    pub app: String,
    /// `rtmp://host[:port]/app`, sent as `tcUrl`.
    pub tc_url: String,
    /// The stream name with its query (`demo?key=x`).
    pub stream: String,
    pub role: ClientRole,
    /// Sent as `flashVer`.
    pub flash_ver: String,
    /// Enhanced RTMP: the FourCCs announced in `connect` (`fourCcList`); empty for a
    /// legacy connect.
    pub fourcc_list: Vec<String>,
    /// Enhanced RTMP `capsEx` bits announced in `connect` (0: none).
    pub caps_ex: u32,
    /// Chunk size of what the client sends (announced with Set Chunk Size before `connect`).
    pub chunk_size: u32,
    /// Window the server is asked to acknowledge (Window Acknowledgement Size).
    pub window_ack_size: u32,
    /// Play: the buffer length announced with Set Buffer Length.
    pub buffer_ms: u32,
    /// How long each step may wait for the server's answer.
    pub response_timeout: Duration,
}

impl ConnectParams {
    /// Defaults for `role` on `tc_url`/`app`/`stream`: 4 KiB chunks, a 2.5 MB window, a
    /// 10 s answer timeout, a legacy connect.
    pub fn new(role: ClientRole, tc_url: impl Into<String>, app: impl Into<String>, stream: impl Into<String>) -> Self {
        Self {
            app: app.into(),
            tc_url: tc_url.into(),
            stream: stream.into(),
            role,
            flash_ver: match role {
                ClientRole::Publish => "FMLE/3.0 (compatible; livegate)".to_string(),
                ClientRole::Play => "LNX 9,0,124,2".to_string(),
            },
            fourcc_list: Vec::new(),
            caps_ex: 0,
            chunk_size: 4096,
            window_ack_size: 2_500_000,
            buffer_ms: 1000,
            response_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the flow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// No flow started (the session is driven message by message).
    Idle,
    Handshaking,
    Connecting,
    CreatingStream,
    /// `publish` or `play` sent, waiting for its `onStatus`.
    Starting,
    Publishing,
    Playing,
    /// Closed by us, or the server ended the play or publish.
    Ended,
    Failed,
}

/// The step a failure happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientStage {
    Handshake,
    Connect,
    CreateStream,
    Publish,
    Play,
}

impl fmt::Display for ClientStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ClientStage::Handshake => "handshake",
            ClientStage::Connect => "connect",
            ClientStage::CreateStream => "createStream",
            ClientStage::Publish => "publish",
            ClientStage::Play => "play",
        })
    }
}

/// Why a flow failed: the step, the server's status code (or `timeout`) and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFailure {
    pub stage: ClientStage,
    pub code: String,
    pub description: String,
}

impl fmt::Display for ClientFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.code)?;
        if !self.description.is_empty() {
            write!(f, " ({})", self.description)?;
        }
        Ok(())
    }
}

/// What the flow tells its driver.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientEvent {
    /// `connect` succeeded. `server` is what the server announced: its Enhanced RTMP
    /// codecs (`fourCcList` and info maps; `None` for a legacy server) and `capsEx`.
    Connected {
        server: ClientCapabilities,
        fms_ver: Option<String>,
    },
    Publishing {
        stream_id: u32,
    },
    Playing {
        stream_id: u32,
    },
    Failed(ClientFailure),
    /// Audio/video of a play (the FLV tag body as received).
    Media {
        kind: MediaKind,
        timestamp: u32,
        payload: Bytes,
    },
    /// `"onMetaData", object` of a play.
    Metadata {
        payload: Bytes,
    },
    /// An `onStatus` the flow did not act on.
    Status {
        level: String,
        code: String,
        description: String,
    },
    /// The server ended the play (`NetStream.Play.UnpublishNotify`, `Stop`, Stream EOF) or
    /// the publish (an error status while publishing).
    Ended {
        code: String,
    },
    /// Enhanced RTMP v2: the server asks the client to reconnect (to `tc_url` if given).
    ReconnectRequest {
        tc_url: Option<String>,
    },
}

/// A send that the flow's state does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the RTMP client is not publishing (state {0:?})")]
pub struct NotPublishing(pub ClientState);

#[derive(Debug)]
pub(super) struct Flow {
    params: ConnectParams,
    pub(super) state: ClientState,
    deadline: Option<Instant>,
    connect_tx: f64,
    create_tx: f64,
    stream_id: u32,
    server: Option<ClientCapabilities>,
}

/// Window acknowledgements both ways: what we owe the server and what it acknowledged.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// Bytes received so far (the sequence number of our Acknowledgement, wrapping).
    received: u32,
    /// Bytes received since our last Acknowledgement.
    unacked: u64,
    /// The window the server asked us to acknowledge (0: none asked).
    peer_window: u32,
    /// The window we last announced (Window Acknowledgement Size).
    announced: u32,
    /// The server's last Acknowledgement: bytes of ours it has received.
    peer_acked: u32,
    /// Bytes we queued to send (handshake included), wrapping like the sequence number.
    sent: u32,
}

impl ClientSession {
    /// Starts a flow: queues C0 + C1, then (as the server answers) C2, Set Chunk Size,
    /// `connect`, `releaseStream`/`FCPublish` (publish), `createStream` and `publish` or
    /// `play`. Progress comes out of [`Self::poll_event`].
    pub fn start(&mut self, params: ConnectParams, now: Instant) {
        let c0c1 = self.handshake_start();
        self.push_out(Bytes::from(c0c1));
        self.flow = Some(Flow {
            deadline: Some(now + params.response_timeout),
            params,
            state: ClientState::Handshaking,
            connect_tx: 0.0,
            create_tx: 0.0,
            stream_id: 0,
            server: None,
        });
    }

    /// The flow's state ([`ClientState::Idle`] without a flow).
    pub fn state(&self) -> ClientState {
        self.flow.as_ref().map_or(ClientState::Idle, |f| f.state)
    }

    /// What the server announced in its `connect` answer, once connected.
    pub fn server_capabilities(&self) -> Option<&ClientCapabilities> {
        self.flow.as_ref().and_then(|f| f.server.as_ref())
    }

    /// The message stream id the server gave (0 before `createStream` was answered).
    pub fn stream_id(&self) -> u32 {
        self.flow.as_ref().map_or(0, |f| f.stream_id)
    }

    /// Bytes of ours the server acknowledged (its last Acknowledgement; wrapping).
    pub fn peer_acknowledged(&self) -> u32 {
        self.acks.peer_acked
    }

    /// Bytes queued to send so far (wrapping, as acknowledgement sequence numbers do).
    pub fn bytes_queued(&self) -> u32 {
        self.acks.sent
    }

    /// Bytes queued and not yet taken by [`Self::poll_transmit`].
    pub fn pending_transmit_bytes(&self) -> usize {
        self.out_bytes
    }

    #[must_use]
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`Self::handle_timeout`] must be called (the current step's answer deadline).
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.flow.as_ref().and_then(|f| f.deadline)
    }

    /// Fails the flow if the server has not answered the current step by now.
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(flow) = &mut self.flow else { return };
        if flow.deadline.is_some_and(|d| now >= d) {
            flow.deadline = None;
            let stage = flow.stage();
            let waited = flow.params.response_timeout;
            self.fail(stage, "timeout", &format!("no answer within {} ms", waited.as_millis()));
        }
    }

    /// Consumes what the server sent (handshake, then chunks) and advances the flow.
    /// Errors are protocol violations, fatal for the connection.
    pub fn receive(&mut self, input: &mut BytesMut, now: Instant) -> Result<(), RtmpError> {
        if !self.take_handshake(input)? {
            return Ok(());
        }
        if self.state() == ClientState::Handshaking {
            self.send_connect(now);
        }
        while let Some(m) = self.next_message(input)? {
            self.on_message(m, now)?;
        }
        Ok(())
    }

    /// Sends one audio/video message (FLV tag body) of a publish; `payload` is shared,
    /// never copied.
    pub fn send_media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) -> Result<(), NotPublishing> {
        self.send_media_parts(kind, timestamp, &[], payload)
    }

    /// Sends an audio/video message whose body is `header` (copied; a few codec bytes) then
    /// `payload` (shared).
    pub fn send_media_parts(
        &mut self,
        kind: MediaKind,
        timestamp: u32,
        header: &[u8],
        payload: Bytes,
    ) -> Result<(), NotPublishing> {
        let sid = self.publishing_stream()?;
        let (csid, type_id) = match kind {
            MediaKind::Audio => (msg::CSID_AUDIO, msg::AUDIO),
            MediaKind::Video => (msg::CSID_VIDEO, msg::VIDEO),
        };
        self.queue_zero_copy(csid, type_id, sid, timestamp, header, payload);
        Ok(())
    }

    /// Sends `"onMetaData", object` (an AMF0 payload) as `@setDataFrame`, as encoders do.
    pub fn send_metadata(&mut self, payload: Bytes) -> Result<(), NotPublishing> {
        let sid = self.publishing_stream()?;
        self.queue_zero_copy(msg::CSID_STREAM, msg::DATA_AMF0, sid, 0, SET_DATA_FRAME, payload);
        Ok(())
    }

    /// Ends the flow politely: a publish sends `FCUnpublish` and `deleteStream`, a play
    /// `deleteStream`. The driver flushes and closes afterwards.
    pub fn close(&mut self) {
        let Some(flow) = &mut self.flow else { return };
        let (state, sid, role) = (flow.state, flow.stream_id, flow.params.role);
        let name = flow.params.stream.clone();
        flow.state = ClientState::Ended;
        flow.deadline = None;
        if !matches!(state, ClientState::Starting | ClientState::Publishing | ClientState::Playing) {
            return;
        }
        if role == ClientRole::Publish {
            self.queue_command(0, "FCUnpublish", &[Amf0Value::Null, Amf0Value::string(name)]);
        }
        self.queue_command(0, "deleteStream", &[Amf0Value::Null, Amf0Value::Number(f64::from(sid))]);
    }

    fn publishing_stream(&self) -> Result<u32, NotPublishing> {
        match &self.flow {
            Some(f) if f.state == ClientState::Publishing => Ok(f.stream_id),
            other => Err(NotPublishing(other.as_ref().map_or(ClientState::Idle, |f| f.state))),
        }
    }

    // ---- protocol control, both modes ----

    /// Counts bytes taken off the wire; queues an Acknowledgement each time the server's
    /// window is full.
    pub(super) fn count_received(&mut self, n: usize) {
        self.acks.received = self.acks.received.wrapping_add(n as u32);
        self.acks.unacked += n as u64;
        if self.acks.peer_window > 0 && self.acks.unacked >= u64::from(self.acks.peer_window) {
            self.acks.unacked = 0;
            let seq = self.acks.received;
            self.queue_control(msg::ACKNOWLEDGEMENT, &seq.to_be_bytes());
        }
    }

    /// Protocol control and user control messages from the server, answered in both modes:
    /// Set Chunk Size followed, Window Acknowledgement Size taken, Set Peer Bandwidth
    /// answered with a window if we announced none, pings answered, the server's Acknowledgements recorded.
    pub(super) fn control(&mut self, m: &RawMessage) -> Result<(), RtmpError> {
        match m.type_id {
            msg::SET_CHUNK_SIZE => self.decoder.set_chunk_size(msg::read_u32(&m.payload, "set chunk size")?)?,
            msg::WINDOW_ACK_SIZE => self.acks.peer_window = msg::read_u32(&m.payload, "window ack size")?,
            msg::ACKNOWLEDGEMENT => self.acks.peer_acked = msg::read_u32(&m.payload, "acknowledgement")?,
            msg::SET_PEER_BANDWIDTH => {
                let size = msg::read_u32(&m.payload, "set peer bandwidth")?;
                // answered with a window only by a client that announced none of its own
                if size > 0 && self.acks.announced == 0 {
                    self.acks.announced = size;
                    self.queue_control(msg::WINDOW_ACK_SIZE, &size.to_be_bytes());
                }
            }
            msg::USER_CONTROL if m.payload.len() >= 6 => {
                let event = u16::from_be_bytes([m.payload[0], m.payload[1]]);
                if event == msg::UC_PING_REQUEST {
                    let mut p = [0u8; 6];
                    p[..2].copy_from_slice(&msg::UC_PING_RESPONSE.to_be_bytes());
                    p[2..].copy_from_slice(&m.payload[2..6]);
                    self.queue_control(msg::USER_CONTROL, &p);
                }
            }
            _ => {}
        }
        Ok(())
    }

    pub(super) fn push_out(&mut self, b: Bytes) {
        self.push_piece(Piece::Shared(b));
    }

    fn push_piece(&mut self, p: Piece) {
        if !p.is_empty() {
            self.out_bytes += p.len();
            self.acks.sent = self.acks.sent.wrapping_add(p.len() as u32);
            self.out.push_back(p);
        }
    }

    fn queue_message(&mut self, csid: u32, type_id: u8, sid: u32, payload: &[u8]) {
        let mut b = BytesMut::with_capacity(payload.len() + 18);
        self.encoder.write(&mut b, csid, 0, type_id, sid, payload);
        self.push_out(b.freeze());
    }

    fn queue_control(&mut self, type_id: u8, payload: &[u8]) {
        self.queue_message(msg::CSID_CONTROL, type_id, 0, payload);
    }

    fn queue_zero_copy(&mut self, csid: u32, type_id: u8, sid: u32, ts: u32, header: &[u8], payload: Bytes) {
        let mut pieces = Vec::with_capacity(2);
        self.encoder.write_zero_copy(|p| pieces.push(p), csid, ts, type_id, sid, header, payload);
        for p in pieces {
            self.push_piece(p);
        }
    }

    /// Queues a command with the next transaction id and returns that id.
    fn queue_command(&mut self, sid: u32, name: &str, values: &[Amf0Value]) -> f64 {
        self.tx += 1.0;
        let p = msg::command_payload(name, self.tx, values);
        let csid = if sid == 0 { msg::CSID_COMMAND } else { CSID_STREAM_COMMAND };
        self.queue_message(csid, msg::COMMAND_AMF0, sid, &p);
        self.tx
    }

    // ---- the flow ----

    fn send_connect(&mut self, now: Instant) {
        let Some(flow) = &self.flow else { return };
        let p = &flow.params;
        let chunk = p.chunk_size.clamp(1, MAX_CHUNK_SIZE);
        let window = p.window_ack_size;
        let mut props = vec![
            ("app".to_string(), Amf0Value::string(&p.app)),
            ("type".to_string(), Amf0Value::string("nonprivate")),
            ("flashVer".to_string(), Amf0Value::string(&p.flash_ver)),
            ("tcUrl".to_string(), Amf0Value::string(&p.tc_url)),
        ];
        if p.role == ClientRole::Play {
            props.extend([
                ("fpad".to_string(), Amf0Value::Boolean(false)),
                ("capabilities".to_string(), Amf0Value::Number(15.0)),
                ("audioCodecs".to_string(), Amf0Value::Number(4071.0)),
                ("videoCodecs".to_string(), Amf0Value::Number(252.0)),
                ("videoFunction".to_string(), Amf0Value::Number(1.0)),
            ]);
        }
        if !p.fourcc_list.is_empty() {
            let list = p.fourcc_list.iter().map(Amf0Value::string).collect();
            props.push(("fourCcList".to_string(), Amf0Value::StrictArray(list)));
        }
        if p.caps_ex != 0 {
            props.push(("capsEx".to_string(), Amf0Value::Number(f64::from(p.caps_ex))));
        }
        self.queue_control(msg::SET_CHUNK_SIZE, &chunk.to_be_bytes());
        self.encoder.set_chunk_size(chunk);
        let tx = self.queue_command(0, "connect", &[Amf0Value::Object(props)]);
        if window > 0 {
            self.acks.announced = window;
            self.queue_control(msg::WINDOW_ACK_SIZE, &window.to_be_bytes());
        }
        self.advance(ClientState::Connecting, now);
        if let Some(flow) = &mut self.flow {
            flow.connect_tx = tx;
        }
    }

    fn advance(&mut self, state: ClientState, now: Instant) {
        let Some(flow) = &mut self.flow else { return };
        flow.state = state;
        flow.deadline = match state {
            ClientState::Handshaking
            | ClientState::Connecting
            | ClientState::CreatingStream
            | ClientState::Starting => Some(now + flow.params.response_timeout),
            _ => None,
        };
    }

    fn fail(&mut self, stage: ClientStage, code: &str, description: &str) {
        if let Some(flow) = &mut self.flow {
            flow.state = ClientState::Failed;
            flow.deadline = None;
        }
        let failure = ClientFailure { stage, code: code.to_string(), description: description.to_string() };
        self.events.push_back(ClientEvent::Failed(failure));
    }

    fn on_message(&mut self, m: RawMessage, now: Instant) -> Result<(), RtmpError> {
        match m.type_id {
            msg::COMMAND_AMF0 | msg::COMMAND_AMF3 => {
                let cmd = Command::parse(m.type_id, &m.payload)?;
                self.on_command(m.stream_id, cmd, now);
            }
            msg::AUDIO | msg::VIDEO if self.accepts_media() => {
                let kind = if m.type_id == msg::AUDIO { MediaKind::Audio } else { MediaKind::Video };
                self.events.push_back(ClientEvent::Media { kind, timestamp: m.timestamp, payload: m.payload });
            }
            msg::DATA_AMF0 | msg::DATA_AMF3 if self.accepts_media() => {
                if let Ok(Some(payload)) = msg::metadata_payload(m.type_id, &m.payload) {
                    self.events.push_back(ClientEvent::Metadata { payload });
                }
            }
            msg::AGGREGATE if self.accepts_media() => {
                for part in msg::aggregate_parts(&m) {
                    let part = part?;
                    if matches!(part.type_id, msg::AUDIO | msg::VIDEO | msg::DATA_AMF0 | msg::DATA_AMF3) {
                        self.on_message(part, now)?;
                    }
                }
            }
            msg::USER_CONTROL if m.payload.len() >= 6 => {
                let event = u16::from_be_bytes([m.payload[0], m.payload[1]]);
                if event == msg::UC_STREAM_EOF && self.state() == ClientState::Playing {
                    self.end("StreamEOF");
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn accepts_media(&self) -> bool {
        matches!(&self.flow, Some(f) if f.params.role == ClientRole::Play
            && matches!(f.state, ClientState::Starting | ClientState::Playing))
    }

    fn end(&mut self, code: &str) {
        if let Some(flow) = &mut self.flow {
            flow.state = ClientState::Ended;
            flow.deadline = None;
        }
        self.events.push_back(ClientEvent::Ended { code: code.to_string() });
    }

    fn on_command(&mut self, stream_id: u32, cmd: Command, now: Instant) {
        let Some(flow) = &self.flow else { return };
        let (state, role, connect_tx, create_tx) = (flow.state, flow.params.role, flow.connect_tx, flow.create_tx);
        let info = status_of(&cmd);
        match cmd.name.as_str() {
            "_result" if state == ClientState::Connecting && cmd.transaction_id == connect_tx => {
                if !info.code.is_empty() && !info.code.ends_with("Connect.Success") {
                    return self.fail(ClientStage::Connect, &info.code, &info.description);
                }
                // Enhanced RTMP servers announce their codecs in the properties object
                // (livegate, and the reference) or the information object
                let mut server = ClientCapabilities::parse(&cmd.object);
                if let Some(more) = cmd.args.first().map(ClientCapabilities::parse) {
                    if server.codecs.is_none() {
                        server.codecs = more.codecs;
                    }
                    server.caps_ex |= more.caps_ex;
                }
                let fms_ver = cmd.object.get("fmsVer").and_then(Amf0Value::as_str).map(str::to_string);
                if let Some(flow) = &mut self.flow {
                    flow.server = Some(server.clone());
                }
                self.events.push_back(ClientEvent::Connected { server, fms_ver });
                let name = self.flow.as_ref().map(|f| f.params.stream.clone()).unwrap_or_default();
                if role == ClientRole::Publish {
                    self.queue_command(0, "releaseStream", &[Amf0Value::Null, Amf0Value::string(&name)]);
                    self.queue_command(0, "FCPublish", &[Amf0Value::Null, Amf0Value::string(&name)]);
                }
                let tx = self.queue_command(0, "createStream", &[Amf0Value::Null]);
                self.advance(ClientState::CreatingStream, now);
                if let Some(flow) = &mut self.flow {
                    flow.create_tx = tx;
                }
            }
            "_error" if state == ClientState::Connecting && cmd.transaction_id == connect_tx => {
                self.fail(ClientStage::Connect, &info.code, &info.description)
            }
            "_result" if state == ClientState::CreatingStream && cmd.transaction_id == create_tx => {
                let sid = cmd.arg_number(0).filter(|n| n.is_finite() && *n >= 0.0 && *n <= f64::from(u32::MAX));
                let Some(sid) = sid.map(|n| n as u32) else {
                    return self.fail(
                        ClientStage::CreateStream,
                        "NetConnection.Call.Failed",
                        "no stream id in the answer",
                    );
                };
                let (name, buffer_ms) =
                    self.flow.as_ref().map(|f| (f.params.stream.clone(), f.params.buffer_ms)).unwrap_or_default();
                if let Some(flow) = &mut self.flow {
                    flow.stream_id = sid;
                }
                match role {
                    ClientRole::Publish => {
                        self.queue_command(
                            sid,
                            "publish",
                            &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::string("live")],
                        );
                    }
                    ClientRole::Play => {
                        self.queue_command(
                            sid,
                            "play",
                            &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::Number(-2000.0)],
                        );
                        let mut p = [0u8; 10];
                        p[..2].copy_from_slice(&UC_SET_BUFFER_LENGTH.to_be_bytes());
                        p[2..6].copy_from_slice(&sid.to_be_bytes());
                        p[6..].copy_from_slice(&buffer_ms.to_be_bytes());
                        self.queue_control(msg::USER_CONTROL, &p);
                    }
                }
                self.advance(ClientState::Starting, now);
            }
            "_error" if state == ClientState::CreatingStream && cmd.transaction_id == create_tx => {
                self.fail(ClientStage::CreateStream, &info.code, &info.description)
            }
            "onStatus" => self.on_status(stream_id, info, now),
            _ => {} // onBWDone, onFCPublish, answers to releaseStream/FCPublish, ...
        }
    }

    fn on_status(&mut self, stream_id: u32, info: Status, now: Instant) {
        let Some(flow) = &self.flow else { return };
        let (state, role, sid) = (flow.state, flow.params.role, flow.stream_id);
        if info.code == "NetConnection.Connect.ReconnectRequest" {
            self.events.push_back(ClientEvent::ReconnectRequest { tc_url: info.tc_url });
            return;
        }
        let ours = stream_id == sid || stream_id == 0;
        let stage = if role == ClientRole::Publish { ClientStage::Publish } else { ClientStage::Play };
        match state {
            ClientState::Starting if ours && info.level == "error" => self.fail(stage, &info.code, &info.description),
            ClientState::Starting if ours && info.code == "NetStream.Publish.Start" && role == ClientRole::Publish => {
                self.advance(ClientState::Publishing, now);
                self.events.push_back(ClientEvent::Publishing { stream_id: sid });
            }
            ClientState::Starting if ours && info.code == "NetStream.Play.Start" && role == ClientRole::Play => {
                self.advance(ClientState::Playing, now);
                self.events.push_back(ClientEvent::Playing { stream_id: sid });
            }
            ClientState::Publishing | ClientState::Playing
                if ours
                    && (info.level == "error"
                        || matches!(
                            info.code.as_str(),
                            "NetStream.Play.UnpublishNotify" | "NetStream.Play.Stop" | "NetStream.Unpublish.Success"
                        )) =>
            {
                self.end(&info.code)
            }
            _ => self.events.push_back(ClientEvent::Status {
                level: info.level,
                code: info.code,
                description: info.description,
            }),
        }
    }
}

impl Flow {
    fn stage(&self) -> ClientStage {
        match self.state {
            ClientState::Idle | ClientState::Handshaking => ClientStage::Handshake,
            ClientState::Connecting => ClientStage::Connect,
            ClientState::CreatingStream => ClientStage::CreateStream,
            _ if self.params.role == ClientRole::Publish => ClientStage::Publish,
            _ => ClientStage::Play,
        }
    }
}

/// The status object of an `onStatus` / `_error` / connect `_result` (its first argument).
struct Status {
    level: String,
    code: String,
    description: String,
    tc_url: Option<String>,
}

fn status_of(cmd: &Command) -> Status {
    let obj = cmd.args.first();
    let field = |k: &str| obj.and_then(|o| o.get(k)).and_then(Amf0Value::as_str).map(str::to_string);
    Status {
        level: field("level").unwrap_or_default(),
        code: field("code").unwrap_or_default(),
        description: field("description").unwrap_or_default(),
        tc_url: field("tcUrl"),
    }
}
