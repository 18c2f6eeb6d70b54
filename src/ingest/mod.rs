//! The RTMP edge: accepts TCP connections and drives one sans-IO
//! `rtmp::ServerSession` per connection, connecting publishers and RTMP
//! viewers to the hub. Thin: protocol logic lives in `rtmp`, demuxing in
//! `flv`, fan-out in `hub`.

mod publish;
mod writer;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn, Instrument};

use crate::config::RtmpConfig;
use crate::flv::{audio_config_body, audio_tag_header, video_config_body, video_tag_header};
use crate::hub::{AlreadyPublishing, Hub, HubEvent, Protocol, StreamKey, Subscription, ViewerGuard};
use crate::media::Frame;
use crate::rtmp::{MediaKind, RequestId, ServerSession, SessionConfig, SessionEvent};
use publish::Ingest;
use writer::Writer;

/// Accepts RTMP connections until `shutdown`.
pub async fn serve(listener: TcpListener, config: RtmpConfig, hub: Hub, shutdown: CancellationToken) {
    let config = Arc::new(config);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    let _ = sock.set_nodelay(true);
                    let span = tracing::info_span!("rtmp", %peer);
                    let conn = Connection::new(sock, peer, config.clone(), hub.clone(), shutdown.clone());
                    tokio::spawn(conn.run().instrument(span));
                }
                Err(e) => {
                    warn!(error = %e, "RTMP accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

enum Role {
    Idle,
    Publishing(Box<Ingest>),
    Playing { sub: Subscription, stream_id: u32, last_ts: i64, _guard: ViewerGuard },
}

struct Connection {
    peer: SocketAddr,
    config: Arc<RtmpConfig>,
    hub: Hub,
    shutdown: CancellationToken,
    session: ServerSession,
    writer: Writer,
    read: tokio::net::tcp::OwnedReadHalf,
    role: Role,
    /// Close once everything queued has been written (after a refusal or the end of a played stream).
    close_after_flush: bool,
}

/// Hub events taken per wake-up for an RTMP viewer.
const PLAY_BATCH: usize = 64;

impl Connection {
    fn new(sock: TcpStream, peer: SocketAddr, config: Arc<RtmpConfig>, hub: Hub, shutdown: CancellationToken) -> Self {
        let session = ServerSession::new(SessionConfig {
            max_message_size: config.max_message_size,
            out_chunk_size: config.out_chunk_size,
            ..SessionConfig::default()
        });
        let (read, write) = sock.into_split();
        Self {
            peer,
            writer: Writer::new(write),
            config,
            hub,
            shutdown,
            session,
            read,
            role: Role::Idle,
            close_after_flush: false,
        }
    }

    async fn run(mut self) {
        debug!("connected");
        match self.serve().await {
            Ok(()) => info!("connection closed"),
            Err(e) => warn!(peer = %self.peer, "closing RTMP connection: {e:#}"),
        }
        if let Role::Publishing(ingest) = &self.role {
            info!(stream = %ingest.key(), "publisher left");
        }
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut events = Vec::with_capacity(PLAY_BATCH);
        let handshake_deadline = Instant::now() + Duration::from_millis(self.config.handshake_timeout_ms);
        let idle = Duration::from_millis(self.config.idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle;
        loop {
            self.flush().await?;
            if self.close_after_flush {
                return Ok(());
            }
            let deadline = if self.session.is_handshake_done() { idle_deadline } else { handshake_deadline };
            // Viewers may legitimately stay silent; only non-viewers are subject to the idle timeout.
            let watch_idle = !matches!(self.role, Role::Playing { .. }) || !self.session.is_handshake_done();
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    if let Role::Playing { stream_id, .. } = self.role {
                        self.session.send_end_of_stream(stream_id);
                        self.flush().await?;
                    }
                    return Ok(());
                }
                read = self.read.read_buf(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    idle_deadline = Instant::now() + idle;
                    if let Role::Publishing(ingest) = &self.role {
                        ingest.count_bytes(n);
                    }
                    // The session pauses its input after a publish/play request until we
                    // decide; decide, then let it go on with what is already buffered.
                    loop {
                        self.session.handle_input(&mut buf)?;
                        let mut decided = false;
                        while let Some(ev) = self.session.poll_event() {
                            decided |= self.on_session_event(ev);
                        }
                        if !decided {
                            break;
                        }
                    }
                }
                got = recv_play(&mut self.role, &mut events) => {
                    match got {
                        Ok(true) => self.send_play_events(&mut events),
                        Ok(false) => self.end_play(),
                        Err(e) => {
                            if let Role::Playing { sub, .. } = &self.role {
                                warn!(stream = %sub.stream().key(), "RTMP {e}");
                            }
                            return Ok(());
                        }
                    }
                }
                _ = tokio::time::sleep_until(deadline), if watch_idle => {
                    if self.session.is_handshake_done() {
                        anyhow::bail!("idle for {idle:?}");
                    }
                    anyhow::bail!("handshake not completed within {}ms", self.config.handshake_timeout_ms);
                }
            }
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        while let Some(b) = self.session.poll_transmit() {
            self.writer.queue(b);
        }
        let stall = Duration::from_millis(self.config.viewer_stall_timeout_ms);
        let written = match tokio::time::timeout(stall, self.writer.flush()).await {
            Ok(r) => r?,
            Err(_) => {
                if let Role::Playing { sub, .. } = &self.role {
                    sub.stream().stats.evictions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                anyhow::bail!("peer accepted nothing for {stall:?}");
            }
        };
        if let Role::Playing { sub, .. } = &self.role {
            sub.stream().stats.bytes_out.fetch_add(written as u64, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// Handles one session event; true when it was a request we answered.
    fn on_session_event(&mut self, ev: SessionEvent) -> bool {
        match ev {
            SessionEvent::Connected { app, .. } => debug!(%app, "connect"),
            SessionEvent::PublishRequested { req, app, name, .. } => {
                self.on_publish(req, &app, &name);
                return true;
            }
            SessionEvent::PlayRequested { req, stream_id, app, name, .. } => {
                self.on_play(req, stream_id, &app, &name);
                return true;
            }
            SessionEvent::Media { kind, timestamp, payload } => {
                if let Role::Publishing(ingest) = &mut self.role {
                    ingest.media(kind, timestamp, payload);
                }
            }
            SessionEvent::Metadata { payload } => {
                if let Role::Publishing(ingest) = &mut self.role {
                    ingest.metadata(payload);
                }
            }
            SessionEvent::Unpublished => {
                if let Role::Publishing(ingest) = &self.role {
                    info!(stream = %ingest.key(), "unpublished");
                    self.role = Role::Idle;
                }
            }
            SessionEvent::PlayStopped => {
                if matches!(self.role, Role::Playing { .. }) {
                    self.role = Role::Idle;
                }
            }
        }
        false
    }

    fn refuse(&mut self, req: RequestId, code: &str, why: &str) {
        warn!(peer = %self.peer, code, "refused: {why}");
        self.session.reject(req, code, why);
        self.close_after_flush = true;
    }

    fn on_publish(&mut self, req: RequestId, app: &str, name: &str) {
        if !matches!(self.role, Role::Idle) {
            return self.refuse(req, "NetStream.Publish.BadConnection", "this connection already publishes or plays");
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse(req, "NetStream.Publish.BadName", "invalid app or stream name");
        };
        match self.hub.publish(key.clone(), self.peer) {
            Ok(publisher) => {
                info!(stream = %key, "publishing");
                self.session.accept(req);
                self.role = Role::Publishing(Box::new(Ingest::new(publisher)));
            }
            Err(AlreadyPublishing(key)) => {
                self.refuse(req, "NetStream.Publish.BadName", &format!("stream {key} is already being published"))
            }
        }
    }

    fn on_play(&mut self, req: RequestId, stream_id: u32, app: &str, name: &str) {
        if !matches!(self.role, Role::Idle) {
            return self.refuse(req, "NetStream.Play.Failed", "this connection already publishes or plays");
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse(req, "NetStream.Play.StreamNotFound", "invalid app or stream name");
        };
        match self.hub.subscribe(&key) {
            Ok(sub) => {
                info!(stream = %key, "RTMP viewer joined");
                self.session.accept(req);
                let _guard = sub.stream().viewer_guard(Protocol::RtmpPlay);
                self.role = Role::Playing { sub, stream_id, last_ts: 0, _guard };
            }
            Err(e) => self.refuse(req, "NetStream.Play.StreamNotFound", &e.to_string()),
        }
    }

    fn send_play_events(&mut self, events: &mut Vec<HubEvent>) {
        let Role::Playing { stream_id, last_ts, .. } = &mut self.role else {
            return;
        };
        let sid = *stream_id;
        for ev in events.drain(..) {
            match ev {
                HubEvent::Metadata(m) => self.session.send_metadata(sid, m),
                HubEvent::Config(cfg) => {
                    let ts = *last_ts as u32;
                    if let Some(v) = &cfg.video {
                        self.session.send_media(sid, MediaKind::Video, ts, video_config_body(v).into());
                    }
                    if let Some(a) = &cfg.audio {
                        self.session.send_media(sid, MediaKind::Audio, ts, audio_config_body(a).into());
                    }
                }
                HubEvent::Frame(Frame::Video(v)) => {
                    *last_ts = v.dts;
                    self.session.send_media_parts(sid, MediaKind::Video, v.dts as u32, &video_tag_header(&v), v.data);
                }
                HubEvent::Frame(Frame::Audio(a)) => {
                    *last_ts = a.pts;
                    self.session.send_media_parts(sid, MediaKind::Audio, a.pts as u32, &audio_tag_header(&a), a.data);
                }
                HubEvent::Discontinuity => {}
                HubEvent::EndOfStream => {
                    self.session.send_end_of_stream(sid);
                    self.close_after_flush = true;
                }
            }
        }
    }

    fn end_play(&mut self) {
        if let Role::Playing { stream_id, .. } = self.role {
            self.session.send_end_of_stream(stream_id);
        }
        self.close_after_flush = true;
    }
}

/// Waits for events of the played stream; never resolves when not playing.
async fn recv_play(role: &mut Role, out: &mut Vec<HubEvent>) -> Result<bool, crate::hub::Evicted> {
    match role {
        Role::Playing { sub, .. } => sub.recv_many(out, PLAY_BATCH).await,
        _ => std::future::pending().await,
    }
}
