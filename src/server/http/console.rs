//! What the console (`GET /`, `assets/console.*`) reads besides `/api/streams`:
//!
//! - `GET /api/events`: Server-Sent Events, the server's event log (`crate::events`) as it
//!   grows, plus a `stats` event every [`INTERVAL`] (each stream's bitrate in and
//!   viewers, the server's totals), written once per tick for every client. Resumable:
//!   `Last-Event-ID` (or `?last_event_id=` for the first connection) replays what the
//!   backlog still holds after that event, else the client is told to `reset`.
//! - `GET /api/stats`: the server's totals, the recent warnings, the id of the newest
//!   event, and each live stream's bitrate history (the sparklines' last minutes).
//! - `GET /api/streams/APP/STREAM/keyframe`: the latest keyframe as a one-sample MP4 (its
//!   initialization segment and one fragment), which the page decodes with WebCodecs for
//!   a thumbnail; muxed once per keyframe and served from a cache of one per stream.
//!
//! The stats come from [`Sampler`], a task of the HTTP edge that looks at the hub every
//! [`INTERVAL`] whether or not a console is open (the history must exist when one opens).

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::watch;

use super::api::json_response;
use super::response::{full, keyed, not_found, play_key_refusal, text};
use super::{Body, HttpContext};
use crate::events::{unix_ms, Since};
use crate::hub::{lock, StreamKey};
use crate::session::output::{self, Output};

/// How often the stats are sampled and sent.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Samples of bitrate history kept per stream (5 minutes).
pub const HISTORY: usize = 150;
/// An SSE connection with nothing to say sends a comment this often (proxies keep it open).
const KEEPALIVE: Duration = Duration::from_secs(15);

/// The sampled stats and the keyframe cache.
#[derive(Debug)]
pub struct Console {
    inner: Mutex<Sampled>,
    tick: watch::Sender<u64>,
    started: Instant,
    /// Per stream: the last keyframe served as MP4 (see [`Keyframe`]), within
    /// [`MAX_KEYFRAME_BYTES`] in all.
    keyframes: Mutex<HashMap<StreamKey, Keyframe>>,
}

/// The bytes of keyframe MP4s the cache holds at most; past it, the others are dropped.
const MAX_KEYFRAME_BYTES: usize = 32 << 20;

/// A keyframe muxed as MP4: which stream, configuration and DTS it is of (the stream and the
/// configuration held, so their addresses are not reused by others meanwhile).
#[derive(Debug)]
struct Keyframe {
    stream: std::sync::Weak<crate::hub::Stream>,
    config: Arc<crate::media::VideoConfig>,
    dts: i64,
    mp4: Bytes,
}

#[derive(Debug, Default)]
struct Sampled {
    /// Per stream: bytes in at the last sample, and the bitrate history (kbit/s).
    streams: HashMap<StreamKey, (u64, VecDeque<u32>)>,
    /// The `stats` SSE frame of the last tick, and that tick's number.
    frame: Bytes,
    tick: u64,
    /// The server's totals at the last tick.
    server: Value,
}

impl Default for Console {
    fn default() -> Self {
        Self {
            inner: Mutex::default(),
            tick: watch::channel(0).0,
            started: Instant::now(),
            keyframes: Mutex::default(),
        }
    }
}

impl Console {
    /// Takes a sample (every [`INTERVAL`], from [`run`]).
    fn sample(&self, ctx: &HttpContext, dt: f64) {
        let streams = ctx.svc.hub.streams();
        let hls = |k: &StreamKey| ctx.hls.viewers(k);
        let mut inner = lock(&self.inner);
        let mut per_stream = serde_json::Map::new();
        let mut seen = HashMap::with_capacity(streams.len());
        for s in streams.iter().filter(|s| s.key().split_track().is_none()) {
            let bytes = s.stats.bytes_in.load(Ordering::Relaxed);
            let (last, history) = inner.streams.remove(s.key()).unwrap_or((bytes, VecDeque::new()));
            let mut history = history;
            let kbps = (bytes.saturating_sub(last) as f64 * 8.0 / dt / 1000.0).round() as u32;
            if history.len() == HISTORY {
                history.pop_front();
            }
            history.push_back(kbps);
            let viewers: serde_json::Map<String, Value> =
                Output::ALL.iter().map(|o| (o.name().to_string(), json!(output::viewers(s, *o, &hls)))).collect();
            per_stream.insert(
                s.key().to_string(),
                json!({
                    "bitrate_in_kbps": kbps,
                    "viewers": viewers,
                    "bytes_out": s.stats.bytes_out.load(Ordering::Relaxed),
                    "waiting": s.waiting_since().is_some(),
                }),
            );
            seen.insert(s.key().clone(), (bytes, history));
        }
        inner.streams = seen;
        let metrics = &ctx.svc.metrics;
        let bytes_out: u64 = Output::ALL
            .iter()
            .map(|o| metrics.bytes_out.get_or_create(&crate::metrics::protocol(o.name())).get())
            .sum();
        let viewers: usize = output::viewers_by_output(&streams, &hls).iter().map(|(_, n)| n).sum();
        inner.server = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": self.started.elapsed().as_secs(),
            "streams": per_stream.len(),
            "viewers": viewers,
            "bytes_in": metrics.bytes_in.get(),
            "bytes_out": bytes_out,
            "consoles": metrics.events.clients.load(Ordering::Relaxed),
            "warnings": metrics.events.warned(),
        });
        let data = json!({ "t": unix_ms(), "server": inner.server, "streams": per_stream });
        inner.frame = Bytes::from(format!("event: stats\ndata: {data}\n\n"));
        inner.tick += 1;
        let tick = inner.tick;
        drop(inner);
        // streams gone leave the keyframe cache
        lock(&self.keyframes).retain(|k, _| streams.iter().any(|s| s.key() == k));
        self.tick.send_replace(tick);
    }
}

/// Samples the stats every [`INTERVAL`] until shutdown.
pub(crate) async fn run(ctx: Arc<HttpContext>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = ctx.svc.shutdown.cancelled() => return,
        }
        let dt = last.elapsed().as_secs_f64().max(0.5);
        last = Instant::now();
        ctx.console.sample(&ctx, dt);
    }
}

/// `GET /api/stats`.
pub(crate) fn stats(ctx: &HttpContext) -> Response<Body> {
    let events = &ctx.svc.metrics.events;
    let inner = lock(&ctx.console.inner);
    let history: serde_json::Map<String, Value> =
        inner.streams.iter().map(|(k, (_, h))| (k.to_string(), json!(h))).collect();
    json_response(&json!({
        "interval_s": INTERVAL.as_secs(),
        "server": inner.server,
        "last_event_id": events.last_id(),
        "ports": { "rtmp": ctx.rtmp_port, "rtmps": ctx.rtmps_port },
        "admin_api": ctx.admin_token.is_some(),
        "recent_warnings": events.recent_warnings(),
        "bitrate_history_kbps": history,
    }))
}

/// Decrements the SSE client count when the connection's body is dropped.
struct ClientGuard(Arc<HttpContext>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.svc.metrics.events.clients.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Sse {
    ctx: Arc<HttpContext>,
    _guard: ClientGuard,
    cursor: u64,
    events: watch::Receiver<u64>,
    ticks: watch::Receiver<u64>,
    /// The stats tick last sent.
    sent_tick: u64,
    pending: VecDeque<Bytes>,
    done: bool,
}

impl Sse {
    /// The stats frame of a tick not sent yet.
    fn new_stats(&mut self) -> Option<Bytes> {
        let inner = lock(&self.ctx.console.inner);
        if inner.tick <= self.sent_tick || inner.frame.is_empty() {
            return None;
        }
        self.sent_tick = inner.tick;
        Some(inner.frame.clone())
    }
}

/// `GET /api/events`.
pub(crate) fn events(ctx: &Arc<HttpContext>, last_event_id: Option<&str>, query: &str) -> Response<Body> {
    let events = &ctx.svc.metrics.events;
    events.clients.fetch_add(1, Ordering::Relaxed);
    let guard = ClientGuard(ctx.clone());
    let from_query = crate::auth::query_param(query, "last_event_id").and_then(super::api::percent_decode);
    let asked = last_event_id.map(str::to_string).or(from_query);
    let mut pending = VecDeque::from([Bytes::from_static(b"retry: 2000\n\n")]);
    let newest = events.newest();
    let cursor = match asked {
        None => newest,
        Some(id) => match events.cursor(&id).map(|c| (c, events.since(c))) {
            Some((c, Since::Frames(..))) => c,
            // from another run of the process, or older than the backlog: start over
            _ => {
                pending.push_back(Bytes::from(format!("event: reset\ndata: {{\"t\":{}}}\n\n", unix_ms())));
                newest
            }
        },
    };
    let ticks = ctx.console.tick.subscribe();
    let mut state = Sse {
        ctx: ctx.clone(),
        _guard: guard,
        cursor,
        events: events.watch(),
        ticks,
        sent_tick: 0,
        pending,
        done: false,
    };
    // the stats as of the last tick, at once
    if let Some(stats) = state.new_stats() {
        state.pending.push_back(stats);
    }
    let body = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(frame) = st.pending.pop_front() {
                return Some((Ok::<_, Infallible>(Frame::data(frame)), st));
            }
            if st.done {
                return None;
            }
            match st.ctx.svc.metrics.events.since(st.cursor) {
                Since::Frames(frames, last) if !frames.is_empty() => {
                    // the frames themselves (shared by every client), not a copy
                    st.cursor = last;
                    st.pending.extend(frames);
                    continue;
                }
                Since::Frames(..) => {}
                Since::Lost => {
                    // it read slower than events came: its place in the backlog is gone
                    st.ctx.svc.metrics.limit_hit("sse_backlog");
                    tracing::debug!("an event stream client fell behind the backlog; dropping it");
                    return None;
                }
            }
            if let Some(stats) = st.new_stats() {
                st.pending.push_back(stats);
                continue;
            }
            tokio::select! {
                _ = st.events.changed() => {}
                // (the frame is taken by `new_stats` on the next turn)
                _ = st.ticks.changed() => {}
                _ = tokio::time::sleep(KEEPALIVE) => st.pending.push_back(Bytes::from_static(b":\n\n")),
                _ = st.ctx.svc.shutdown.cancelled() => st.done = true,
            }
        }
    });
    let mut r = Response::new(StreamBody::new(body).boxed());
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    r
}

/// `GET /api/streams/APP/STREAM/keyframe`: behind the app's play keys.
pub(crate) fn keyframe(ctx: &HttpContext, key: &StreamKey, peer: SocketAddr, query: &str) -> Response<Body> {
    if let Some(refusal) = play_key_refusal(ctx, &key.app, &key.name, peer, "keyframe", query) {
        return refusal;
    }
    let Some(stream) = ctx.svc.hub.get(key) else { return not_found() };
    let Some((config, frame)) = stream.latest_keyframe() else {
        return text(StatusCode::NOT_FOUND, "no keyframe yet (or no video)\n");
    };
    let same = |k: &Keyframe| {
        k.dts == frame.dts && Arc::ptr_eq(&k.config, &config) && std::ptr::eq(k.stream.as_ptr(), Arc::as_ptr(&stream))
    };
    let cached = lock(&ctx.console.keyframes).get(key).filter(|k| same(k)).map(|k| k.mp4.clone());
    let mp4 = match cached {
        Some(mp4) => mp4,
        None => match one_sample_mp4(&config, &frame) {
            Some(mp4) => {
                let mut cache = lock(&ctx.console.keyframes);
                cache.remove(key);
                let held: usize = cache.values().map(|k| k.mp4.len()).sum();
                if held + mp4.len() > MAX_KEYFRAME_BYTES {
                    // (rare: hundreds of streams with large keyframes) start over
                    cache.clear();
                }
                let entry = Keyframe { stream: Arc::downgrade(&stream), config, dts: frame.dts, mp4: mp4.clone() };
                cache.insert(key.clone(), entry);
                mp4
            }
            None => return text(StatusCode::UNPROCESSABLE_ENTITY, "the keyframe does not mux\n"),
        },
    };
    let cache = if keyed(ctx, &key.app) { "private, no-cache" } else { "no-cache" };
    let mut r = full("video/mp4", cache, mp4);
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// The initialization segment for `config` and one fragment holding `frame` at time 0.
fn one_sample_mp4(config: &Arc<crate::media::VideoConfig>, frame: &crate::media::VideoFrame) -> Option<Bytes> {
    use livegate_proto::mux::Fmp4Muxer;
    let mut muxer = Fmp4Muxer::new();
    let codec = crate::media::CodecConfig { video: Some(config.clone()), ..Default::default() };
    muxer.set_config(&codec).ok()?;
    let sample = crate::media::VideoFrame { dts: 0, cts: 0, keyframe: true, data: frame.data.clone() };
    muxer.start_segment();
    muxer.prepare_video(&sample).ok()?;
    muxer.commit_video(&sample);
    let fragment = muxer.finish_segment(Some(40));
    let init = muxer.init_segment()?;
    let mut out = BytesMut::with_capacity(init.len() + fragment.len());
    out.extend_from_slice(init);
    out.extend_from_slice(&fragment);
    Some(out.freeze())
}
