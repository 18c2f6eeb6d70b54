//! The RTMP edge: accepts TCP (and TLS) connections and drives one sans-IO
//! `rtmp::ServerSession` per connection, connecting publishers and RTMP
//! viewers to the hub. Protocol logic lives in `rtmp`, demuxing in `flv`,
//! fan-out in `hub`, decisions in `auth`; what stays here is the connection's
//! `select!` loop (socket, play subscription, kick, timeouts), the byte budgets
//! of connections that do not publish, and the publish/play admission (a publish
//! waiting for its key is woken when the key is freed).

mod publish;
mod writer;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{Action, AuthRequest, Authorizer};
use crate::config::{LiveSettings, RtmpConfig};
use crate::flv::{tag_bodies, TagType};
use crate::hub::{Hub, HubEvent, Protocol, PublishError, StreamKey, Subscription, ViewerGuard};
use crate::metrics::reason;
use crate::rtmp::{MediaKind, RequestId, ServerSession, SessionConfig, SessionEvent};
use publish::Ingest;
use writer::Writer;

/// What an RTMP listener needs; shared by its connections.
pub struct RtmpContext {
    pub config: RtmpConfig,
    /// Per-app policies and limits (replaced on reload).
    pub settings: Arc<LiveSettings>,
    pub hub: Hub,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub auth: Authorizer,
    pub shutdown: CancellationToken,
    /// The budget of unfinished messages of connections that do not publish, all listeners
    /// together (`limits.unpublished_message_bytes`).
    pub unpublished_budget: Arc<UnpublishedBudget>,
    /// Open RTMP and RTMPS connections together (one `limits.max_rtmp_connections`).
    pub connections: Arc<crate::server::listener::ConnectionLimiter>,
}

/// Accepts RTMP connections (RTMPS when `tls` is given) until shutdown.
pub async fn serve(listener: TcpListener, ctx: Arc<RtmpContext>, tls: Option<TlsAcceptor>) {
    let proto: &'static str = if tls.is_some() { "rtmps" } else { "rtmp" };
    let (metrics, shutdown) = (ctx.metrics.clone(), ctx.shutdown.clone());
    let settings = ctx.settings.clone();
    let limits = move || {
        let l = &settings.get().limits;
        let (rtmp, _) = crate::server::listener::fd_limited(l.max_rtmp_connections, l.max_http_connections);
        (rtmp, l.max_rtmp_connections_per_ip)
    };
    let limiter = ctx.connections.clone();
    crate::server::listener::accept_loop(listener, proto, limits, limiter, metrics, shutdown, |sock, peer| {
        let ctx = ctx.clone();
        let tls = tls.clone();
        async move {
            let Some(acceptor) = tls else {
                return Connection::new(sock, peer, proto, ctx).run().await;
            };
            let timeout = Duration::from_millis(ctx.config.handshake_timeout_ms);
            match tokio::time::timeout(timeout, acceptor.accept(sock)).await {
                Ok(Ok(tls)) => Connection::new(tls, peer, proto, ctx).run().await,
                Ok(Err(e)) => {
                    ctx.metrics.handshake_failures.inc();
                    warn!(%peer, "closing RTMPS connection: TLS handshake failed: {e}");
                }
                Err(_) => {
                    ctx.metrics.handshake_failures.inc();
                    warn!(%peer, "closing RTMPS connection: TLS handshake timed out");
                }
            }
        }
    })
    .await
}

enum Role {
    Idle,
    Publishing(Box<Ingest>),
    Playing { sub: Subscription, stream_id: u32, last_ts: i64, query: String, _guard: ViewerGuard },
}

struct Connection<S> {
    peer: SocketAddr,
    proto: &'static str,
    ctx: Arc<RtmpContext>,
    session: ServerSession,
    writer: Writer<tokio::io::WriteHalf<S>>,
    read: ReadHalf<S>,
    role: Role,
    /// Since when the connection neither publishes nor plays.
    idle_since: Instant,
    /// Close once everything queued has been written (after a refusal or the end of a played stream).
    close_after_flush: bool,
}

/// The process-wide budget of unfinished RTMP messages of connections that do not
/// publish (`limits.unpublished_message_bytes`, read at each reservation so a reload
/// applies).
#[derive(Debug)]
pub struct UnpublishedBudget {
    used: AtomicUsize,
    settings: Arc<LiveSettings>,
}

impl UnpublishedBudget {
    pub fn new(settings: Arc<LiveSettings>) -> Self {
        Self { used: AtomicUsize::new(0), settings }
    }
}

impl crate::rtmp::chunk::SharedBudget for UnpublishedBudget {
    fn try_reserve(&self, bytes: usize) -> bool {
        let limit = self.settings.get().limits.unpublished_message_bytes;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| u.checked_add(bytes).filter(|&n| n <= limit))
            .is_ok()
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

/// Hub events taken per wake-up for an RTMP viewer.
const PLAY_BATCH: usize = 64;
/// How long a kicked publisher's goodbye may take to write.
const KICK_FLUSH: Duration = Duration::from_secs(1);
/// How long a publish waits for its key to be freed by a publisher that is leaving
/// (or that it took over) before it is refused.
const KEY_WAIT: Duration = Duration::from_secs(1);
/// A publisher silent this long is probably dead: a new publish on its key waits until it
/// may take over (`takeover_idle_ms`) instead of being refused after `KEY_WAIT`.
const SILENT: Duration = Duration::from_millis(500);

impl<S: AsyncRead + AsyncWrite + Send + 'static> Connection<S> {
    fn new(sock: S, peer: SocketAddr, proto: &'static str, ctx: Arc<RtmpContext>) -> Self {
        let mut session = ServerSession::new(SessionConfig {
            max_message_size: ctx.config.max_message_size,
            out_chunk_size: ctx.config.out_chunk_size,
            rng_seed: rand::random(),
            ..SessionConfig::default()
        });
        // nothing is held yet, so this always fits
        let _ = session.set_shared_budget(Some(ctx.unpublished_budget.clone()));
        let (read, write) = tokio::io::split(sock);
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
        }
    }

    async fn run(mut self) {
        debug!("connected");
        let result = self.serve().await;
        if !self.session.is_handshake_done() {
            self.ctx.metrics.handshake_failures.inc();
        }
        match result {
            Ok(()) => debug!("connection closed"),
            Err(e) => {
                if matches!(
                    e.downcast_ref(),
                    Some(crate::rtmp::RtmpError::BufferBudget { .. } | crate::rtmp::RtmpError::SharedBudget { .. })
                ) {
                    self.ctx.metrics.limit_hit("rtmp_message_buffer");
                }
                warn!(peer = %self.peer, "closing RTMP connection: {e:#}")
            }
        }
        self.leave();
    }

    /// Ends the current role: notifies callbacks and frees the stream key.
    fn leave(&mut self) {
        let (stream, action, query) = match std::mem::replace(&mut self.role, Role::Idle) {
            Role::Publishing(ingest) => {
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
        self.ctx.auth.notify(&self.ctx.settings.get().apps.get(&key.app).auth, req);
    }

    async fn serve(&mut self) -> anyhow::Result<()> {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        let mut events = Vec::with_capacity(PLAY_BATCH);
        let handshake_deadline = Instant::now() + Duration::from_millis(self.ctx.config.handshake_timeout_ms);
        let idle = Duration::from_millis(self.ctx.config.idle_timeout_ms);
        let mut idle_deadline = Instant::now() + idle;
        let shutdown = self.ctx.shutdown.clone();
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
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            let kicked = kicked(&self.role);
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.goodbye();
                    self.flush().await?;
                    return Ok(());
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
                    if let Role::Publishing(ingest) = &self.role {
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
                    anyhow::bail!("handshake not completed within {}ms", self.ctx.config.handshake_timeout_ms);
                }
            }
        }
    }

    /// Tells the peer the session is over (server shutdown or kick).
    fn goodbye(&mut self) {
        match &self.role {
            Role::Playing { stream_id, .. } => self.session.send_end_of_stream(*stream_id),
            Role::Publishing(ingest) => {
                self.session.send_status(ingest.stream_id(), "status", "NetStream.Unpublish.Success", "server closing")
            }
            Role::Idle => {}
        }
    }

    async fn flush(&mut self) -> anyhow::Result<()> {
        while let Some(b) = self.session.poll_transmit() {
            self.writer.queue(b);
        }
        let stall = Duration::from_millis(self.ctx.config.viewer_stall_timeout_ms);
        let written = match tokio::time::timeout(stall, self.writer.flush()).await {
            Ok(r) => r?,
            Err(_) => {
                if let Role::Playing { sub, .. } = &self.role {
                    sub.stream().count_eviction();
                }
                anyhow::bail!("peer accepted nothing for {stall:?}");
            }
        };
        if let Role::Playing { sub, .. } = &self.role {
            sub.stream().count_bytes_out(Protocol::RtmpPlay, written as u64);
        }
        Ok(())
    }

    /// Handles one session event; true when it was a request we answered.
    async fn on_session_event(&mut self, ev: SessionEvent) -> bool {
        match ev {
            SessionEvent::Connected { app, .. } => debug!(%app, "connect"),
            SessionEvent::PublishRequested { req, stream_id, app, name, query } => {
                self.on_publish(req, stream_id, &app, &name, &query).await;
                return true;
            }
            SessionEvent::PlayRequested { req, stream_id, app, name, query } => {
                self.on_play(req, stream_id, &app, &name, &query).await;
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
                if matches!(self.role, Role::Publishing(_)) {
                    self.leave();
                }
            }
            SessionEvent::PlayStopped => {
                if matches!(self.role, Role::Playing { .. }) {
                    self.leave();
                }
            }
        }
        false
    }

    fn refuse(&mut self, req: RequestId, code: &str, why: &str, metric: &'static str) {
        warn!(peer = %self.peer, code, "refused: {why}");
        self.ctx.metrics.rejected.get_or_create(&reason(metric)).inc();
        self.session.reject(req, code, why);
        self.close_after_flush = true;
    }

    /// Asks the app's auth (keys, then callback); on denial refuses `req` with `code` and returns false.
    async fn authorize(&mut self, req: RequestId, action: Action, key: &StreamKey, query: &str, code: &str) -> bool {
        let ctx = self.ctx.clone();
        let settings = ctx.settings.get();
        let policy = settings.apps.get(&key.app);
        let auth_req = AuthRequest::for_stream(action, key, self.peer, self.proto, query);
        match ctx.auth.check(&policy.auth, &auth_req).await {
            Ok(()) => true,
            Err(denied) => {
                let why = format!("{action:?} of {key} denied: {denied}");
                self.refuse(req, code, &why, denied.reason());
                false
            }
        }
    }

    async fn on_publish(&mut self, req: RequestId, stream_id: u32, app: &str, name: &str, query: &str) {
        const BAD_NAME: &str = "NetStream.Publish.BadName";
        if !matches!(self.role, Role::Idle) {
            return self.refuse(req, BAD_NAME, "this connection already publishes or plays", "bad_request");
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse(req, BAD_NAME, "invalid app or stream name", "bad_name");
        };
        if !self.authorize(req, Action::Publish, &key, query, "NetStream.Publish.Unauthorized").await {
            return;
        }
        let ctx = self.ctx.clone();
        let settings = ctx.settings.get();
        let policy = settings.apps.get(app);
        let takeover = Duration::from_millis(ctx.config.takeover_idle_ms);
        let mut deadline = Instant::now() + KEY_WAIT;
        let mut took_over = false;
        let published = loop {
            let released = ctx.hub.key_released();
            let got = ctx.hub.publish_with(key.clone(), self.peer, policy.gop_cache.clone());
            let Err(PublishError::AlreadyPublishing(_)) = got else { break got };
            // when to look at the old publisher's silence again, unless the key is freed first
            let mut recheck = deadline;
            // the current publisher may be leaving (its teardown frees the key in a moment), or
            // be a dead connection the encoder is replacing (it sends nothing: take over)
            if let Some(old) = ctx.hub.get(&key).filter(|_| !took_over && !takeover.is_zero()) {
                let idle = old.input_idle();
                let now = Instant::now();
                // the next silence that matters: SILENT (the wait is extended) or takeover
                let next = if idle < SILENT.min(takeover) { SILENT.min(takeover) } else { takeover };
                recheck = now + next.saturating_sub(idle);
                if idle >= takeover {
                    warn!(stream = %key, old = %old.publisher_addr(), "taking the stream over: its publisher sent nothing for {idle:?}");
                    old.kick("replaced by a new publisher after sending nothing");
                    took_over = true;
                    // give the old connection the full wait to let go of the key
                    deadline = deadline.max(Instant::now() + KEY_WAIT);
                } else if idle >= SILENT {
                    // already silent for longer than any live encoder: wait until it may be replaced
                    deadline = deadline.max(Instant::now() + (takeover - idle) + Duration::from_millis(100));
                }
            }
            if Instant::now() >= deadline {
                break got;
            }
            // wait for the key to be freed (a notification, not a polling loop), or until
            // it is time to look at the old publisher's silence again
            let _ = tokio::time::timeout_at(recheck.min(deadline), released).await;
        };
        match published {
            Ok(publisher) => {
                info!(stream = %key, "publishing");
                ctx.metrics.publishes.inc();
                self.session.accept(req);
                // a publisher's unfinished messages no longer count against the budget of
                // connections that do not publish (its own 2 × max_message_size still holds)
                self.session.set_shared_budget(None);
                self.role = Role::Publishing(Box::new(Ingest::new(publisher, stream_id, query.to_string())));
            }
            Err(e @ PublishError::AlreadyPublishing(_)) => {
                self.refuse(req, BAD_NAME, &e.to_string(), "already_publishing")
            }
            Err(e @ PublishError::TooManyStreams(_)) => {
                self.refuse(req, "NetStream.Publish.Rejected", &e.to_string(), "stream_limit")
            }
        }
    }

    async fn on_play(&mut self, req: RequestId, stream_id: u32, app: &str, name: &str, query: &str) {
        const NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
        if !matches!(self.role, Role::Idle) {
            return self.refuse(
                req,
                "NetStream.Play.Failed",
                "this connection already publishes or plays",
                "bad_request",
            );
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse(req, NOT_FOUND, "invalid app or stream name", "bad_name");
        };
        if !self.authorize(req, Action::Play, &key, query, "NetStream.Play.Unauthorized").await {
            return;
        }
        let ctx = self.ctx.clone();
        let Some(stream) = ctx.hub.get(&key) else {
            return self.refuse(req, NOT_FOUND, &format!("stream {key} is not live"), "not_found");
        };
        let max = ctx.settings.get().limits.max_viewers_per_stream;
        let Some(_guard) = stream.admit_viewer(Protocol::RtmpPlay, max) else {
            let why = format!("stream {key} has reached its limit of {max} viewers");
            return self.refuse(req, "NetStream.Play.Failed", &why, "viewer_limit");
        };
        info!(stream = %key, "RTMP viewer joined");
        self.session.accept(req);
        let sub = stream.subscribe();
        self.role = Role::Playing { sub, stream_id, last_ts: 0, query: query.to_string(), _guard };
    }

    fn send_play_events(&mut self, events: &mut Vec<HubEvent>) {
        let Role::Playing { stream_id, last_ts, .. } = &mut self.role else { return };
        let sid = *stream_id;
        for ev in events.drain(..) {
            if let HubEvent::Frame(f) = &ev {
                *last_ts = f.dts();
            }
            if ev == HubEvent::EndOfStream {
                self.session.send_end_of_stream(sid);
                self.close_after_flush = true;
                continue;
            }
            // the same event → tag body mapping as HTTP-FLV (sequence headers share the
            // configuration record: nothing is built per viewer)
            for body in tag_bodies(&ev, *last_ts) {
                let kind = match body.tag_type {
                    TagType::Script => {
                        self.session.send_metadata(sid, body.payload);
                        continue;
                    }
                    TagType::Video => MediaKind::Video,
                    TagType::Audio => MediaKind::Audio,
                };
                let ts = body.timestamp as u32;
                let (header, len, payload) = body.into_parts();
                self.session.send_media_parts(sid, kind, ts, &header[..len], payload);
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

/// Resolves when the published stream is kicked, with the reason; never when not publishing.
fn kicked(role: &Role) -> impl std::future::Future<Output = &'static str> + 'static {
    let stream = match role {
        Role::Publishing(ingest) => Some(ingest.stream().clone()),
        _ => None,
    };
    async move {
        match stream {
            Some(s) => s.kicked().await,
            None => std::future::pending().await,
        }
    }
}
