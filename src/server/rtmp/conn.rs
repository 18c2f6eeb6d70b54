//! One RTMP connection: the `select!` loop between the socket and its sans-IO
//! `rtmp::ServerSession` (socket reads, the played subscription, a kick, timeouts), the
//! session's events and the admission checks shared by publish and play. What a publish
//! does is in `publish`, what a play does in `play`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::RtmpContext;
use crate::auth::{Action, AuthRequest};
use crate::flv::TagCodecs;
use crate::hub::{HubEvent, Stream, StreamKey, Subscription};
use crate::net::writer::{Halves, Writer};
use crate::rtmp::{ClientCapabilities, RequestId, ServerSession, SessionConfig, SessionEvent};
use crate::session::{Ingest, OutputGuard, Refusal};

pub(super) enum Role {
    Idle,
    Publishing {
        ingest: Box<Ingest>,
        /// The RTMP message stream the publish runs on.
        stream_id: u32,
    },
    Playing {
        sub: Subscription,
        stream_id: u32,
        last_ts: i64,
        codecs: TagCodecs,
        query: String,
        control: PlayState,
        /// Counts the viewer (and the bytes sent to it) while it plays.
        guard: OutputGuard,
    },
}

/// What the viewer's play-control commands set (see `play::on_play_control`).
#[derive(Debug)]
pub(super) struct PlayState {
    /// `pause`d: no media until it resumes (at the live edge, with a new subscription).
    pub(super) paused: bool,
    pub(super) audio: bool,
    pub(super) video: bool,
    /// Video was turned back on: it resumes at the next keyframe.
    pub(super) wait_keyframe: bool,
    /// The current one-second window of play-control commands and how many it had.
    pub(super) window: (Instant, u32),
}

impl Default for PlayState {
    fn default() -> Self {
        Self { paused: false, audio: true, video: true, wait_keyframe: false, window: (Instant::now(), 0) }
    }
}

pub(super) struct Connection<S: Halves> {
    pub(super) peer: SocketAddr,
    pub(super) proto: &'static str,
    pub(super) ctx: Arc<RtmpContext>,
    pub(super) session: ServerSession,
    pub(super) writer: Writer<S::Write>,
    pub(super) read: S::Read,
    pub(super) role: Role,
    /// Since when the connection neither publishes nor plays.
    pub(super) idle_since: Instant,
    /// Close once everything queued has been written (after a refusal or the end of a played stream).
    pub(super) close_after_flush: bool,
    /// The codecs and extensions the client announced in `connect` (Enhanced RTMP).
    pub(super) caps: ClientCapabilities,
    /// Nothing has been read yet that rules out an HTTP request (see `rtmp::http_probe`).
    maybe_http: bool,
    /// The address the client connected to.
    local: Option<SocketAddr>,
    /// A reconnect request was sent (Enhanced RTMP v2).
    reconnect_sent: bool,
}

/// Hub events taken per wake-up for an RTMP viewer.
pub(super) const PLAY_BATCH: usize = 64;
/// Event slots a viewer keeps reserved between batches.
const KEEP_EVENTS: usize = 8;
/// What an RTMP viewer's read buffer shrinks to between its commands.
const VIEWER_READ: usize = 512;
/// How long a kicked publisher's goodbye may take to write.
const KICK_FLUSH: Duration = Duration::from_secs(1);
/// How long a publisher asked to reconnect at shutdown is still read (it moves at its next
/// keyframe); within `[lifecycle] shutdown_grace_ms` (5 s).
const RECONNECT_DRAIN: Duration = Duration::from_secs(3);

impl<S: Halves + Send + 'static> Connection<S> {
    pub(super) fn new(
        sock: S,
        peer: SocketAddr,
        local: Option<SocketAddr>,
        proto: &'static str,
        ctx: Arc<RtmpContext>,
    ) -> Self {
        let mut session = ServerSession::new(SessionConfig {
            max_message_size: ctx.config.max_message_size,
            out_chunk_size: ctx.config.out_chunk_size,
            rng_seed: rand::random(),
            ..SessionConfig::default()
        });
        // nothing is held yet, so this always fits
        let _ = session.set_shared_budget(Some(ctx.unpublished_budget.clone()));
        let (read, write) = sock.halves();
        Self {
            peer,
            proto,
            writer: Writer::new(write),
            ctx,
            session,
            read,
            role: Role::Idle,
            idle_since: Instant::now(),
            close_after_flush: false,
            caps: ClientCapabilities::default(),
            maybe_http: true,
            local,
            reconnect_sent: false,
        }
    }

    pub(super) async fn run(mut self) {
        debug!("connected");
        let result = self.serve().await;
        if !self.session.is_handshake_done() && !self.maybe_http {
            self.ctx.svc.metrics.handshake_failures.inc();
        }
        match result {
            Ok(()) => debug!("connection closed"),
            Err(e) => {
                if matches!(
                    e.downcast_ref(),
                    Some(crate::rtmp::RtmpError::BufferBudget { .. } | crate::rtmp::RtmpError::SharedBudget { .. })
                ) {
                    self.ctx.svc.metrics.limit_hit("rtmp_message_buffer");
                }
                warn!(peer = %self.peer, "closing RTMP connection: {e:#}")
            }
        }
        self.leave();
    }

    /// Ends the current role: notifies callbacks and frees the stream key.
    fn leave(&mut self) {
        let (stream, action, query) = match std::mem::replace(&mut self.role, Role::Idle) {
            Role::Publishing { ingest, .. } => {
                info!(stream = %ingest.key(), "publisher left");
                (ingest.stream().clone(), Action::Unpublish, ingest.query().to_string())
            }
            Role::Playing { sub, query, .. } => {
                info!(stream = %sub.stream().key(), "RTMP viewer left");
                (sub.stream().clone(), Action::Done, query)
            }
            Role::Idle => return,
        };
        self.idle_since = Instant::now();
        let key = stream.key();
        let req = AuthRequest::for_stream(action, key, self.peer, self.proto, &query);
        self.ctx.svc.auth.notify(&self.ctx.svc.settings.get().apps.get(&key.app).auth, req);
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        // small until the connection publishes: a viewer reads only acks and commands (the
        // handshake's C0+C1, 1537 bytes, fits)
        let mut buf = BytesMut::with_capacity(2 * 1024);
        let mut events = Vec::new();
        let handshake_deadline = Instant::now() + Duration::from_millis(self.ctx.config.handshake_timeout_ms);
        let idle = Duration::from_millis(self.ctx.config.idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle;
        // one wait for the connection's whole life (a new one per loop took the lock of the
        // server's token, which every connection shares, three times), and not polled while
        // the connection plays: at shutdown the played stream ends (`Hub::end_for_viewers`)
        let shutdown = self.ctx.svc.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            self.flush().await?;
            if self.close_after_flush {
                return Ok(());
            }
            let deadline = if !self.session.is_handshake_done() {
                handshake_deadline
            } else if matches!(self.role, Role::Idle) {
                // bytes alone do not keep a connection that neither publishes nor plays
                // (a client dripping a byte now and then): it gets one idle period in all
                idle_deadline.min(self.idle_since + idle)
            } else {
                idle_deadline
            };
            // Viewers may legitimately stay silent; only non-viewers are subject to the idle timeout.
            let watch_idle = !matches!(self.role, Role::Playing { .. }) || !self.session.is_handshake_done();
            let (low, grow) =
                if matches!(self.role, Role::Publishing { .. }) { (16 << 10, 64 << 10) } else { (256, 2 << 10) };
            if matches!(self.role, Role::Playing { .. }) && buf.is_empty() && buf.capacity() > VIEWER_READ {
                // a viewer sends a command now and then: the handshake's room is given back
                buf = BytesMut::with_capacity(VIEWER_READ);
            }
            if buf.capacity() - buf.len() < low {
                buf.reserve(grow);
            }
            let receiving = matches!(&self.role, Role::Playing { control, .. } if !control.paused);
            let kicked = on_published(&self.role, |s| async move { s.kicked().await });
            let drain = on_published(&self.role, |s| async move { s.reconnect_requested().await });
            tokio::select! {
                _ = &mut stopping, if !receiving => {
                    if self.can_reconnect() && !self.reconnect_sent {
                        // the publisher moves at its next keyframe and then disconnects;
                        // its media is taken until then (at most RECONNECT_DRAIN)
                        self.session.send_reconnect_request(None, "server shutting down; reconnect to continue");
                        self.reconnect_sent = true;
                        info!(peer = %self.peer, "shutdown: asked the publisher to reconnect");
                        self.flush().await?;
                        Box::pin(self.drain_input(&mut buf)).await;
                    }
                    self.goodbye();
                    self.flush().await?;
                    return Ok(());
                }
                target = drain, if !self.reconnect_sent => {
                    self.reconnect_sent = true;
                    info!(peer = %self.peer, target = ?target, "asking the publisher to reconnect (admin drain)");
                    self.session.send_reconnect_request(target.as_deref(), "asked to reconnect by the server's admin");
                }
                why = kicked => {
                    // free the key first: the goodbye may never get through (a half-open socket)
                    self.goodbye();
                    self.leave();
                    let _ = tokio::time::timeout(KICK_FLUSH, self.flush()).await;
                    anyhow::bail!("publisher {why}");
                }
                read = self.read.read_buf(&mut buf) => {
                    let n = read?;
                    if n == 0 {
                        return Ok(());
                    }
                    idle_deadline = Instant::now() + idle;
                    if self.maybe_http && Box::pin(self.answer_http(&buf)).await? {
                        // answered (and closed), or waiting for the rest of an HTTP request
                        if self.close_after_flush {
                            return Ok(());
                        }
                        continue;
                    }
                    if let Role::Publishing { ingest, .. } = &self.role {
                        ingest.count_bytes(n);
                    }
                    // The session pauses its input after a publish/play request until we
                    // decide; decide, then let it go on with what is already buffered.
                    loop {
                        self.session.handle_input(&mut buf)?;
                        let mut decided = false;
                        while let Some(ev) = self.session.poll_event() {
                            decided |= self.on_session_event(ev).await;
                        }
                        if !decided {
                            break;
                        }
                    }
                }
                got = recv_play(&mut self.role, &mut events) => {
                    match got {
                        Ok(true) => {
                            self.send_play_events(&mut events);
                            if events.capacity() > KEEP_EVENTS {
                                // a join's burst (a GOP) is not kept reserved
                                events.shrink_to(KEEP_EVENTS);
                            }
                        }
                        Ok(false) => self.end_play(),
                        Err(e) => {
                            if let Role::Playing { sub, .. } = &self.role {
                                warn!(stream = %sub.stream().key(), "RTMP {e}");
                            }
                            return Ok(());
                        }
                    }
                }
                _ = idle_wait(watch_idle, deadline) => {
                    if self.session.is_handshake_done() {
                        anyhow::bail!("idle for {idle:?}");
                    }
                    anyhow::bail!("handshake not completed within {}ms", self.ctx.config.handshake_timeout_ms);
                }
            }
        }
    }

    /// A connection whose first bytes are an HTTP request (a browser opening
    /// `http://HOST:1935/`) gets a short status page instead of a failed handshake. True
    /// while the bytes are (the start of) an HTTP request: answered once its head is
    /// complete, then the connection closes. It is bound by the handshake timeout like any
    /// connection that has not finished its handshake.
    async fn answer_http(&mut self, buf: &BytesMut) -> anyhow::Result<bool> {
        use crate::rtmp::http_probe::{probe_http, status_response, HttpProbe, StatusPage};
        let (head, host) = match probe_http(buf) {
            HttpProbe::NotHttp => {
                self.maybe_http = false;
                return Ok(false);
            }
            HttpProbe::Partial => return Ok(true),
            HttpProbe::Request { head, host } => (head, host),
        };
        let local = self.local.map(|a| match a.ip() {
            std::net::IpAddr::V6(v6) => format!("[{v6}]"),
            v4 => v4.to_string(),
        });
        let host = host.or(local).unwrap_or_else(|| "localhost".to_string());
        let page = StatusPage {
            version: env!("CARGO_PKG_VERSION"),
            live_streams: self.ctx.svc.hub.streams().len(),
            host: &host,
            http_port: self.ctx.http_port,
            rtmp_port: self.local.map_or(1935, |a| a.port()),
        };
        info!(peer = %self.peer, "an HTTP request on the RTMP port: answered with a status page");
        self.writer.queue(bytes::Bytes::from(status_response(&page, head)));
        let _ = tokio::time::timeout(KICK_FLUSH, self.writer.flush()).await;
        self.close_after_flush = true;
        Ok(true)
    }

    /// Whether this connection publishes for a client that can be asked to reconnect.
    fn can_reconnect(&self) -> bool {
        matches!(self.role, Role::Publishing { .. }) && self.caps.caps_ex & crate::rtmp::session::CAPS_EX_RECONNECT != 0
    }

    /// After a reconnect request at shutdown: goes on taking the publisher's messages until
    /// it disconnects (having reconnected elsewhere) or `RECONNECT_DRAIN` passes.
    async fn drain_input(&mut self, buf: &mut BytesMut) {
        let until = Instant::now() + RECONNECT_DRAIN;
        loop {
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            match tokio::time::timeout_at(until, self.read.read_buf(buf)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            if self.session.handle_input(buf).is_err() {
                return;
            }
            while let Some(ev) = self.session.poll_event() {
                match ev {
                    SessionEvent::Media { kind, timestamp, payload } => {
                        if let Role::Publishing { ingest, .. } = &mut self.role {
                            ingest.media(kind, timestamp, payload);
                        }
                    }
                    SessionEvent::Unpublished => return,
                    _ => {}
                }
            }
            if self.flush().await.is_err() {
                return;
            }
        }
    }

    /// Tells the peer the session is over (server shutdown or kick).
    fn goodbye(&mut self) {
        match &self.role {
            Role::Playing { stream_id, .. } => self.session.send_end_of_stream(*stream_id),
            Role::Publishing { stream_id, .. } => {
                self.session.send_status(*stream_id, "status", "NetStream.Unpublish.Success", "server closing")
            }
            Role::Idle => {}
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        let writer = &mut self.writer;
        self.session.transmit_with(|out| writer.append(out));
        let stall = Duration::from_millis(self.ctx.config.viewer_stall_timeout_ms);
        // the stall timer (a clock read and the runtime's handle) is set only when the socket
        // does not take everything at once, which for a viewer keeping up it does
        let flush = self.writer.flush();
        tokio::pin!(flush);
        let first = std::future::poll_fn(|cx| Poll::Ready(flush.as_mut().poll(cx))).await;
        let written = match first {
            Poll::Ready(r) => Ok(r),
            Poll::Pending => tokio::time::timeout(stall, flush).await,
        };
        let written = match written {
            Ok(r) => r?,
            Err(_) => {
                if let Role::Playing { sub, .. } = &self.role {
                    sub.stream().count_eviction();
                }
                anyhow::bail!("peer accepted nothing for {stall:?}");
            }
        };
        if let Role::Playing { guard, .. } = &self.role {
            guard.count_bytes_out(written as u64);
        }
        Ok(())
    }

    /// Handles one session event; true when it was a request we answered.
    async fn on_session_event(&mut self, ev: SessionEvent) -> bool {
        match ev {
            SessionEvent::Connected { app, caps, .. } => {
                debug!(%app, codecs = ?caps.codecs, caps_ex = caps.caps_ex, "connect");
                self.caps = caps;
            }
            SessionEvent::PublishRequested { req, stream_id, app, name, query } => {
                // boxed, like every rare state (auth callbacks, waiting for a key): the
                // connection's future would otherwise carry it for a viewer's whole life
                Box::pin(self.on_publish(req, stream_id, &app, &name, &query)).await;
                return true;
            }
            SessionEvent::PlayRequested { req, stream_id, app, name, query } => {
                Box::pin(self.on_play(req, stream_id, &app, &name, &query)).await;
                return true;
            }
            SessionEvent::Media { kind, timestamp, payload } => {
                if let Role::Publishing { ingest, .. } = &mut self.role {
                    ingest.media(kind, timestamp, payload);
                }
            }
            SessionEvent::Metadata { payload } => {
                if let Role::Publishing { ingest, .. } = &mut self.role {
                    ingest.metadata(payload);
                }
            }
            SessionEvent::Unpublished => {
                if matches!(self.role, Role::Publishing { .. }) {
                    self.leave();
                }
            }
            SessionEvent::PlayStopped => {
                if matches!(self.role, Role::Playing { .. }) {
                    self.leave();
                }
            }
            SessionEvent::PlayControl { stream_id, control } => self.on_play_control(stream_id, control),
        }
        false
    }

    pub(super) fn refuse(&mut self, req: RequestId, code: &str, why: &str, metric: &'static str) {
        warn!(peer = %self.peer, code, "refused: {why}");
        // (no address: the events are public)
        let what = serde_json::json!({ "protocol": "rtmp", "code": code, "why": why });
        self.ctx.svc.metrics.refused(metric, what);
        self.session.reject(req, code, why);
        self.close_after_flush = true;
    }

    /// Refuses `req` with `code` for `refusal` (the session layer's reason, logged and
    /// counted by its label).
    pub(super) fn refuse_with(&mut self, req: RequestId, code: &str, key: Option<&StreamKey>, refusal: &Refusal) {
        let why = match (refusal, key) {
            (Refusal::Denied(denied), Some(key)) => {
                let action = if code.starts_with("NetStream.Publish") { "Publish" } else { "Play" };
                format!("{action} of {key} denied: {denied}")
            }
            (other, _) => other.to_string(),
        };
        self.refuse(req, code, &why, refusal.reason());
    }
}

/// Resolves at `deadline` when `on`, else never. (A disabled `select!` branch still builds
/// its future: a `Sleep` takes the runtime's handle, on every batch of a viewer.)
async fn idle_wait(on: bool, deadline: Instant) {
    if on {
        tokio::time::sleep_until(deadline).await
    } else {
        std::future::pending().await
    }
}

/// Waits for events of the played stream; never resolves when not playing (or paused).
async fn recv_play(role: &mut Role, out: &mut Vec<HubEvent>) -> Result<bool, crate::hub::Evicted> {
    match role {
        Role::Playing { sub, control, .. } if !control.paused => sub.recv_many(out, PLAY_BATCH).await,
        _ => std::future::pending().await,
    }
}

/// Resolves with what `wait` gives for the published stream (a kick, a reconnect request);
/// never when not publishing.
fn on_published<T, F>(role: &Role, wait: impl FnOnce(Arc<Stream>) -> F + 'static) -> impl Future<Output = T> + 'static
where
    F: Future<Output = T> + 'static,
{
    let stream = match role {
        Role::Publishing { ingest, .. } => Some(ingest.stream().clone()),
        _ => None,
    };
    async move {
        match stream {
            Some(s) => wait(s).await,
            None => std::future::pending().await,
        }
    }
}
