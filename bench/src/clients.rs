//! The load client: HTTP-FLV, RTMP-play and HLS viewers and RTMP publishers, each a
//! lightweight tokio task that records what it saw in a `ViewerStat`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use livegate_proto::flv::file::{TagHeader, TagScanner};
use livegate_proto::rtmp::message as msg;
use livegate_proto::rtmp::{ClientConfig, ClientSession, MediaKind};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
pub(crate) struct ViewerStat {
    /// µs from connect start to the first video keyframe (0: none yet)
    pub(crate) first_key_us: AtomicU64,
    /// µs from connect start to the connection being up (TCP; RTMP: the handshake done)
    pub(crate) connected_us: AtomicU64,
    /// µs from connect start to the first bytes of the answer (HTTP: the response head;
    /// RTMP: the first message after play was sent)
    pub(crate) first_byte_us: AtomicU64,
    /// latest media timestamp (ms), -1 before any
    pub(crate) media_ms: AtomicI64,
    pub(crate) error: AtomicBool,
    pub(crate) bytes: AtomicU64,
    /// The `reconnect` scenario: media newer than this (ms) comes from the new publisher...
    pub(crate) mark_ms: AtomicI64,
    /// ...and the first of it arrived this long after [`epoch`] (µs; 0: not yet).
    pub(crate) resumed_us: AtomicU64,
    /// Join storms: once its first keyframe is in, the viewer stops reading for this long
    /// (ms; 0: never), so that this one-threaded client reading the GOPs of the viewers
    /// served first does not delay its noticing the keyframes of the others (the kernel's
    /// socket buffers take the GOP meanwhile; the server's work is unchanged).
    pub(crate) pause_after_key_ms: AtomicU64,
}

/// One instant for the whole run, to compare arrival times across viewers.
pub(crate) fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ViewerStat {
    pub(crate) fn new() -> Self {
        let s = Self::default();
        s.media_ms.store(-1, Ordering::Relaxed);
        s.mark_ms.store(i64::MAX, Ordering::Relaxed);
        s
    }

    /// Notes the newest media time (and when media past the mark first came).
    pub(crate) fn media(&self, ms: i64) {
        self.media_ms.store(ms, Ordering::Relaxed);
        if ms > self.mark_ms.load(Ordering::Relaxed) && self.resumed_us.load(Ordering::Relaxed) == 0 {
            self.resumed_us.store(epoch().elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }
    /// Notes `at` (one of the µs fields) once.
    pub(crate) fn mark(at: &AtomicU64, t0: Instant) {
        if at.load(Ordering::Relaxed) == 0 {
            at.store(t0.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }
    /// The pause a storm viewer takes right after its first keyframe (once).
    pub(crate) async fn pause_after_key(&self) {
        if self.first_key_us.load(Ordering::Relaxed) > 0 {
            let ms = self.pause_after_key_ms.swap(0, Ordering::Relaxed);
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
        }
    }
    pub(crate) fn key(&self, t0: Instant) {
        if self.first_key_us.load(Ordering::Relaxed) == 0 {
            self.first_key_us.store(t0.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }
}

/// An HTTP-FLV viewer (over TLS with `tls`, HTTP/1.1).
pub(crate) async fn flv_viewer(
    http: String,
    path: String,
    st: Arc<ViewerStat>,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<()> {
    let t0 = Instant::now();
    match tls {
        None => flv_play(TcpStream::connect(&http).await?, t0, http, path, st).await,
        Some(c) => flv_play(crate::tls::connect(&c, &http).await?, t0, http, path, st).await,
    }
}

async fn flv_play<S: AsyncRead + AsyncWrite + Unpin>(
    mut sock: S,
    t0: Instant,
    http: String,
    path: String,
    st: Arc<ViewerStat>,
) -> Result<()> {
    // (called as soon as the connection is up: TCP, or TCP and TLS)
    ViewerStat::mark(&st.connected_us, t0);
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes()).await?;
    sock.flush().await?; // (a TLS stream sends on flush)
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let head = read_head(&mut sock, &mut buf).await?;
    ViewerStat::mark(&st.first_byte_us, t0);
    if head.status != 200 || !head.chunked {
        bail!("HTTP-FLV answered {} (chunked: {})", head.status, head.chunked);
    }
    let mut chunked = Chunked::default();
    let mut flv = TagScanner::default();
    loop {
        if !buf.is_empty() {
            st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            let done = chunked.feed(&buf, |data| flv.feed(data, |h, first| note_tag(&st, t0, h, first)))?;
            buf.clear();
            if done {
                return Ok(());
            }
            st.pause_after_key().await;
        }
        if sock.read_buf(&mut buf).await? == 0 {
            bail!("HTTP-FLV connection closed");
        }
    }
}

/// A WebSocket-FLV viewer: the HTTP-FLV URL upgraded to a WebSocket; the FLV comes in
/// binary frames.
pub(crate) async fn ws_viewer(http: String, path: String, st: Arc<ViewerStat>) -> Result<()> {
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(&http).await?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {http}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let head = read_head(&mut sock, &mut buf).await?;
    if head.status != 101 {
        bail!("WebSocket-FLV answered {}", head.status);
    }
    let mut frames = WsFrames::default();
    let mut flv = TagScanner::default();
    loop {
        if !buf.is_empty() {
            st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            let done = frames.feed(&buf, |data| flv.feed(data, |h, first| note_tag(&st, t0, h, first)))?;
            buf.clear();
            if done {
                return Ok(());
            }
        }
        if sock.read_buf(&mut buf).await? == 0 {
            bail!("WebSocket-FLV connection closed");
        }
    }
}

/// Server WebSocket frames (unmasked), passing binary payloads through without copies.
#[derive(Default)]
pub(crate) struct WsFrames {
    header: Vec<u8>,
    left: u64,
    opcode: u8,
}

impl WsFrames {
    /// Returns true at a close frame.
    pub(crate) fn feed(&mut self, mut b: &[u8], mut sink: impl FnMut(&[u8])) -> Result<bool> {
        while !b.is_empty() {
            if self.left > 0 {
                let n = usize::try_from(self.left).unwrap_or(usize::MAX).min(b.len());
                if matches!(self.opcode, 0 | 2) {
                    sink(&b[..n]);
                }
                self.left -= n as u64;
                b = &b[n..];
                continue;
            }
            self.header.push(b[0]);
            b = &b[1..];
            let h = &self.header;
            if h.len() < 2 {
                continue;
            }
            if h[1] & 0x80 != 0 {
                bail!("a masked frame from the server");
            }
            let need = match h[1] & 0x7f {
                126 => 4,
                127 => 10,
                _ => 2,
            };
            if h.len() < need {
                continue;
            }
            let len = match h[1] & 0x7f {
                126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
                127 => u64::from_be_bytes(h[2..10].try_into()?),
                n => u64::from(n),
            };
            self.opcode = h[0] & 0x0f;
            self.header.clear();
            if self.opcode == 8 {
                return Ok(true);
            }
            self.left = len;
        }
        Ok(false)
    }
}

/// HTTP/1.1 chunked transfer decoding, passing data through without copies.
#[derive(Default)]
pub(crate) struct Chunked {
    /// data bytes left in the current chunk
    pub(crate) left: usize,
    /// bytes of CRLF to skip after a chunk's data
    pub(crate) crlf: usize,
    pub(crate) line: Vec<u8>,
}

impl Chunked {
    /// Returns true at the last (zero-size) chunk.
    pub(crate) fn feed(&mut self, mut b: &[u8], mut sink: impl FnMut(&[u8])) -> Result<bool> {
        while !b.is_empty() {
            if self.left > 0 {
                let n = self.left.min(b.len());
                sink(&b[..n]);
                self.left -= n;
                b = &b[n..];
                if self.left == 0 {
                    self.crlf = 2;
                }
            } else if self.crlf > 0 {
                let n = self.crlf.min(b.len());
                self.crlf -= n;
                b = &b[n..];
            } else {
                let Some(i) = b.iter().position(|&c| c == b'\n') else {
                    self.line.extend_from_slice(b);
                    return Ok(false);
                };
                self.line.extend_from_slice(&b[..i]);
                b = &b[i + 1..];
                let line = std::str::from_utf8(&self.line)?.trim();
                let size_str = line.split(';').next().unwrap_or("");
                let size = usize::from_str_radix(size_str, 16).with_context(|| format!("chunk size {line:?}"))?;
                self.line.clear();
                if size == 0 {
                    return Ok(true);
                }
                self.left = size;
            }
        }
        Ok(false)
    }
}

/// What a viewer notes of each FLV tag: keyframes (for the time to first frame) and the
/// newest media time.
pub(crate) fn note_tag(st: &ViewerStat, t0: Instant, h: TagHeader, first: [u8; 2]) {
    if h.tag_type == 9 {
        if first[0] >> 4 == 1 && first[1] == 1 {
            st.key(t0);
        }
        st.media(i64::from(h.timestamp));
    }
}

pub(crate) struct Head {
    pub(crate) status: u16,
    pub(crate) chunked: bool,
    pub(crate) content_length: Option<usize>,
}

/// Reads a response head; what follows it stays in `buf`.
pub(crate) async fn read_head<S: AsyncRead + Unpin>(sock: &mut S, buf: &mut BytesMut) -> Result<Head> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let text = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
            buf.advance(i + 4);
            let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
            let chunked = text.contains("transfer-encoding: chunked");
            let content_length =
                text.lines().find_map(|l| l.strip_prefix("content-length:")).and_then(|v| v.trim().parse().ok());
            return Ok(Head { status, chunked, content_length });
        }
        if sock.read_buf(buf).await? == 0 {
            bail!("connection closed before the response head");
        }
    }
}

/// One GET on a keep-alive connection; the body is kept when `keep`, else only counted.
pub(crate) async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    sock: &mut S,
    buf: &mut BytesMut,
    host: &str,
    path: &str,
    keep: bool,
) -> Result<(u16, Vec<u8>, usize)> {
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
    sock.flush().await?; // (a TLS stream sends on flush)
    let head = read_head(sock, buf).await?;
    let mut body = Vec::new();
    let mut n = 0usize;
    if head.chunked {
        let mut c = Chunked::default();
        loop {
            let done = c.feed(buf, |d| {
                n += d.len();
                if keep {
                    body.extend_from_slice(d);
                }
            })?;
            buf.clear();
            if done {
                // the final CRLF came with the last chunk (hyper writes "0\r\n\r\n" at once) and was
                // cleared with it; requests are not pipelined, so nothing else was in `buf`
                break;
            }
            if sock.read_buf(buf).await? == 0 {
                bail!("closed in a chunked body");
            }
        }
    } else {
        let want = head.content_length.unwrap_or(0);
        while n < want {
            if buf.is_empty() && sock.read_buf(buf).await? == 0 {
                bail!("closed in a body");
            }
            let k = (want - n).min(buf.len());
            if keep {
                body.extend_from_slice(&buf[..k]);
            }
            buf.advance(k);
            n += k;
        }
    }
    Ok((head.status, body, n))
}

pub(crate) async fn http_get_once(host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut sock = TcpStream::connect(host).await?;
    let mut buf = BytesMut::new();
    let (s, b, _) = http_get(&mut sock, &mut buf, host, path, true).await?;
    Ok((s, b))
}

pub(crate) struct Playlist {
    pub(crate) seq: u64,
    pub(crate) target_ms: i64,
    /// (sequence number, duration ms, uri)
    pub(crate) segments: Vec<(u64, i64, String)>,
}

pub(crate) fn parse_playlist(text: &str) -> Playlist {
    let mut p = Playlist { seq: 0, target_ms: 2000, segments: Vec::new() };
    let mut dur = 0i64;
    for l in text.lines() {
        if let Some(v) = l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
            p.seq = v.trim().parse().unwrap_or(0);
        } else if let Some(v) = l.strip_prefix("#EXT-X-TARGETDURATION:") {
            p.target_ms = v.trim().parse::<i64>().unwrap_or(2) * 1000;
        } else if let Some(v) = l.strip_prefix("#EXTINF:") {
            dur = (v.split(',').next().unwrap_or("0").parse::<f64>().unwrap_or(0.0) * 1000.0).round() as i64;
        } else if !l.is_empty() && !l.starts_with('#') {
            let n = p.seq + p.segments.len() as u64;
            p.segments.push((n, dur, l.trim().to_string()));
        }
    }
    p
}

/// An HLS client: polls the playlist (every half target duration), downloads new segments in order,
/// starting with the newest. Media time = sum of the downloaded segments' durations.
pub(crate) async fn hls_viewer(http: String, path: String, st: Arc<ViewerStat>) -> Result<()> {
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(&http).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut next: Option<u64> = None;
    let mut media = 0i64;
    loop {
        let (status, body, _) = http_get(&mut sock, &mut buf, &http, &path, true).await?;
        if status != 200 {
            bail!("playlist answered {status}");
        }
        let pl = parse_playlist(std::str::from_utf8(&body)?);
        let start = next.unwrap_or_else(|| pl.segments.last().map_or(u64::MAX, |s| s.0));
        for (n, dur, uri) in pl.segments.iter().filter(|s| s.0 >= start) {
            let seg = if uri.starts_with('/') { uri.clone() } else { format!("{dir}/{uri}") };
            let (status, _, len) = http_get(&mut sock, &mut buf, &http, &seg, false).await?;
            if status != 200 {
                bail!("segment answered {status}");
            }
            st.bytes.fetch_add(len as u64, Ordering::Relaxed);
            st.key(t0);
            media += dur;
            st.media_ms.store(media, Ordering::Relaxed);
            next = Some(n + 1);
        }
        tokio::time::sleep(Duration::from_millis((pl.target_ms / 2).max(100) as u64)).await;
    }
}

/// One GET at a time over a plain HTTP/1.1 keep-alive connection or HTTP/2 + TLS.
enum Getter {
    H1(TcpStream, BytesMut),
    H2(crate::tls::H2),
}

impl Getter {
    async fn get(&mut self, host: &str, path: &str, keep: bool) -> Result<(u16, Vec<u8>, usize)> {
        match self {
            Getter::H1(sock, buf) => http_get(sock, buf, host, path, keep).await,
            Getter::H2(h2) => h2.get(path, keep).await,
        }
    }
}

/// A listed part: ((msn, index), duration ms, uri).
pub(crate) type ListedPart = ((u64, u32), i64, String);

/// The parts a Low-Latency playlist lists, and its preload hint as (msn, index).
pub(crate) fn parse_ll_playlist(text: &str) -> (Vec<ListedPart>, Option<(u64, u32)>) {
    let part_of = |uri: &str| -> Option<(u64, u32)> {
        let (msn, idx) = uri.strip_suffix(".m4s")?.rsplit('-').next()?.split_once('.')?;
        Some((msn.parse().ok()?, idx.parse().ok()?))
    };
    let mut parts = Vec::new();
    let mut hint = None;
    for l in text.lines() {
        if let Some(attrs) = l.strip_prefix("#EXT-X-PART:") {
            let dur = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .and_then(|d| d.parse::<f64>().ok())
                .map_or(0, |d| (d * 1000.0).round() as i64);
            if let Some(uri) = attrs.split('"').nth(1) {
                if let Some(id) = part_of(uri) {
                    parts.push((id, dur, uri.to_string()));
                }
            }
        } else if l.starts_with("#EXT-X-PRELOAD-HINT:") {
            hint = l.split('"').nth(1).and_then(part_of);
        }
    }
    (parts, hint)
}

/// A Low-Latency HLS client behaving like hls.js in low-latency mode: a blocking playlist
/// reload for the hinted part (`_HLS_msn`/`_HLS_part`), then every part it lists that it
/// has not fetched, in order, starting at the newest. Media time = the parts' durations.
/// (With `tls`: over HTTP/2 + TLS, one request at a time as over HTTP/1.1.)
pub(crate) async fn ll_viewer(
    http: String,
    path: String,
    st: Arc<ViewerStat>,
    tls: Option<tokio_rustls::TlsConnector>,
) -> Result<()> {
    let t0 = Instant::now();
    let mut conn = match &tls {
        None => Getter::H1(TcpStream::connect(&http).await?, BytesMut::with_capacity(64 * 1024)),
        Some(c) => Getter::H2(crate::tls::H2::connect(c, &http).await?),
    };
    let dir = path.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let mut last: Option<(u64, u32)> = None;
    let mut media = 0i64;
    let mut query = String::new();
    loop {
        let (status, body, _) = conn.get(&http, &format!("{path}{query}"), true).await?;
        if status != 200 {
            bail!("LL playlist answered {status}");
        }
        let (parts, hint) = parse_ll_playlist(std::str::from_utf8(&body)?);
        let start = last.or_else(|| parts.last().map(|p| (p.0 .0, p.0 .1.wrapping_sub(1))));
        for (id, dur, uri) in parts.iter().filter(|p| start.is_none_or(|s| p.0 > s)) {
            let (status, _, len) = conn.get(&http, &format!("{dir}/{uri}"), false).await?;
            if status != 200 {
                bail!("part answered {status}");
            }
            st.bytes.fetch_add(len as u64, Ordering::Relaxed);
            st.key(t0);
            media += dur;
            st.media_ms.store(media, Ordering::Relaxed);
            last = Some(*id);
        }
        let Some((msn, part)) = hint else { bail!("no EXT-X-PRELOAD-HINT") };
        query = format!("?_HLS_msn={msn}&_HLS_part={part}");
    }
}

// ---------------------------------------------------------------- RTMP

/// TCP connect and the handshake through `session` (C0 + C1, then C2 echoing S1); what the
/// server sent after S2 stays in `buf`.
pub(crate) async fn rtmp_connect(addr: &str, session: &mut ClientSession, buf: &mut BytesMut) -> Result<TcpStream> {
    let mut sock = TcpStream::connect(addr).await?;
    sock.set_nodelay(true)?;
    sock.write_all(&session.handshake_start()).await?;
    let mut ignored = Vec::new();
    while !session.is_handshake_done() {
        if sock.read_buf(buf).await? == 0 {
            bail!("RTMP connection closed during the handshake");
        }
        session.handle_input(buf, &mut ignored)?;
    }
    if let Some(c2) = session.poll_transmit() {
        sock.write_all(&c2).await?;
    }
    Ok(sock)
}

/// connect (app `app`) and createStream (stream 1).
pub(crate) fn connect_cmds(session: &mut ClientSession, out: &mut Vec<u8>, app: &str) {
    out.extend(session.connect(app));
    out.extend(session.create_stream());
}

/// Minimal RTMP play client: handshake, connect, createStream, play; then decodes chunks
/// and looks only at video message types and first bytes.
pub(crate) async fn rtmp_viewer(rtmp: String, app: String, name: String, st: Arc<ViewerStat>) -> Result<()> {
    let t0 = Instant::now();
    let mut session = ClientSession::new(ClientConfig { rng_seed: 1, ..ClientConfig::default() });
    let mut buf = BytesMut::with_capacity(128 * 1024);
    let mut sock = rtmp_connect(&rtmp, &mut session, &mut buf).await?;
    ViewerStat::mark(&st.connected_us, t0);
    let mut out = Vec::new();
    connect_cmds(&mut session, &mut out, &app);
    out.extend(session.play(1, &name));
    sock.write_all(&out).await?;
    let mut messages = Vec::new();
    // what came after S2 is decoded first
    st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
    loop {
        session.handle_input(&mut buf, &mut messages)?;
        if !messages.is_empty() {
            ViewerStat::mark(&st.first_byte_us, t0);
        }
        for m in messages.drain(..) {
            match m.type_id {
                msg::VIDEO => {
                    if m.payload.len() >= 2 && m.payload[0] >> 4 == 1 && m.payload[1] == 1 {
                        st.key(t0);
                    }
                    st.media(m.timestamp as i64);
                }
                msg::USER_CONTROL if m.payload.len() >= 2 && m.payload[..2] == [0, 1] => bail!("stream EOF"),
                _ => {}
            }
        }
        st.pause_after_key().await;
        // keep the read buffer from growing: decode() consumed the whole chunks
        if buf.capacity() < 64 * 1024 {
            buf.reserve(128 * 1024);
        }
        let n = sock.read_buf(&mut buf).await?;
        if n == 0 {
            bail!("RTMP connection closed");
        }
        st.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// An FLV file as (type, timestamp ms, body) tags.
/// Tags of a fixture (type, timestamp ms, body) and its duration in ms.
pub(crate) type Fixture = (Vec<(u8, u32, Bytes)>, u32);

pub(crate) fn read_flv(path: &Path) -> Result<Fixture> {
    let data = Bytes::from(std::fs::read(path).with_context(|| format!("read {}", path.display()))?);
    let file = livegate_proto::flv::file::read_tags(&data).with_context(|| format!("{}", path.display()))?;
    let last = file.iter().map(|t| t.timestamp).max().unwrap_or(0);
    let tags = file.into_iter().map(|t| (t.tag_type, t.timestamp, t.body)).collect();
    Ok((tags, last + 33))
}

/// RTMP publisher that loops an FLV file at real time (for the many-publishers scenario).
pub(crate) async fn rtmp_publisher(
    rtmp: String,
    name: String,
    tags: Arc<Fixture>,
    stop: Arc<AtomicBool>,
) -> Result<()> {
    let mut session = ClientSession::new(ClientConfig { rng_seed: 2, ..ClientConfig::default() });
    let mut sock = rtmp_connect(&rtmp, &mut session, &mut BytesMut::new()).await?;
    let mut out = session.set_chunk_size(65536);
    connect_cmds(&mut session, &mut out, "live");
    out.extend(session.publish(1, &name));
    sock.write_all(&out).await?;
    out.clear();
    let (mut rd, mut wr) = sock.into_split();
    tokio::spawn(async move {
        let mut b = vec![0u8; 4096];
        while rd.read(&mut b).await.is_ok_and(|n| n > 0) {}
    });
    let start = tokio::time::Instant::now();
    let (tags, dur) = (&tags.0, tags.1);
    let mut offset = 0u32;
    while !stop.load(Ordering::Relaxed) {
        for (ty, ts, body) in tags.iter() {
            if *ty == 18 && offset > 0 {
                continue;
            }
            // codec headers only once
            if offset > 0
                && body.len() >= 2
                && body[1] == 0
                && (*ty == 9 && body[0] & 0x0f == 7 || *ty == 8 && body[0] >> 4 == 10)
            {
                continue;
            }
            let t = ts + offset;
            let due = start + Duration::from_millis(t as u64);
            if tokio::time::Instant::now() < due {
                if !out.is_empty() {
                    wr.write_all(&out).await?;
                    out.clear();
                }
                tokio::time::sleep_until(due).await;
            }
            match ty {
                9 => out.extend(session.media(1, MediaKind::Video, t, body)),
                8 => out.extend(session.media(1, MediaKind::Audio, t, body)),
                _ => out.extend(session.message(msg::CSID_STREAM, msg::DATA_AMF0, 1, t, body)),
            }
        }
        offset += dur;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An FLV stream: header, a video keyframe tag at 1000 ms and an audio tag at 1010 ms.
    fn flv() -> Vec<u8> {
        let mut v = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let tag = |ty: u8, ts: u32, body: &[u8]| {
            let mut t = vec![ty, 0, 0, body.len() as u8, (ts >> 16) as u8, (ts >> 8) as u8, ts as u8, 0, 0, 0, 0];
            t.extend_from_slice(body);
            t.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
            t
        };
        v.extend(tag(9, 1000, &[0x17, 1, 0, 0, 0, 9, 9, 9]));
        v.extend(tag(8, 1010, &[0xaf, 1, 7]));
        v
    }

    #[test]
    fn chunked_flv_is_scanned_across_any_split() {
        let body = flv();
        let mut wire = Vec::new();
        for part in body.chunks(7) {
            wire.extend(format!("{:x};ext\r\n", part.len()).as_bytes());
            wire.extend(part);
            wire.extend(b"\r\n");
        }
        wire.extend(b"0\r\n\r\n");
        for step in [1, 3, 64, wire.len()] {
            let st = ViewerStat::new();
            let (mut c, mut f) = (Chunked::default(), TagScanner::default());
            let t0 = Instant::now();
            let mut done = false;
            for piece in wire.chunks(step) {
                done = c.feed(piece, |d| f.feed(d, |h, first| note_tag(&st, t0, h, first))).unwrap();
                if done {
                    break; // the body ended; what follows belongs to the next response
                }
            }
            assert!(done);
            assert!(st.first_key_us.load(Ordering::Relaxed) > 0, "step {step}");
            assert_eq!(st.media_ms.load(Ordering::Relaxed), 1000);
        }
    }

    #[test]
    fn websocket_frames_are_unwrapped_across_any_split() {
        let data = flv();
        let mut wire = Vec::new();
        for piece in data.chunks(300) {
            wire.push(0x82);
            wire.push(126);
            wire.extend_from_slice(&(piece.len() as u16).to_be_bytes());
            wire.extend_from_slice(piece);
        }
        wire.extend_from_slice(&[0x8a, 2, b'o', b'k']); // a pong, not FLV
        wire.extend_from_slice(&[0x88, 0]);
        for split in [1, 3, 7, 200, wire.len()] {
            let mut f = WsFrames::default();
            let mut out = Vec::new();
            let mut closed = false;
            for part in wire.chunks(split) {
                closed |= f.feed(part, |d| out.extend_from_slice(d)).unwrap();
            }
            assert!(closed);
            assert_eq!(out, data, "split {split}");
        }
    }

    #[test]
    fn playlist_parsing() {
        let p = parse_playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.002,\nbench-a-7.ts\n#EXTINF:1.5,\nbench-a-8.ts\n",
        );
        assert_eq!(p.target_ms, 2000);
        assert_eq!(p.segments, vec![(7, 2002, "bench-a-7.ts".into()), (8, 1500, "bench-a-8.ts".into())]);
    }
}
