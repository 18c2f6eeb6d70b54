//! Load benchmark (issue #6): starts the release `livegate` pinned to one core,
//! publishes a fixture and drives N HTTP-FLV, RTMP-play or HLS viewers (or many
//! publishers) from a lightweight tokio load client pinned to the other core.
//! Prints one JSON line per scenario, a table and PASS/MISS per target.
//!
//! `cargo run --release --bin livegate-bench -- --help`

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes, BytesMut};
use clap::Parser;
use livegate::rtmp::amf0::Amf0Value;
use livegate::rtmp::chunk::{ChunkDecoder, ChunkEncoder};
use livegate::rtmp::message as msg;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug, Clone)]
#[command(about = "livegate load benchmark: CPU, memory, keep-up and start-up latency under many viewers")]
struct Args {
    /// Scenarios to run, comma separated: flv, rtmp, hls, many.
    #[arg(long, default_value = "flv,rtmp,hls,many", value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Viewers per single-publisher scenario.
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Publishers in the `many` scenario (HLS on).
    #[arg(long, default_value_t = 100)]
    publishers: usize,
    /// Length of the measured steady window (s).
    #[arg(long, default_value_t = 20.0)]
    steady: f64,
    /// Time between the last viewer connecting and the steady window (s).
    #[arg(long, default_value_t = 5.0)]
    warmup: f64,
    /// Viewers connect evenly spread over this many milliseconds.
    #[arg(long, default_value_t = 2000)]
    ramp_ms: u64,
    /// Smoke run: 50 viewers, 10 publishers, 4 s windows (~30 s in all).
    #[arg(long)]
    quick: bool,
    /// Fixture for the single-publisher scenarios (made by scripts/make-bench-fixture.sh when missing).
    #[arg(long, default_value = "target/bench/fixture.flv")]
    fixture: PathBuf,
    /// Fixture for the many-publishers scenario.
    #[arg(long, default_value = "target/bench/fixture-light.flv")]
    many_fixture: PathBuf,
    /// livegate binary (default: next to this binary; rebuilt with cargo when run through cargo).
    #[arg(long)]
    livegate: Option<PathBuf>,
    /// Configuration file for the server (default: built-in defaults).
    #[arg(long)]
    server_config: Option<PathBuf>,
    /// Core for the server.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core for the load client and ffmpeg.
    #[arg(long, default_value_t = 1)]
    client_core: usize,
    /// Also append the JSON lines to this file.
    #[arg(long, default_value = "target/bench/results.jsonl")]
    json_out: PathBuf,
}

const PINNED_ENV: &str = "LIVEGATE_BENCH_PINNED";

fn main() -> Result<()> {
    let mut args = Args::parse();
    if std::env::var_os(PINNED_ENV).is_none() && has("taskset") {
        // re-exec ourselves on the client core
        let exe = std::env::current_exe()?;
        let status = Command::new("taskset")
            .arg("-c")
            .arg(args.client_core.to_string())
            .arg(exe)
            .args(std::env::args_os().skip(1))
            .env(PINNED_ENV, "1")
            .status()?;
        std::process::exit(status.code().unwrap_or(1));
    }
    if args.quick {
        args.viewers = args.viewers.min(50);
        args.publishers = args.publishers.min(10);
        args.steady = args.steady.min(4.0);
        args.warmup = args.warmup.min(1.5);
        args.ramp_ms = args.ramp_ms.min(500);
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(run(args))
}

fn has(tool: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

async fn run(args: Args) -> Result<()> {
    let livegate = prepare(&args)?;
    let mut results = Vec::new();
    for s in args.scenarios.clone() {
        let scenario = async {
            match s.as_str() {
                "flv" | "rtmp" | "hls" => single_publisher(&args, &livegate, &s).await,
                "many" => many_publishers(&args, &livegate).await,
                other => bail!("unknown scenario {other}"),
            }
        };
        // on Ctrl-C the scenario is dropped, which kills livegate and ffmpeg
        let r = tokio::select! {
            r = scenario => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        println!("{}", r.json);
        if let Some(dir) = args.json_out.parent() {
            std::fs::create_dir_all(dir).ok();
        }
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&args.json_out)?;
        writeln!(f, "{}", r.json)?;
        results.push(r);
    }
    print_table(&args, &results);
    Ok(())
}

/// Builds livegate and the fixtures when needed; returns the server binary.
fn prepare(args: &Args) -> Result<PathBuf> {
    if let Ok(cargo) = std::env::var("CARGO") {
        // without the variables `cargo run` sets, which would make build scripts rerun
        let mut cmd = Command::new(cargo);
        for (k, _) in std::env::vars_os() {
            let k = k.to_string_lossy().into_owned();
            let keep = ["CARGO_TARGET_DIR", "CARGO_HOME", "CARGO_BUILD_JOBS"].contains(&k.as_str());
            if (k.starts_with("CARGO_") && !keep) || k == "OUT_DIR" || k == PINNED_ENV {
                cmd.env_remove(&k);
            }
        }
        let st = cmd.args(["build", "--release", "--bin", "livegate"]).status()?;
        if !st.success() {
            bail!("cargo build --release --bin livegate failed");
        }
    }
    let bin = match &args.livegate {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("livegate"),
    };
    if !bin.exists() {
        bail!("{} not found: run `cargo build --release` first or pass --livegate", bin.display());
    }
    if !args.fixture.exists() || !args.many_fixture.exists() {
        eprintln!("making fixtures with scripts/make-bench-fixture.sh ...");
        let st = Command::new("scripts/make-bench-fixture.sh").status().context("scripts/make-bench-fixture.sh")?;
        if !st.success() {
            bail!("fixture script failed");
        }
    }
    Ok(bin)
}

// ---------------------------------------------------------------- server process

struct Server {
    child: Child,
    pid: u32,
    rtmp: String,
    http: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn start_server(args: &Args, bin: &Path, name: &str) -> Result<Server> {
    let (rp, hp) = (free_port()?, free_port()?);
    let rtmp = format!("127.0.0.1:{rp}");
    let http = format!("127.0.0.1:{hp}");
    let log = std::fs::File::create(format!("target/bench/livegate-{name}.log"))?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(args.server_core.to_string()).arg(bin);
    if let Some(config) = &args.server_config {
        cmd.arg("--config").arg(config);
    }
    let child = cmd
        .args(["--rtmp-listen", &rtmp, "--http-listen", &http])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("start livegate")?;
    let pid = child.id(); // taskset execs the server in place
    let server = Server { child, pid, rtmp, http };
    let t0 = Instant::now();
    loop {
        if let Ok((200, _)) = http_get_once(&server.http, "/healthz").await {
            return Ok(server);
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("livegate did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Clone, Copy, Default)]
struct ProcSample {
    ticks: u64,
    rss_kib: u64,
    hwm_kib: u64,
    /// busy and total jiffies of the server core and the client core (from /proc/stat)
    server_core: (u64, u64),
    client_core: (u64, u64),
    at: Option<Instant>,
}

fn sample(args: &Args, pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let cores = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let core = |n: usize| {
        let tag = format!("cpu{n} ");
        cores
            .lines()
            .find(|l| l.starts_with(&tag))
            .map(|l| {
                let v: Vec<u64> = l.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
                let total: u64 = v.iter().sum();
                let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                (total - idle, total)
            })
            .unwrap_or((0, 1))
    };
    ProcSample {
        ticks,
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        server_core: core(args.server_core),
        client_core: core(args.client_core),
        at: Some(Instant::now()),
    }
}

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn pct(a: (u64, u64), b: (u64, u64)) -> f64 {
    let dt = b.1.saturating_sub(a.1).max(1) as f64;
    100.0 * b.0.saturating_sub(a.0) as f64 / dt
}

fn ffmpeg_publish(args: &Args, fixture: &Path, url: &str) -> Result<Child> {
    Command::new("taskset")
        .arg("-c")
        .arg(args.client_core.to_string())
        .args(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1", "-i"])
        .arg(fixture)
        .args(["-c", "copy", "-f", "flv", url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start ffmpeg")
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------- viewers

#[derive(Default)]
struct ViewerStat {
    /// µs from connect start to the first video keyframe (0: none yet)
    first_key_us: AtomicU64,
    /// latest media timestamp (ms), -1 before any
    media_ms: AtomicI64,
    error: AtomicBool,
    bytes: AtomicU64,
}

impl ViewerStat {
    fn new() -> Self {
        let s = Self::default();
        s.media_ms.store(-1, Ordering::Relaxed);
        s
    }
    fn key(&self, t0: Instant) {
        if self.first_key_us.load(Ordering::Relaxed) == 0 {
            self.first_key_us.store(t0.elapsed().as_micros().max(1) as u64, Ordering::Relaxed);
        }
    }
}

async fn flv_viewer(http: String, path: String, st: Arc<ViewerStat>) -> Result<()> {
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(&http).await?;
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes()).await?;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let head = read_head(&mut sock, &mut buf).await?;
    if head.status != 200 || !head.chunked {
        bail!("HTTP-FLV answered {} (chunked: {})", head.status, head.chunked);
    }
    let mut chunked = Chunked::default();
    let mut flv = FlvScan::default();
    loop {
        if !buf.is_empty() {
            st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
            let done = chunked.feed(&buf, |data| flv.feed(data, &st, t0))?;
            buf.clear();
            if done {
                return Ok(());
            }
        }
        if sock.read_buf(&mut buf).await? == 0 {
            bail!("HTTP-FLV connection closed");
        }
    }
}

/// HTTP/1.1 chunked transfer decoding, passing data through without copies.
#[derive(Default)]
struct Chunked {
    /// data bytes left in the current chunk
    left: usize,
    /// bytes of CRLF to skip after a chunk's data
    crlf: usize,
    line: Vec<u8>,
}

impl Chunked {
    /// Returns true at the last (zero-size) chunk.
    fn feed(&mut self, mut b: &[u8], mut sink: impl FnMut(&[u8])) -> Result<bool> {
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

/// Walks an FLV byte stream reading only tag headers and the first two body bytes.
#[derive(Default)]
struct FlvScan {
    started: bool,
    hdr: [u8; 13],
    have: usize,
    skip: usize,
}

impl FlvScan {
    fn feed(&mut self, mut b: &[u8], st: &ViewerStat, t0: Instant) {
        while !b.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(b.len());
                self.skip -= n;
                b = &b[n..];
                continue;
            }
            if !self.started {
                // file header (9) + PreviousTagSize0 (4)
                self.skip = 13;
                self.started = true;
                continue;
            }
            // tag header (11) + 2 body bytes
            let n = (13 - self.have).min(b.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have < 13 {
                continue;
            }
            self.have = 0;
            let h = &self.hdr;
            let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
            let ts =
                ((u32::from(h[7]) << 24) | (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6])) as i64;
            match h[0] {
                9 => {
                    if h[11] >> 4 == 1 && h[12] == 1 {
                        st.key(t0);
                    }
                    st.media_ms.store(ts, Ordering::Relaxed);
                }
                8 => {}
                _ => {}
            }
            // rest of the body + PreviousTagSize (a body shorter than 2 bytes never occurs in practice)
            self.skip = size.saturating_sub(2) + 4;
        }
    }
}

struct Head {
    status: u16,
    chunked: bool,
    content_length: Option<usize>,
}

/// Reads a response head; what follows it stays in `buf`.
async fn read_head(sock: &mut TcpStream, buf: &mut BytesMut) -> Result<Head> {
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
async fn http_get(
    sock: &mut TcpStream,
    buf: &mut BytesMut,
    host: &str,
    path: &str,
    keep: bool,
) -> Result<(u16, Vec<u8>, usize)> {
    sock.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await?;
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

async fn http_get_once(host: &str, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut sock = TcpStream::connect(host).await?;
    let mut buf = BytesMut::new();
    let (s, b, _) = http_get(&mut sock, &mut buf, host, path, true).await?;
    Ok((s, b))
}

struct Playlist {
    seq: u64,
    target_ms: i64,
    /// (sequence number, duration ms, uri)
    segments: Vec<(u64, i64, String)>,
}

fn parse_playlist(text: &str) -> Playlist {
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
async fn hls_viewer(http: String, path: String, st: Arc<ViewerStat>) -> Result<()> {
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

// ---------------------------------------------------------------- RTMP

async fn rtmp_handshake(sock: &mut TcpStream) -> Result<()> {
    let mut c01 = vec![3u8];
    c01.extend((0..1536u32).map(|i| (i.wrapping_mul(2654435761) >> 24) as u8));
    c01[1..9].fill(0);
    sock.write_all(&c01).await?;
    let mut s012 = vec![0u8; 1 + 1536 * 2];
    sock.read_exact(&mut s012).await?;
    sock.write_all(&s012[1..1537]).await?;
    Ok(())
}

fn command(enc: &ChunkEncoder, out: &mut BytesMut, sid: u32, tx: f64, name: &str, values: &[Amf0Value]) {
    let p = msg::command_payload(name, tx, values);
    enc.write(out, if sid == 0 { msg::CSID_COMMAND } else { msg::CSID_STREAM }, 0, msg::COMMAND_AMF0, sid, &p);
}

fn connect_cmds(enc: &ChunkEncoder, out: &mut BytesMut, app: &str, tc: &str) {
    let obj = Amf0Value::object([
        ("app", Amf0Value::string(app)),
        ("type", Amf0Value::string("nonprivate")),
        ("tcUrl", Amf0Value::string(format!("rtmp://{tc}/{app}"))),
    ]);
    command(enc, out, 0, 1.0, "connect", &[obj]);
    command(enc, out, 0, 2.0, "createStream", &[Amf0Value::Null]);
}

/// Minimal RTMP play client: handshake, connect, createStream, play; then decodes chunks
/// and looks only at video message types and first bytes.
async fn rtmp_viewer(rtmp: String, app: String, name: String, st: Arc<ViewerStat>) -> Result<()> {
    let t0 = Instant::now();
    let mut sock = TcpStream::connect(&rtmp).await?;
    sock.set_nodelay(true)?;
    rtmp_handshake(&mut sock).await?;
    let enc = ChunkEncoder::default();
    let mut out = BytesMut::new();
    connect_cmds(&enc, &mut out, &app, &rtmp);
    command(&enc, &mut out, 1, 3.0, "play", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::Number(-1000.0)]);
    sock.write_all(&out).await?;
    let mut dec = ChunkDecoder::new(64 << 20);
    let mut buf = BytesMut::with_capacity(128 * 1024);
    loop {
        if sock.read_buf(&mut buf).await? == 0 {
            bail!("RTMP connection closed");
        }
        st.bytes.fetch_add(buf.len() as u64, Ordering::Relaxed);
        while let Some(m) = dec.decode(&mut buf)? {
            match m.type_id {
                msg::SET_CHUNK_SIZE => dec.set_chunk_size(msg::read_u32(&m.payload, "chunk size")?)?,
                msg::VIDEO => {
                    if m.payload.len() >= 2 && m.payload[0] >> 4 == 1 && m.payload[1] == 1 {
                        st.key(t0);
                    }
                    st.media_ms.store(m.timestamp as i64, Ordering::Relaxed);
                }
                msg::USER_CONTROL if m.payload.len() >= 2 && m.payload[..2] == [0, 1] => bail!("stream EOF"),
                _ => {}
            }
        }
        // keep the read buffer from growing: decode() consumed the whole chunks
        if buf.capacity() < 64 * 1024 {
            buf.reserve(128 * 1024);
        }
    }
}

/// An FLV file as (type, timestamp ms, body) tags.
/// Tags of a fixture (type, timestamp ms, body) and its duration in ms.
type Fixture = (Vec<(u8, u32, Bytes)>, u32);

fn read_flv(path: &Path) -> Result<Fixture> {
    let data = Bytes::from(std::fs::read(path).with_context(|| format!("read {}", path.display()))?);
    if data.len() < 13 || &data[..3] != b"FLV" {
        bail!("{} is not FLV", path.display());
    }
    let mut pos = 13;
    let mut tags = Vec::new();
    let mut last = 0;
    while pos + 11 <= data.len() {
        let h = &data[pos..pos + 11];
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let ts = (u32::from(h[7]) << 24) | (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6]);
        if pos + 11 + size > data.len() {
            break;
        }
        tags.push((h[0], ts, data.slice(pos + 11..pos + 11 + size)));
        last = last.max(ts);
        pos += 11 + size + 4;
    }
    Ok((tags, last + 33))
}

/// RTMP publisher that loops an FLV file at real time (for the many-publishers scenario).
async fn rtmp_publisher(rtmp: String, name: String, tags: Arc<Fixture>, stop: Arc<AtomicBool>) -> Result<()> {
    let mut sock = TcpStream::connect(&rtmp).await?;
    sock.set_nodelay(true)?;
    rtmp_handshake(&mut sock).await?;
    let mut enc = ChunkEncoder::default();
    let mut out = BytesMut::new();
    enc.write(&mut out, msg::CSID_CONTROL, 0, msg::SET_CHUNK_SIZE, 0, &65536u32.to_be_bytes());
    enc.set_chunk_size(65536);
    connect_cmds(&enc, &mut out, "live", &rtmp);
    command(&enc, &mut out, 1, 3.0, "publish", &[Amf0Value::Null, Amf0Value::string(name), Amf0Value::string("live")]);
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
            let (csid, type_id) = match ty {
                9 => (msg::CSID_VIDEO, msg::VIDEO),
                8 => (msg::CSID_AUDIO, msg::AUDIO),
                _ => (msg::CSID_STREAM, msg::DATA_AMF0),
            };
            enc.write(&mut out, csid, t, type_id, 1, body);
        }
        offset += dur;
    }
    Ok(())
}

// ---------------------------------------------------------------- scenarios

struct ScenarioResult {
    name: String,
    json: serde_json::Value,
    /// (target text, pass, hard)
    checks: Vec<(String, bool, bool)>,
    row: Vec<String>,
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Polls the playlist every 100 ms: when each segment first appears, relative to publish start.
async fn hls_probe(http: String, path: String, t0: Instant, seen: Arc<std::sync::Mutex<Vec<(u64, f64, f64)>>>) {
    let mut known = None::<u64>;
    let mut media_end: Option<(u64, i64)> = None; // (seq, media end ms of it)
    loop {
        if let Ok((200, body)) = http_get_once(&http, &path).await {
            let pl = parse_playlist(&String::from_utf8_lossy(&body));
            let now = t0.elapsed().as_secs_f64() * 1000.0;
            for (n, dur, _) in &pl.segments {
                if known.is_some_and(|k| *n <= k) {
                    continue;
                }
                let end = match media_end {
                    Some((s, e)) if s + 1 == *n => e + dur,
                    Some(_) => continue, // a gap: cannot place it in media time
                    None => *dur,
                };
                media_end = Some((*n, end));
                known = Some(*n);
                seen.lock().unwrap().push((*n, now, now - end as f64));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn single_publisher(args: &Args, bin: &Path, kind: &str) -> Result<ScenarioResult> {
    let n = args.viewers;
    eprintln!("== {kind}: 1 publisher, {n} viewers");
    let server = start_server(args, bin, kind).await?;
    let tck = clk_tck();
    let stream = "live/bench";
    let t_pub = Instant::now();
    let _ff = KillOnDrop(ffmpeg_publish(args, &args.fixture, &format!("rtmp://{}/{stream}", server.rtmp))?);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe = tokio::spawn(hls_probe(server.http.clone(), format!("/{stream}.m3u8"), t_pub, seen.clone()));
    // live?
    let live_ms = loop {
        if let Ok((200, _)) = http_get_once(&server.http, &format!("/api/streams/{stream}")).await {
            break t_pub.elapsed().as_secs_f64() * 1000.0;
        }
        if t_pub.elapsed() > Duration::from_secs(15) {
            bail!("stream never went live (ffmpeg?)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // GOP cache filled, HLS first segment out: the baseline with 0 viewers
    tokio::time::sleep(Duration::from_secs_f64(if args.quick { 2.5 } else { 4.5 })).await;
    let base = sample(args, server.pid);

    let mut stats = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let gap = Duration::from_micros(args.ramp_ms * 1000 / n.max(1) as u64);
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for _ in 0..n {
        tick.tick().await;
        let st = Arc::new(ViewerStat::new());
        stats.push(st.clone());
        let (http, rtmp) = (server.http.clone(), server.rtmp.clone());
        let err = st.clone();
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> = match kind {
            "flv" => Box::pin(flv_viewer(http, format!("/{stream}.flv"), st)),
            "rtmp" => Box::pin(rtmp_viewer(rtmp, "live".into(), "bench".into(), st)),
            _ => Box::pin(hls_viewer(http, format!("/{stream}.m3u8"), st)),
        };
        tasks.push(tokio::spawn(async move {
            if let Err(e) = fut.await {
                if !err.error.swap(true, Ordering::Relaxed) {
                    eprintln!("viewer error: {e:#}");
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let media0: Vec<i64> = stats.iter().map(|s| s.media_ms.load(Ordering::Relaxed)).collect();
    let bytes0: u64 = stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
    let a = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    let wall_ms = b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64() * 1000.0;
    let bytes1: u64 = stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
    probe.abort();
    for t in &tasks {
        t.abort();
    }
    drop(_ff);

    let slack_ms = if kind == "hls" { 2000.0 } else { 0.0 }; // HLS media time moves in whole segments
    let mut kept = 0;
    let mut errors = 0;
    for (s, m0) in stats.iter().zip(&media0) {
        let m1 = s.media_ms.load(Ordering::Relaxed);
        let err = s.error.load(Ordering::Relaxed);
        errors += err as usize;
        if !err && *m0 >= 0 && (m1 - m0) as f64 + slack_ms >= 0.9 * wall_ms {
            kept += 1;
        }
    }
    let mut ttfk: Vec<f64> = stats
        .iter()
        .map(|s| s.first_key_us.load(Ordering::Relaxed))
        .filter(|&u| u > 0)
        .map(|u| u as f64 / 1000.0)
        .collect();
    let got_key = ttfk.len();
    let (p50, p95) = (percentile(&mut ttfk, 0.5), percentile(&mut ttfk, 0.95));
    let cpu = 100.0 * (b.ticks - a.ticks) as f64 / tck / (wall_ms / 1000.0);
    let rss_mib = b.rss_kib as f64 / 1024.0;
    let hwm_mib = b.hwm_kib as f64 / 1024.0;
    let per_viewer_kib = (b.rss_kib as f64 - base.rss_kib as f64) / n.max(1) as f64;
    let seen = seen.lock().unwrap().clone();
    let first_seg_ms = seen.first().map_or(f64::NAN, |s| s.1);
    let mut late: Vec<f64> = seen.iter().skip(1).map(|s| s.2).collect();
    let (late50, late_max) = (percentile(&mut late, 0.5), late.iter().copied().fold(f64::NAN, f64::max));
    let out_mbit = (bytes1 - bytes0) as f64 * 8.0 / (wall_ms / 1000.0) / 1e6;
    let server_core_busy = pct(a.server_core, b.server_core);
    let client_core_busy = pct(a.client_core, b.client_core);
    let json = json!({
        "scenario": kind, "viewers": n, "publishers": 1, "steady_s": wall_ms / 1000.0,
        "server_cpu_pct": round1(cpu), "rss_mib": round1(rss_mib), "peak_rss_mib": round1(hwm_mib),
        "rss_0_viewers_mib": round1(base.rss_kib as f64 / 1024.0), "per_viewer_kib": round1(per_viewer_kib),
        "kept_up": kept, "errors": errors, "got_keyframe": got_key,
        "first_key_p50_ms": round1(p50), "first_key_p95_ms": round1(p95),
        "live_after_ms": round1(live_ms), "hls_first_segment_ms": round1(first_seg_ms),
        "hls_segment_late_p50_ms": round1(late50), "hls_segment_late_max_ms": round1(late_max),
        "client_mbit_s": round1(out_mbit),
        "server_core_busy_pct": round1(server_core_busy), "client_core_busy_pct": round1(client_core_busy),
        "other_load_on_server_core_pct": round1(server_core_busy - cpu),
    });
    warn_noise(kind, server_core_busy - cpu);
    let (bound, aim) = match kind {
        "flv" => (50.0, 35.0),
        "rtmp" => (50.0, 27.0),
        _ => (f64::NAN, 36.0),
    };
    let mut checks = vec![(format!("{kind}: all {n} viewers kept up ({kept})"), kept == n, true)];
    if bound.is_finite() {
        checks.push((format!("{kind}: CPU <= {bound}% ({cpu:.1}%)"), cpu <= bound, true));
        checks.push((format!("{kind}: RSS <= 150 MiB ({rss_mib:.1})"), rss_mib <= 150.0, true));
        checks.push((format!("{kind}: first keyframe p95 <= 50 ms ({p95:.1})"), p95 <= 50.0, kind == "flv"));
    }
    checks.push((format!("{kind}: aim CPU <= {aim}% ({cpu:.1}%)"), cpu <= aim, false));
    checks.push((format!("{kind}: aim RSS <= 64 MiB ({rss_mib:.1})"), rss_mib <= 64.0, false));
    if kind != "hls" {
        checks.push((format!("{kind}: aim <= 64 KiB/viewer ({per_viewer_kib:.1})"), per_viewer_kib <= 64.0, false));
    } else {
        checks.push((
            format!("hls: first segment listed <= 4000 ms after publish ({first_seg_ms:.0})"),
            first_seg_ms <= 4000.0,
            true,
        ));
    }
    let row = vec![
        kind.to_string(),
        format!("1 → {n}"),
        format!("{cpu:.1} %"),
        format!("{rss_mib:.1} / {hwm_mib:.1}"),
        format!("{per_viewer_kib:.1}"),
        format!("{kept}/{n}"),
        format!("{p50:.0} / {p95:.0}"),
        format!("{server_core_busy:.0} / {client_core_busy:.0}"),
    ];
    drop(server);
    Ok(ScenarioResult { name: kind.into(), json, checks, row })
}

async fn many_publishers(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    let n = args.publishers;
    eprintln!("== many: {n} publishers with HLS on ({})", args.many_fixture.display());
    let server = start_server(args, bin, "many").await?;
    let tck = clk_tck();
    let tags = Arc::new(read_flv(&args.many_fixture)?);
    let base = sample(args, server.pid);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let gap = Duration::from_millis(2000 / n.max(1) as u64);
    for i in 0..n {
        let (rtmp, tags, stop, errors) = (server.rtmp.clone(), tags.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            if let Err(e) = rtmp_publisher(rtmp, format!("bench{i}"), tags, stop).await {
                eprintln!("publisher error: {e:#}");
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(if args.quick { 3.0 } else { 5.0 }))).await;
    let a = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    let wall_s = b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64();
    // every stream live and with HLS segments?
    let mut with_hls = 0;
    for i in 0..n {
        if let Ok((200, body)) = http_get_once(&server.http, &format!("/live/bench{i}.m3u8")).await {
            if !parse_playlist(&String::from_utf8_lossy(&body)).segments.is_empty() {
                with_hls += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let cpu = 100.0 * (b.ticks - a.ticks) as f64 / tck / wall_s;
    let rss_mib = b.rss_kib as f64 / 1024.0;
    let hwm_mib = b.hwm_kib as f64 / 1024.0;
    let per_pub_kib = (b.rss_kib as f64 - base.rss_kib as f64) / n.max(1) as f64;
    let errors = errors.load(Ordering::Relaxed);
    let (sb, cb) = (pct(a.server_core, b.server_core), pct(a.client_core, b.client_core));
    let json = json!({
        "scenario": "many", "publishers": n, "fixture": args.many_fixture.display().to_string(), "steady_s": wall_s,
        "server_cpu_pct": round1(cpu), "cpu_per_publisher_pct": round2(cpu / n.max(1) as f64),
        "rss_mib": round1(rss_mib), "peak_rss_mib": round1(hwm_mib), "per_publisher_kib": round1(per_pub_kib),
        "streams_with_hls": with_hls, "errors": errors,
        "server_core_busy_pct": round1(sb), "client_core_busy_pct": round1(cb),
        "other_load_on_server_core_pct": round1(sb - cpu),
    });
    warn_noise("many", sb - cpu);
    let checks = vec![
        (format!("many: {n} publishers all serving HLS ({with_hls})"), with_hls == n && errors == 0, true),
        (format!("many: CPU <= 25% ({cpu:.1}%)"), cpu <= 25.0, true),
        (format!("many: RSS <= 500 MiB ({rss_mib:.1})"), rss_mib <= 500.0, true),
    ];
    let row = vec![
        "many (HLS on)".into(),
        format!("{n} → 0"),
        format!("{cpu:.1} % ({:.2} %/pub)", cpu / n.max(1) as f64),
        format!("{rss_mib:.1} / {hwm_mib:.1}"),
        format!("{per_pub_kib:.1}/pub"),
        format!("{with_hls}/{n} HLS"),
        "-".into(),
        format!("{sb:.0} / {cb:.0}"),
    ];
    drop(server);
    Ok(ScenarioResult { name: "many".into(), json, checks, row })
}

/// The server core should be busy with the server only (plus softirq work it causes).
fn warn_noise(kind: &str, other: f64) {
    if other > 5.0 {
        eprintln!(
            "warning: {kind}: {other:.0} % of the server core went to other processes; the machine was not quiet"
        );
    }
}

fn round1(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        serde_json::Value::Null
    }
}

fn round2(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!((x * 100.0).round() / 100.0)
    } else {
        serde_json::Value::Null
    }
}

fn print_table(args: &Args, results: &[ScenarioResult]) {
    let head = [
        "scenario",
        "pub → viewers",
        "server CPU",
        "RSS / peak MiB",
        "KiB per viewer",
        "kept up",
        "1st key p50/p95 ms",
        "core busy srv/cli %",
    ];
    println!();
    println!("| {} |", head.join(" | "));
    println!("|{}|", head.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in results {
        println!("| {} |", r.row.join(" | "));
    }
    for r in results.iter().filter(|r| r.name == "hls") {
        println!(
            "\nHLS: first segment listed {} ms after publish start; segments listed {} ms (median) / {} ms (max) after their media end",
            r.json["hls_first_segment_ms"], r.json["hls_segment_late_p50_ms"], r.json["hls_segment_late_max_ms"]
        );
    }
    println!(
        "\nsteady window {} s; server on core {}, client + ffmpeg on core {}",
        args.steady, args.server_core, args.client_core
    );
    for r in results {
        for (text, ok, hard) in &r.checks {
            let verdict = match (ok, hard) {
                (true, _) => "PASS",
                (false, true) => "MISS",
                (false, false) => "miss (aim)",
            };
            println!("{verdict:>10}  {text}");
        }
    }
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
            let (mut c, mut f) = (Chunked::default(), FlvScan::default());
            let t0 = Instant::now();
            let mut done = false;
            for piece in wire.chunks(step) {
                done = c.feed(piece, |d| f.feed(d, &st, t0)).unwrap();
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
    fn playlist_parsing() {
        let p = parse_playlist(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:7\n#EXTINF:2.002,\nbench-a-7.ts\n#EXTINF:1.5,\nbench-a-8.ts\n",
        );
        assert_eq!(p.target_ms, 2000);
        assert_eq!(p.segments, vec![(7, 2002, "bench-a-7.ts".into()), (8, 1500, "bench-a-8.ts".into())]);
    }
}
