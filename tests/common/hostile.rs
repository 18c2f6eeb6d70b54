//! The hostile tests' kit: a short ffmpeg-made A/V source looped at will, an RTMP
//! publisher/viewer over livegate's own sans-IO `ClientSession` (attacks write raw bytes
//! where they must), an HTTP-FLV reader, and the process measurements (RSS, VmHWM, CPU
//! ticks) the memory-bound tests assert on.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use livegate::rtmp::amf0::Amf0Value;
use livegate::rtmp::{ClientConfig, ClientSession};

use super::*;

// ---------------------------------------------------------------- media source

/// One FLV tag: 8 audio, 9 video; timestamp in ms; the tag body.
#[derive(Clone)]
pub struct Tag {
    pub kind: u8,
    pub ts: u32,
    pub body: Vec<u8>,
}

impl Tag {
    pub fn is_config(&self) -> bool {
        self.body.len() > 1 && self.body[1] == 0
    }
    pub fn is_keyframe(&self) -> bool {
        self.kind == 9 && self.body[0] >> 4 == 1 && !self.is_config()
    }
}

/// 4 s of 640x360@25 H.264 (GOP 25, B-frames, 1.5 Mb/s) + AAC, made once by ffmpeg.
pub struct Source {
    pub configs: Vec<Tag>,
    pub frames: Vec<Tag>,
    /// Loop length: frames repeat every `period` ms (the first frame is a keyframe).
    pub period: u32,
}

pub fn source() -> &'static Source {
    static SRC: OnceLock<Source> = OnceLock::new();
    SRC.get_or_init(|| {
        require_tool("ffmpeg");
        let dir = scratch_dir("hostile-src");
        let path = dir.join("src.flv");
        let out = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=25"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "4"])
            .args(["-c:v", "libx264", "-preset", "veryfast", "-b:v", "1500k", "-g", "25", "-keyint_min", "25"])
            .args(["-sc_threshold", "0", "-bf", "2", "-pix_fmt", "yuv420p"])
            .args(["-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2", "-f", "flv"])
            .arg(&path)
            .output()
            .expect("run ffmpeg");
        assert!(out.status.success(), "ffmpeg: {}", String::from_utf8_lossy(&out.stderr));
        let tags = parse_flv(&std::fs::read(&path).unwrap());
        let (configs, mut frames): (Vec<Tag>, Vec<Tag>) =
            tags.into_iter().filter(|t| t.kind == 8 || t.kind == 9).partition(Tag::is_config);
        // Loop every 4 s: drop what the encoder flushed past that (AAC runs a little longer).
        frames.retain(|t| t.body.len() > 2 && t.ts < 4000);
        assert!(frames.first().is_some_and(Tag::is_keyframe), "source starts with a keyframe");
        assert_eq!(configs.len(), 2, "one video and one audio sequence header");
        Source { configs, frames, period: 4000 }
    })
}

/// Tags of an FLV file, read with the gateway's own FLV file reader.
pub fn parse_flv(data: &[u8]) -> Vec<Tag> {
    let tags = livegate::flv::file::read_tags(&bytes::Bytes::copy_from_slice(data)).expect("an FLV file");
    tags.into_iter().map(|t| Tag { kind: t.tag_type, ts: t.timestamp, body: t.body.to_vec() }).collect()
}

/// The source's frames looped forever, with timestamps relative to 0.
pub fn frames_from(start_ms: u32) -> impl Iterator<Item = Tag> {
    let src = source();
    (0u32..)
        .flat_map(move |lap| src.frames.iter().map(move |t| Tag { ts: t.ts + lap * src.period, ..t.clone() }))
        .skip_while(move |t| t.ts < start_ms)
}

// ---------------------------------------------------------------- RTMP client

pub fn amf_str(s: &str) -> Vec<u8> {
    let mut v = vec![2];
    v.extend_from_slice(&(s.len() as u16).to_be_bytes());
    v.extend_from_slice(s.as_bytes());
    v
}

pub fn amf_num(n: f64) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(&n.to_be_bytes());
    v
}

pub const AMF_NULL: u8 = 5;

pub struct Rtmp {
    pub s: TcpStream,
    /// Encodes what we send (livegate's own sans-IO client session; fmt-0 headers and
    /// repeated extended timestamps, as ffmpeg writes them).
    pub client: ClientSession,
    pub seen: Vec<u8>,
}

impl Rtmp {
    /// TCP connect and plain handshake (C2 echoes S1).
    pub fn connect(addr: SocketAddr) -> Rtmp {
        let mut s = TcpStream::connect(addr).expect("connect rtmp");
        s.set_nodelay(true).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut client = ClientSession::new(ClientConfig { compress: false, rng_seed: 13, ..ClientConfig::default() });
        s.write_all(&client.handshake_start()).unwrap();
        let mut s0s1s2 = bytes::BytesMut::zeroed(1 + 2 * 1536);
        s.read_exact(&mut s0s1s2).expect("S0 S1 S2");
        client.handle_input(&mut s0s1s2, &mut Vec::new()).expect("a valid S0");
        s.write_all(&client.poll_transmit().expect("C2")).unwrap();
        Rtmp { s, client, seen: Vec::new() }
    }

    pub fn message(&mut self, csid: u8, type_id: u8, stream_id: u32, ts: u32, payload: &[u8]) -> std::io::Result<()> {
        let m = self.client.message(csid.into(), type_id, stream_id, ts, payload);
        self.s.write_all(&m)
    }

    /// Reads until `needle` shows up in what the server sent (true) or `timeout` passes.
    pub fn wait_for(&mut self, needles: &[&[u8]], timeout: Duration) -> Option<usize> {
        let start = Instant::now();
        let mut buf = [0u8; 16384];
        self.s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
        loop {
            if let Some(i) = needles.iter().position(|n| self.seen.windows(n.len()).any(|w| w == *n)) {
                return Some(i);
            }
            if start.elapsed() > timeout {
                return None;
            }
            match self.s.read_some(&mut buf) {
                Ok(0) => return needles.iter().position(|n| self.seen.windows(n.len()).any(|w| w == *n)),
                Ok(n) => self.seen.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return None,
            }
        }
    }

    /// connect + createStream (stream 1), with chunk size 4096 for what we send.
    pub fn connect_app(addr: SocketAddr, app: &str) -> Rtmp {
        let mut c = Rtmp::connect(addr);
        c.set_chunk_size(4096);
        let mut out = c.client.connect(app);
        out.extend(c.client.create_stream());
        c.s.write_all(&out).expect("send connect");
        assert!(c.wait_for(&[b"NetConnection.Connect.Success"], Duration::from_secs(10)).is_some(), "connect");
        c
    }

    /// A publisher on `app/name`; Err when the server refuses.
    pub fn publish(addr: SocketAddr, app: &str, name: &str) -> Result<Rtmp, String> {
        let mut c = Rtmp::connect_app(addr, app);
        let m = c.client.publish(1, name);
        c.s.write_all(&m).expect("send publish");
        match c.wait_for(&[b"NetStream.Publish.Start", b"NetStream.Publish."], Duration::from_secs(10)) {
            Some(0) => Ok(c),
            _ => Err(String::from_utf8_lossy(&c.seen).into_owned()),
        }
    }

    /// A viewer of `app/name` that never reads what it is sent.
    pub fn play(addr: SocketAddr, app: &str, name: &str) -> Rtmp {
        let mut c = Rtmp::connect_app(addr, app);
        let m = c.client.play(1, name);
        c.s.write_all(&m).expect("send play");
        assert!(c.wait_for(&[b"NetStream.Play.Start"], Duration::from_secs(10)).is_some(), "play");
        c
    }

    pub fn send_tag(&mut self, t: &Tag) -> std::io::Result<()> {
        let csid = if t.kind == 8 { 4 } else { 6 };
        self.message(csid, t.kind, 1, t.ts, &t.body)
    }

    pub fn send_configs(&mut self, ts: u32) {
        for t in &source().configs {
            self.send_tag(&Tag { ts, ..t.clone() }).expect("send config");
        }
    }

    pub fn unpublish(mut self) {
        let m = self.client.command(1, "deleteStream", &[Amf0Value::Null, Amf0Value::Number(1.0)]);
        self.s.write_all(&m).expect("send deleteStream");
        let _ = self.s.shutdown(std::net::Shutdown::Write);
        let _ = self.wait_for(&[b"\0never\0"], Duration::from_millis(0));
    }
}

/// Sends `duration_ms` of looped source frames starting at source time `from`,
/// on the wire as `map(ts)`, paced at `speed` × real time. Returns the wall time taken.
pub fn send_media(c: &mut Rtmp, from: u32, duration_ms: u32, speed: f64, map: impl Fn(u32) -> u32) -> Duration {
    let start = Instant::now();
    for t in frames_from(from).take_while(|t| t.ts < from + duration_ms) {
        // (FLV interleaving: an audio tag may be a little older than the video before it)
        let due = Duration::from_secs_f64(f64::from(t.ts.saturating_sub(from)) / 1000.0 / speed);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        c.send_tag(&Tag { ts: map(t.ts), ..t }).expect("send media");
    }
    start.elapsed()
}

/// A publisher thread: configs, then looped media at `speed` until `stop`.
pub fn background_publisher(addr: SocketAddr, key: &str, speed: f64, stop: Arc<AtomicBool>) -> JoinHandle<Duration> {
    let (app, name) = key.split_once('/').unwrap();
    let mut c = Rtmp::publish(addr, app, name).expect("publish");
    std::thread::spawn(move || {
        c.send_configs(0);
        let start = Instant::now();
        let mut behind = Duration::ZERO;
        for t in frames_from(0) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            let due = Duration::from_secs_f64(f64::from(t.ts) / 1000.0 / speed);
            match due.checked_sub(start.elapsed()) {
                Some(wait) => std::thread::sleep(wait),
                None => behind = behind.max(start.elapsed() - due),
            }
            c.send_tag(&t).expect("publisher write");
        }
        c.unpublish();
        behind
    })
}

/// The E-RTMP multitrack form (one track, `avc1`) of a legacy AVC video tag body, as
/// video track `track`.
pub fn as_video_track(legacy: &[u8], track: u8) -> Vec<u8> {
    let frame_type = legacy[0] & 0x70;
    let mut body = vec![0x80 | frame_type | 6];
    if legacy[1] == 0 {
        // sequence start: the avcC after the legacy header
        body.extend_from_slice(&[0, b'a', b'v', b'c', b'1', track]);
        body.extend_from_slice(&legacy[5..]);
    } else {
        // coded frames: the composition offset and the NAL units
        body.extend_from_slice(&[1, b'a', b'v', b'c', b'1', track]);
        body.extend_from_slice(&legacy[2..]);
    }
    body
}

/// A multitrack publisher thread (an HLS ladder): the source's video and audio, and the
/// same video again as video track 1 (Enhanced RTMP multitrack), in real time until `stop`.
pub fn ladder_publisher(addr: SocketAddr, key: &str, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    let (app, name) = key.split_once('/').unwrap();
    let mut c = Rtmp::publish(addr, app, name).expect("publish");
    std::thread::spawn(move || {
        c.send_configs(0);
        for t in source().configs.iter().filter(|t| t.kind == 9) {
            c.send_tag(&Tag { ts: 0, body: as_video_track(&t.body, 1), ..t.clone() }).expect("track 1 config");
        }
        let start = Instant::now();
        for t in frames_from(0) {
            if stop.load(Ordering::Relaxed) {
                break;
            }
            if let Some(wait) = Duration::from_millis(u64::from(t.ts)).checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
            c.send_tag(&t).expect("publisher write");
            if t.kind == 9 {
                c.send_tag(&Tag { body: as_video_track(&t.body, 1), ..t }).expect("publisher write");
            }
        }
        c.unpublish();
    })
}

// ---------------------------------------------------------------- HTTP-FLV reader and helpers

/// Reads an HTTP-FLV body until EOF or `stop`, counting bytes; returns the body.
pub fn flv_reader(addr: SocketAddr, key: &str, stop: Arc<AtomicBool>, count: Arc<AtomicU64>) -> JoinHandle<Vec<u8>> {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET /{key}.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::thread::spawn(move || {
        let mut raw = Vec::new();
        let mut buf = vec![0u8; 65536];
        while !stop.load(Ordering::Relaxed) {
            match s.read_some(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    raw.extend_from_slice(&buf[..n]);
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        let head_end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
        dechunk(&raw[head_end..])
    })
}

pub fn rss_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmRSS:")
}

/// Peak RSS (VmHWM) of a process, kB.
pub fn hwm_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM:")
}

pub fn config_file(name: &str, toml: &str) -> String {
    let path = scratch_dir(name).join("livegate.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

/// A per-stream counter (`bytes_in`, `lag_skips`, `evictions`) from /api/streams; 0 when not live.
pub fn stat(gw: &Gateway, field: &str, stream: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams").body).expect("api json");
    v["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["name"] == stream)
        .filter_map(|s| s[field].as_u64())
        .sum()
}

/// True when the server closed `s` (EOF or reset) within `within`; drains what was buffered.
pub fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    let start = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let mut buf = vec![0u8; 65536];
    while start.elapsed() < within {
        match s.read_some(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

pub fn playlist(gw: &Gateway, key: &str) -> Option<String> {
    let r = http_get(gw.http, &format!("/{key}.m3u8"));
    (r.status == 200).then(|| r.text())
}

pub fn media_sequence(pl: &str) -> u64 {
    pl.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).map_or(0, |v| v.trim().parse().unwrap())
}

// ---------------------------------------------------------------- memory bounds (issue 11)

pub const MIB: u64 = 1024;

impl Rtmp {
    /// Raises the chunk size of what we send.
    pub fn set_chunk_size(&mut self, size: u32) {
        let m = self.client.set_chunk_size(size);
        self.s.write_all(&m).expect("set chunk size");
    }

    /// Starts a message of `len` bytes on `csid` and sends only `send` bytes of its body.
    pub fn partial_message(&mut self, csid: u8, type_id: u8, len: usize, send: usize) -> std::io::Result<()> {
        let mut out = vec![csid];
        out.extend_from_slice(&[0, 0, 0]);
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(type_id);
        out.extend_from_slice(&0u32.to_le_bytes());
        let body = vec![0x42u8; send];
        for (i, c) in body.chunks(self.client.config.chunk_size as usize).enumerate() {
            if i > 0 {
                out.push(0xC0 | csid);
            }
            out.extend_from_slice(c);
        }
        self.s.write_all(&out)
    }
}

/// A normal stream published after an attack still plays over HTTP-FLV.
pub fn assert_a_normal_stream_plays(gw: &Gateway, key: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = background_publisher(gw.rtmp, key, 1.0, stop.clone());
    assert!(wait_live(gw, key, Duration::from_secs(5)), "{key} did not go live after the attack");
    let got = Arc::new(AtomicU64::new(0));
    let viewer = flv_reader(gw.http, key, stop.clone(), got.clone());
    // 100 kB take about 1 s of this stream; up to 15 s on a machine busy with the other
    // tests (a 64-track CPU test beside it once left it 197 bytes in a fixed 2 s)
    wait_until(Duration::from_secs(15), || got.load(Ordering::Relaxed) > 100_000);
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    viewer.join().unwrap();
    let n = got.load(Ordering::Relaxed);
    assert!(n > 100_000, "a normal stream after the attack delivered only {n} bytes");
}

/// Runs `attack`, then checks the server's peak RSS grew by at most `bound_kb` (the
/// configured bounds that apply) + `margin_kb`, that it is still up, and that a normal
/// stream plays. Prints the figures.
pub fn assert_bounded(gw: &mut Gateway, what: &str, bound_kb: u64, margin_kb: u64, attack: impl FnOnce(&Gateway)) {
    let before = hwm_kb(gw.pid());
    let started = Instant::now();
    attack(gw);
    let peak = hwm_kb(gw.pid());
    println!(
        "{what}: VmHWM {before} kB before, {peak} kB after ({} kB more; bound {bound_kb} + margin {margin_kb} kB), \
         attack took {:?}",
        peak - before,
        started.elapsed()
    );
    assert!(gw.is_running(), "{what}: the server died");
    assert!(
        peak <= before + bound_kb + margin_kb,
        "{what}: peak RSS grew by {} kB, over the bound of {bound_kb} + {margin_kb} kB",
        peak - before
    );
    assert_a_normal_stream_plays(gw, "live/after");
    assert!(gw.is_running(), "{what}: the server died after the attack");
}

/// A minimal AVC access unit tag body (one 2-byte NAL unit).
pub fn tiny_video(key: bool) -> Vec<u8> {
    vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 0, 0, 0, 2, if key { 0x65 } else { 0x41 }, 0x88]
}

pub fn metric(gw: &Gateway, line_start: &str) -> u64 {
    let text = http_get(gw.http, "/metrics").text();
    text.lines().find_map(|l| l.strip_prefix(line_start)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// A publisher gets in and an RTMP viewer receives its media (no HTTP needed).
pub fn assert_a_normal_stream_plays_over_rtmp(gw: &Gateway, key: &str) {
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = background_publisher(gw.rtmp, key, 1.0, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    let (app, name) = key.split_once('/').unwrap();
    let mut viewer = Rtmp::play(gw.rtmp, app, name);
    let got = viewer.wait_for(&[b"\0never\0"], Duration::from_secs(2));
    assert!(got.is_none());
    assert!(viewer.seen.len() > 50_000, "the RTMP viewer got only {} bytes", viewer.seen.len());
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
}
