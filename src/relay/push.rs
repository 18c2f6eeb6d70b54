//! One push target of one stream: a reader of the stream that publishes it to another
//! server over RTMP or RTMPS through the sans-IO client flow (`rtmp::ClientSession`).
//!
//! Isolation: each target is a task of its own with a queue bounded in bytes
//! (`[relay] queue_bytes`). The task always reads the stream, so the publisher and the
//! other targets never wait for it; when a frame would not fit in the queue, it and
//! everything up to the next video keyframe are dropped (a skip, counted and logged once per
//! skip). A target that takes no byte for `stall_timeout_ms` while bytes wait is
//! reconnected. Failures reconnect with exponential backoff and jitter (1 s doubling to
//! 30 s, reset after a minute connected), for as long as the stream lives; each change of
//! failure is logged once, with the target's answer.

use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::target::PushUrl;
use super::RelayConfig;
use crate::flv::{tag_bodies, TagCodecs, TagType};
use crate::hub::{lock, Hub, HubEvent, Stream, Subscription};
use crate::media::CodecConfig;
use crate::rtmp::{ClientEvent, ClientRole, ClientState, MediaKind};
use crate::Piece;

/// Backoff after a failure: 1 s doubling to 30 s, reset after a minute connected.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Send buffer of a push socket.
const SEND_BUFFER: usize = 256 * 1024;
/// Pieces written per vectored write.
const MAX_IOV: usize = 64;

/// What `/api/streams` shows of a target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PushStatus {
    pub id: u64,
    /// The URL with its stream key masked.
    pub url: String,
    /// `connecting`, `publishing`, `waiting` (backoff after a failure), `refused` (the
    /// target cannot take the stream's codecs: retried at the longest backoff), `stopped`.
    pub state: &'static str,
    pub connected_since_unix_ms: Option<u64>,
    pub bytes: u64,
    pub bitrate_kbps: u64,
    pub skips: u64,
    pub reconnects: u64,
    pub last_error: Option<String>,
    /// Where it came from: `config`, `api` or `callback`.
    pub source: &'static str,
}

/// A running push: its status, and a way to stop it (the admin API's DELETE).
#[derive(Debug)]
pub struct PushHandle {
    pub status: Mutex<PushStatus>,
    pub stop: tokio_util::sync::CancellationToken,
    /// Where it goes.
    pub(crate) target: PushUrl,
    /// For the bitrate: (when, bytes) at the last look.
    rate: Mutex<(Instant, u64)>,
    /// The stream pushed (for the state changes reported to `/api/events`).
    stream: String,
}

impl PushHandle {
    pub fn new(id: u64, stream: &crate::hub::StreamKey, url: &PushUrl, source: &'static str) -> Arc<Self> {
        Arc::new(Self {
            status: Mutex::new(PushStatus {
                id,
                url: url.masked(),
                state: "connecting",
                connected_since_unix_ms: None,
                bytes: 0,
                bitrate_kbps: 0,
                skips: 0,
                reconnects: 0,
                last_error: None,
                source,
            }),
            stop: tokio_util::sync::CancellationToken::new(),
            target: url.clone(),
            rate: Mutex::new((Instant::now(), 0)),
            stream: stream.to_string(),
        })
    }

    /// The status, with the bitrate over the time since the last look (at least 1 s).
    pub fn snapshot(&self) -> PushStatus {
        let mut s = lock(&self.status).clone();
        let mut rate = lock(&self.rate);
        let dt = rate.0.elapsed();
        if dt >= Duration::from_secs(1) {
            let kbps = (s.bytes.saturating_sub(rate.1) as f64 * 8.0 / dt.as_secs_f64() / 1000.0) as u64;
            lock(&self.status).bitrate_kbps = kbps;
            s.bitrate_kbps = kbps;
            *rate = (Instant::now(), s.bytes);
        }
        s
    }

    fn set(&self, f: impl FnOnce(&mut PushStatus)) {
        f(&mut lock(&self.status));
    }

    /// Sets the status; a change of state is reported (`push` on `/api/events`).
    fn set_state(&self, metrics: &crate::metrics::Metrics, f: impl FnOnce(&mut PushStatus)) {
        let (before, after) = {
            let mut s = lock(&self.status);
            let before = s.state;
            f(&mut s);
            (before, s.clone())
        };
        if before != after.state {
            self.report(metrics, &after);
        }
    }

    /// Reports the push's state (`push` on `/api/events`).
    pub(crate) fn report(&self, metrics: &crate::metrics::Metrics, s: &PushStatus) {
        let data = serde_json::json!({
            "stream": self.stream, "id": s.id, "url": s.url, "state": s.state, "last_error": s.last_error,
        });
        metrics.events.emit("push", data);
    }
}

/// Why one connection to the target ended.
enum Outcome {
    /// The stream ended (after its reconnect grace): the push is over.
    StreamEnded,
    /// Stopped through the API, or the server shuts down.
    Stopped,
    /// Failed: the reason, and whether the target refused the stream's codecs.
    Failed { why: String, refused: bool, connected_for: Duration },
}

/// Pushes `stream` to `url` until the stream ends or the push is stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    hub: Hub,
    stream: Arc<Stream>,
    url: PushUrl,
    handle: Arc<PushHandle>,
    config: Arc<RelayConfig>,
    metrics: Arc<crate::metrics::Metrics>,
    tls: Option<tokio_rustls::TlsConnector>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let key = stream.key().clone();
    let source = if url.track > 0 {
        // a track of a multitrack publish is a stream of its own
        let track_key = key.track(url.track);
        match wait_for_track(&hub, &stream, &track_key).await {
            Some(s) => s,
            None => {
                warn!(stream = %key, target = %url, "push: the publish has no video track {}", url.track);
                handle.set_state(&metrics, |s| {
                    s.state = "stopped";
                    s.last_error = Some(format!("the publish has no video track {}", url.track));
                });
                return;
            }
        }
    } else {
        stream.clone()
    };
    info!(stream = %key, target = %url, "push starting");
    let mut backoff = BACKOFF_MIN;
    let mut last_logged: Option<String> = None;
    loop {
        handle.set_state(&metrics, |s| s.state = "connecting");
        let outcome = tokio::select! {
            o = push_once(&source, &url, &handle, &config, &metrics, tls.as_ref()) => o,
            _ = handle.stop.cancelled() => Outcome::Stopped,
            _ = shutdown.cancelled() => Outcome::Stopped,
        };
        let (why, refused) = match outcome {
            Outcome::StreamEnded => {
                info!(stream = %key, target = %url, "stream ended; push stopped");
                break;
            }
            Outcome::Stopped => {
                info!(stream = %key, target = %url, "push stopped");
                break;
            }
            Outcome::Failed { why, refused, connected_for } => {
                if connected_for >= BACKOFF_RESET_AFTER {
                    backoff = BACKOFF_MIN;
                }
                (why, refused)
            }
        };
        if refused {
            backoff = BACKOFF_MAX;
        }
        // once per change of failure: a target that fails the same way forever logs once
        if last_logged.as_deref() != Some(why.as_str()) {
            warn!(stream = %key, target = %url, "push failed: {why}; retrying with backoff (up to {} s)", BACKOFF_MAX.as_secs());
            last_logged = Some(why.clone());
        }
        metrics.push_reconnects.inc();
        handle.set_state(&metrics, |s| {
            s.state = if refused { "refused" } else { "waiting" };
            s.connected_since_unix_ms = None;
            s.last_error = Some(why);
            s.reconnects += 1;
        });
        let wait = jitter(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        if source.is_ended() {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wait_ended(&source) => break,
            _ = handle.stop.cancelled() => break,
            _ = shutdown.cancelled() => break,
        }
    }
    handle.set_state(&metrics, |s| {
        s.state = "stopped";
        s.connected_since_unix_ms = None;
    });
}

/// `d` ± 20 %, so that pushes that failed together do not retry together.
fn jitter(d: Duration) -> Duration {
    let f = 0.8 + rand::random::<f64>() * 0.4;
    d.mul_f64(f)
}

/// Resolves when `stream` has ended (checked once a second; only while backing off).
async fn wait_ended(stream: &Arc<Stream>) {
    while !stream.is_ended() {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The stream of track `key` of a multitrack publish, once the publish has it (up to 10 s).
async fn wait_for_track(hub: &Hub, stream: &Arc<Stream>, key: &crate::hub::StreamKey) -> Option<Arc<Stream>> {
    for _ in 0..100 {
        if stream.is_ended() {
            return None;
        }
        if let Some(s) = hub.get(key) {
            return Some(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

async fn push_once(
    stream: &Arc<Stream>,
    url: &PushUrl,
    handle: &PushHandle,
    config: &RelayConfig,
    metrics: &crate::metrics::Metrics,
    tls: Option<&tokio_rustls::TlsConnector>,
) -> Outcome {
    let started = Instant::now();
    let fail = |why: String| Outcome::Failed { why, refused: false, connected_for: Duration::ZERO };
    let connect = tokio::time::timeout(config.connect_timeout(), TcpStream::connect((url.host.as_str(), url.port)));
    let tcp = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return fail(format!("connect to {}:{}: {e}", url.host, url.port)),
        Err(_) => {
            return fail(format!(
                "connect to {}:{}: no answer within {:?}",
                url.host,
                url.port,
                config.connect_timeout()
            ))
        }
    };
    let _ = tcp.set_nodelay(true);
    // the kernel's send buffer is bounded too (loopback's would otherwise take megabytes
    // before the queue fills), so a stalled target is noticed by what it takes
    let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
    match (url.tls, tls) {
        (true, Some(tls)) => {
            let name = match rustls_pki_types::ServerName::try_from(url.host.clone()) {
                Ok(n) => n,
                Err(e) => return fail(format!("TLS server name {}: {e}", url.host)),
            };
            let handshake = tokio::time::timeout(config.connect_timeout(), tls.connect(name, tcp));
            match handshake.await {
                Ok(Ok(s)) => drive(s, stream, url, handle, config, metrics, started).await,
                Ok(Err(e)) => fail(format!("TLS: {e}")),
                Err(_) => fail("TLS: no handshake within the connect timeout".to_string()),
            }
        }
        (true, None) => fail("TLS is not available (no root certificates loaded)".to_string()),
        (false, _) => drive(tcp, stream, url, handle, config, metrics, started).await,
    }
}

/// Runs the client flow over `io` and, once publishing, the stream's events into it.
async fn drive<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    stream: &Arc<Stream>,
    url: &PushUrl,
    handle: &PushHandle,
    config: &RelayConfig,
    metrics: &crate::metrics::Metrics,
    started: Instant,
) -> Outcome {
    let (mut rd, mut wr) = tokio::io::split(io);
    let (mut client, params) =
        super::relay_client(config, ClientRole::Publish, url.tc_url(), url.app.clone(), url.stream.clone());
    client.start(params, Instant::now());
    let mut inbuf = BytesMut::with_capacity(4096);
    let mut queue: std::collections::VecDeque<Piece> = std::collections::VecDeque::new();
    let mut queued = 0usize;
    let mut sub: Option<Subscription> = None;
    let mut events = Vec::with_capacity(64);
    let mut codecs = TagCodecs::with_video_metadata();
    let mut last_ts: i64 = 0;
    let mut skipping = false;
    let mut last_progress = Instant::now();
    let stall = config.stall_timeout();
    let queue_bytes = config.queue_bytes;
    let connected_for = |s: Instant| s.elapsed();
    loop {
        // take what the session queued (commands, acks) into the socket queue
        while let Some(p) = client.poll_transmit() {
            queued += p.len();
            queue.push_back(p);
        }
        while let Some(ev) = client.poll_event() {
            match ev {
                ClientEvent::Publishing { .. } => {
                    let now_ms =
                        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
                    handle.set_state(metrics, |s| {
                        s.state = "publishing";
                        s.connected_since_unix_ms = Some(now_ms);
                        s.last_error = None;
                    });
                    info!(stream = %stream.key(), target = %url, "push publishing");
                    sub = Some(stream.subscribe());
                }
                ClientEvent::Failed(f) => {
                    return Outcome::Failed {
                        why: f.to_string(),
                        refused: false,
                        connected_for: connected_for(started),
                    }
                }
                ClientEvent::Ended { code } => {
                    return Outcome::Failed {
                        why: format!("the target ended the publish: {code}"),
                        refused: false,
                        connected_for: connected_for(started),
                    }
                }
                _ => {}
            }
        }
        if client.state() == ClientState::Failed {
            return Outcome::Failed {
                why: "RTMP flow failed".into(),
                refused: false,
                connected_for: connected_for(started),
            };
        }
        // a target that takes nothing while bytes wait is stalled
        if queued > 0 && last_progress.elapsed() >= stall {
            return Outcome::Failed {
                why: format!("the target took no bytes for {} ms", stall.as_millis()),
                refused: false,
                connected_for: connected_for(started),
            };
        }
        let deadline = client.poll_timeout().map(tokio::time::Instant::from_std);
        let stall_at = tokio::time::Instant::from_std(last_progress + stall);
        let iov: Vec<IoSlice<'_>> = queue.iter().take(MAX_IOV).map(|p| IoSlice::new(p)).collect();
        tokio::select! {
            r = rd.read_buf(&mut inbuf) => match r {
                Ok(0) => return Outcome::Failed { why: "the target closed the connection".into(), refused: false, connected_for: connected_for(started) },
                Ok(_) => {
                    if inbuf.len() > 1 << 20 && client.state() != ClientState::Publishing {
                        return Outcome::Failed { why: "the target sent more than 1 MiB before publishing".into(), refused: false, connected_for: connected_for(started) };
                    }
                    if let Err(e) = client.receive(&mut inbuf, Instant::now()) {
                        return Outcome::Failed { why: format!("bad RTMP from the target: {e}"), refused: false, connected_for: connected_for(started) };
                    }
                }
                Err(e) => return Outcome::Failed { why: format!("read: {e}"), refused: false, connected_for: connected_for(started) },
            },
            w = wr.write_vectored(&iov), if !iov.is_empty() => match w {
                Ok(0) => return Outcome::Failed { why: "write: connection closed".into(), refused: false, connected_for: connected_for(started) },
                Ok(mut n) => {
                    drop(iov);
                    last_progress = Instant::now();
                    queued -= n;
                    handle.set(|s| s.bytes += n as u64);
                    metrics.push_bytes.inc_by(n as u64);
                    while n > 0 {
                        let Some(front) = queue.front_mut() else { break };
                        if front.len() <= n {
                            n -= front.len();
                            queue.pop_front();
                        } else {
                            front.advance(n);
                            n = 0;
                        }
                    }
                    if queue.is_empty() {
                        let _ = wr.flush().await;
                    }
                    continue;
                }
                Err(e) => return Outcome::Failed { why: format!("write: {e}"), refused: false, connected_for: connected_for(started) },
            },
            got = async { match sub.as_mut() { Some(s) => s.recv_many(&mut events, 64).await, None => std::future::pending().await } } => {
                match got {
                    Ok(true) => {}
                    Ok(false) => {
                        client.close();
                        while let Some(p) = client.poll_transmit() {
                            let _ = wr.write_all(&p).await;
                        }
                        return Outcome::StreamEnded;
                    }
                    Err(_evicted) => {
                        // cannot happen while the task reads every event; start again at live
                        sub = Some(stream.subscribe());
                        continue;
                    }
                }
                for ev in events.drain(..) {
                    if let HubEvent::Config(c) = &ev {
                        if let Some(why) = codec_refusal(c, client.server_capabilities()) {
                            return Outcome::Failed { why, refused: true, connected_for: connected_for(started) };
                        }
                    }
                    if ev == HubEvent::EndOfStream {
                        continue;
                    }
                    if let HubEvent::Frame(f) = &ev {
                        let keyframe = f.is_video() && f.is_keyframe();
                        if skipping && !keyframe {
                            continue;
                        }
                        let size = f.payload_len() + 32;
                        if queued + size > queue_bytes {
                            if !skipping {
                                skipping = true;
                                handle.set(|s| s.skips += 1);
                                metrics.push_skips.inc();
                                warn!(stream = %stream.key(), target = %url, "push target is behind ({queued} bytes queued, limit {queue_bytes}); skipping to the next keyframe");
                            }
                            continue;
                        }
                        skipping = false;
                        last_ts = f.dts();
                    }
                    for body in tag_bodies(ev, last_ts, &mut codecs) {
                        let r = match body.tag_type {
                            TagType::Script => client.send_metadata(body.payload),
                            t => {
                                let kind = if t == TagType::Video { MediaKind::Video } else { MediaKind::Audio };
                                let ts = body.timestamp as u32;
                                let (header, len, payload) = body.into_parts();
                                client.send_media_parts(kind, ts, &header[..len], payload)
                            }
                        };
                        if r.is_err() {
                            return Outcome::Failed { why: "not publishing".into(), refused: false, connected_for: connected_for(started) };
                        }
                    }
                }
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(stall_at)), if deadline.is_some() || queued > 0 => {
                client.handle_timeout(Instant::now());
            }
        }
    }
}

/// Why the stream's codecs cannot go to a target that answered `connect` with `server`:
/// H.264, AAC and MP3 go as legacy FLV to anyone; an Enhanced RTMP codec only to a target
/// that listed it (a legacy target would get garbage; see `session::unannounced_codec`).
fn codec_refusal(c: &CodecConfig, server: Option<&crate::rtmp::ClientCapabilities>) -> Option<String> {
    let fourcc = crate::session::unannounced_codec(c, server, false)?;
    let name = String::from_utf8_lossy(fourcc);
    Some(format!("the target does not take {name}: its connect answer did not list it (Enhanced RTMP fourCcList)"))
}
