//! Shared helpers for integration tests: start the gateway on ephemeral ports (in this
//! process through `app::Bound` / `app::serve`, or the real binary where the process itself
//! is the point: signals, flags, memory measured by VmHWM, log lines), publish with ffmpeg,
//! fetch over HTTP. A test that needs a tool fails loudly when it is missing.
#![allow(dead_code)]

pub mod browser;
pub mod hostile;
pub mod nginx_rtmp;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Address space the server may reserve in every integration test (2 GiB).
pub const ADDRESS_SPACE_LIMIT: u64 = 2 << 30;

/// A field of `/proc/PID/status` in kB (`VmRSS`, `VmHWM`).
pub fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let line = status.lines().find(|l| l.starts_with(field)).expect("status field");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("status value")
}

/// A running gateway: the binary (killed on drop) or a server in this process (shut down
/// on drop).
pub struct Gateway {
    child: Option<Child>,
    in_process: Option<InProcess>,
    pub rtmp: SocketAddr,
    pub http: SocketAddr,
    log: Arc<Mutex<String>>,
}

/// A gateway served by `livegate::app::serve` on a runtime thread of its own.
struct InProcess {
    shutdown: tokio_util::sync::CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// The binary with the built-in defaults.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A gateway in this process with the configuration `toml` (listeners on port 0). Its
    /// ports come from the bound listeners (`app::Bound`), not from its log; it has no log,
    /// pid or signals: tests about those start the binary ([`Self::start_with`]).
    /// [`Self::in_process`] with the configuration file at `path`.
    pub fn in_process_file(path: &str) -> Self {
        Self::in_process(&std::fs::read_to_string(path).expect("test configuration file"))
    }

    pub fn in_process(toml: &str) -> Self {
        Self::in_process_at(toml, "127.0.0.1:0".parse().unwrap(), "127.0.0.1:0".parse().unwrap())
    }

    /// [`Self::in_process`] on given addresses (for gateways that name each other's ports).
    pub fn in_process_at(toml: &str, rtmp: SocketAddr, http: SocketAddr) -> Self {
        let mut config = livegate::config::Config::parse(toml).expect("test configuration");
        config.rtmp.listen = rtmp;
        config.http.listen = http;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let bound = livegate::app::Bound::bind(&config).await.expect("bind");
                tx.send((bound.rtmp_addr().unwrap(), bound.http_addr().unwrap())).unwrap();
                livegate::app::serve(config, bound, stop, None).await.expect("serve");
            });
        });
        let (rtmp, http) = rx.recv_timeout(Duration::from_secs(20)).expect("the in-process gateway did not bind");
        let in_process = Some(InProcess { shutdown, thread: Some(thread) });
        Gateway { child: None, in_process, rtmp, http, log: Arc::new(Mutex::new(String::new())) }
    }

    /// Starts the binary with `extra` flags, under an address-space limit of
    /// [`ADDRESS_SPACE_LIMIT`] (`prlimit --as`): every integration test runs the server as
    /// a host with `LimitAS=` or strict overcommit would, so an attack that reserves
    /// gigabytes aborts it and fails the test.
    pub fn start_with(extra: &[&str]) -> Self {
        Self::start_limited(&[], extra)
    }

    /// Like [`Self::start_with`], with further `prlimit` options (e.g. `--nofile=512`).
    pub fn start_limited(limits: &[&str], extra: &[&str]) -> Self {
        let prlimit = require_tool("prlimit");
        let mut child = Command::new(prlimit)
            .arg(format!("--as={ADDRESS_SPACE_LIMIT}"))
            .args(limits)
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_livegate"))
            .args(["--rtmp-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", std::env::var("LIVEGATE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start livegate binary");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let clean = strip_ansi(&line);
                for (proto, marker) in [("rtmp", "RTMP listening on "), ("http", "HTTP listening on ")] {
                    if let Some(rest) = clean.split(marker).nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                        let _ = tx.send((proto, addr));
                    }
                }
                if std::env::var_os("LIVEGATE_TEST_ECHO").is_some() {
                    eprintln!("[livegate] {clean}");
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&clean);
                l.push('\n');
            }
        });
        let (mut rtmp, mut http) = (None, None);
        while rtmp.is_none() || http.is_none() {
            let (proto, addr) =
                rx.recv_timeout(Duration::from_secs(20)).expect("livegate did not report its listeners");
            let addr: SocketAddr = addr.parse().expect("listener address");
            if proto == "rtmp" {
                rtmp = Some(addr);
            } else {
                http = Some(addr);
            }
        }
        Gateway { child: Some(child), in_process: None, rtmp: rtmp.unwrap(), http: http.unwrap(), log }
    }

    pub fn rtmp_url(&self, key: &str) -> String {
        format!("rtmp://{}/{}", self.rtmp, key)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.http, path)
    }

    pub fn log(&self) -> String {
        assert!(self.child.is_some(), "an in-process gateway has no log of its own: start the binary");
        self.log.lock().unwrap().clone()
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("an in-process gateway has no process: start the binary")
    }

    /// Waits until the log contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> bool {
        wait_until(timeout, || self.log().contains(needle))
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child().try_wait(), Ok(None))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("an in-process gateway has no pid: start the binary").id()
    }

    /// Sends SIGTERM and waits for the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = self.child().try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(p) = &mut self.in_process {
            p.shutdown.cancel();
            if let Some(t) = p.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Panics with a clear message when a required external tool is missing.
pub fn require_tool(name: &str) -> PathBuf {
    let out = Command::new("sh").args(["-c", &format!("command -v {name}")]).output().expect("sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "required tool `{name}` is not installed; run the README's test command (scripts/test.sh), which installs it"
    );
    PathBuf::from(path)
}

/// An ffmpeg process; killed on drop.
pub struct Ffmpeg {
    pub child: Child,
}

impl Ffmpeg {
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn wait(mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Ffmpeg {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Source {
    pub video: bool,
    pub audio: bool,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub gop: u32,
}

impl Default for Source {
    fn default() -> Self {
        Self { video: true, audio: true, width: 640, height: 360, fps: 30, gop: 30 }
    }
}

/// Publishes a synthetic live source (lavfi test pattern + sine, H.264 with B-frames + AAC) in real time.
pub fn publish(url: &str, src: Source, seconds: Option<u32>) -> Ffmpeg {
    require_tool("ffmpeg");
    let mut args: Vec<String> = vec!["-hide_banner".into(), "-loglevel".into(), "error".into(), "-re".into()];
    if src.video {
        args.extend(
            ["-f", "lavfi", "-i", &format!("testsrc2=size={}x{}:rate={}", src.width, src.height, src.fps)]
                .map(String::from),
        );
    }
    if src.audio {
        args.extend(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"].map(String::from));
    }
    if let Some(s) = seconds {
        args.extend(["-t".to_string(), s.to_string()]);
    }
    if src.video {
        args.extend(
            [
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-profile:v",
                "high",
                "-bf",
                "2",
                "-g",
                &src.gop.to_string(),
                "-keyint_min",
                &src.gop.to_string(),
                "-sc_threshold",
                "0",
                "-pix_fmt",
                "yuv420p",
                "-b:v",
                "800k",
            ]
            .map(String::from),
        );
    }
    if src.audio {
        args.extend(["-c:a", "aac", "-b:a", "64k", "-ar", "44100", "-ac", "2"].map(String::from));
    }
    args.extend(["-f".to_string(), "flv".to_string(), url.to_string()]);
    let child = Command::new("ffmpeg").args(&args).stdin(Stdio::null()).spawn().expect("start ffmpeg");
    Ffmpeg { child }
}

/// Records `seconds` of a URL with `ffmpeg -c copy` into `out`.
pub fn record(url: &str, seconds: u32, out: &Path) -> std::process::Output {
    require_tool("ffmpeg");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-rw_timeout", "10000000", "-i", url, "-t"])
        .arg(seconds.to_string())
        .args(["-c", "copy"])
        .arg(out)
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg")
}

/// ffprobe JSON (`-show_streams -show_packets`) of a file or URL.
pub fn ffprobe(target: &str, extra: &[&str]) -> serde_json::Value {
    require_tool("ffprobe");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(extra)
        .arg(target)
        .output()
        .expect("run ffprobe");
    assert!(out.status.success(), "ffprobe {target} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("ffprobe json")
}

/// A plain HTTP/1.1 response.
/// `Read::read` that tries again when a signal interrupts it. The kernel never restarts a
/// socket read with a timeout (`SO_RCVTIMEO`, signal(7)), not even under `SA_RESTART`, and a
/// stopped and continued process sees `EINTR` there without any handler: CI once failed on
/// `read http head: Interrupted system call` in a test that had nothing wrong.
pub trait ReadSome: Read {
    fn read_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }
}

impl<R: Read + ?Sized> ReadSome for R {}

#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// GET/HEAD `path`, reading at most `max_body` bytes of body (for endless streams) or until close.
pub fn http_request(addr: SocketAddr, method: &str, path: &str, max_body: usize, timeout: Duration) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect http");
    s.set_read_timeout(Some(timeout)).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let header_end = loop {
        let n = s.read_some(&mut chunk).expect("read http head");
        assert!(n > 0, "connection closed before the response head");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut raw = buf[header_end..].to_vec();
    let chunked = headers.iter().any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if method != "HEAD" {
        let start = Instant::now();
        while dechunk_len(&raw, chunked) < max_body && start.elapsed() < timeout {
            match s.read(&mut chunk) {
                // (read_some would wait the whole timeout again after each signal)
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    } else {
        raw.clear();
    }
    let mut body = if chunked { dechunk(&raw) } else { raw };
    body.truncate(max_body);
    HttpResponse { status, headers, body }
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, usize::MAX, Duration::from_secs(10))
}

fn dechunk_len(raw: &[u8], chunked: bool) -> usize {
    if chunked {
        dechunk(raw).len()
    } else {
        raw.len()
    }
}

/// Decodes as much of a chunked body as is complete.
pub fn dechunk(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(eol) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&raw[pos..pos + eol]).into_owned();
        let Ok(size) = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16) else {
            break;
        };
        pos += eol + 2;
        if size == 0 {
            break;
        }
        let end = (pos + size).min(raw.len());
        out.extend_from_slice(&raw[pos..end]);
        if pos + size + 2 > raw.len() {
            break;
        }
        pos += size + 2;
    }
    out
}

/// A fresh directory under the target dir for a test's files.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Waits until a stream is live (its HTTP-FLV URL answers 200).
pub fn wait_live(gw: &Gateway, key: &str, timeout: Duration) -> bool {
    wait_until(timeout, || {
        http_request(gw.http, "HEAD", &format!("/{key}.flv"), 0, Duration::from_secs(2)).status == 200
    })
}

/// A current ffmpeg (9.x, with libx265, libsvtav1, libopus and Enhanced RTMP): the one
/// scripts/test.sh fetches (PyPI imageio-ffmpeg) and names in `LIVEGATE_FFMPEG9`, or the
/// installed `imageio_ffmpeg` Python package's.
pub fn ffmpeg9() -> PathBuf {
    if let Some(p) = std::env::var_os("LIVEGATE_FFMPEG9").map(PathBuf::from).filter(|p| p.exists()) {
        return p;
    }
    let out = Command::new("python3")
        .args(["-c", "import imageio_ffmpeg; print(imageio_ffmpeg.get_ffmpeg_exe())"])
        .output()
        .ok()
        .filter(|o| o.status.success());
    let path = out.map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())).filter(|p| p.exists());
    path.expect(
        "ffmpeg 9 (Enhanced RTMP) is not installed: run the README's test command (scripts/test.sh), which fetches \
         it from PyPI imageio-ffmpeg and sets LIVEGATE_FFMPEG9",
    )
}

/// Runs ffmpeg 9 with `args` in the background (killed on drop).
pub fn ffmpeg9_spawn(args: &[&str]) -> Ffmpeg {
    let child = Command::new(ffmpeg9())
        .env("SVT_LOG", "1") // SVT-AV1: errors only
        .args(["-hide_banner", "-loglevel", "error"])
        .args(args)
        .stdin(Stdio::null())
        .spawn()
        .expect("start ffmpeg 9");
    Ffmpeg { child }
}

/// ffmpeg 9 publishing a live test pattern (`SIZE` at `FPS`) and a 440 Hz sine at
/// `AUDIO_RATE` to `url`, encoded as `encode` says (ffmpeg arguments, space separated).
pub fn ffmpeg9_publish(size: &str, fps: u32, audio_rate: u32, encode: &str, url: &str) -> Ffmpeg {
    let video = format!("testsrc2=size={size}:rate={fps}");
    let audio = format!("sine=frequency=440:sample_rate={audio_rate}");
    let mut args = vec!["-re", "-f", "lavfi", "-i", &video, "-f", "lavfi", "-i", &audio];
    args.extend(encode.split_whitespace());
    args.extend(["-f", "flv", url]);
    ffmpeg9_spawn(&args)
}

/// `ffmpeg9 -i URL -t SECONDS -f null -`: what it printed about the input's streams and
/// whether it decoded without an error.
pub fn ffmpeg9_decode(url: &str, seconds: u32) -> (bool, String) {
    let out = Command::new(ffmpeg9())
        .args(["-hide_banner", "-rw_timeout", "10000000", "-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
        .stdin(Stdio::null())
        .output()
        .expect("run ffmpeg 9");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), text)
}

/// What ffmpeg read from a URL, by ffprobe.
#[derive(Debug, Default)]
pub struct ReadBack {
    pub video: usize,
    pub audio: usize,
    /// The streams' codecs, comma-separated (or why nothing was read).
    pub codecs: String,
    /// The video packets' decode times, in seconds.
    pub video_ts: Vec<f64>,
}

/// ffmpeg reads `url` for `seconds` into a file (in the scratch dir `name`); what it got.
pub fn read_back(url: &str, name: &str, seconds: u32) -> ReadBack {
    let out = scratch_dir(name).join("got.flv");
    let r = record(url, seconds, &out);
    if !out.exists() {
        return ReadBack { codecs: format!("nothing: {}", String::from_utf8_lossy(&r.stderr)), ..Default::default() };
    }
    let probe = ffprobe(out.to_str().unwrap(), &["-show_streams", "-show_packets"]);
    let codecs: Vec<String> = probe["streams"]
        .as_array()
        .map(|l| l.iter().filter_map(|s| s["codec_name"].as_str().map(String::from)).collect())
        .unwrap_or_default();
    let packets = probe["packets"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| packets.iter().filter(|p| p["codec_type"] == kind).count();
    let video_ts = packets
        .iter()
        .filter(|p| p["codec_type"] == "video")
        .filter_map(|p| p["dts_time"].as_str().and_then(|t| t.parse().ok()))
        .collect();
    ReadBack { video: count("video"), audio: count("audio"), codecs: codecs.join(","), video_ts }
}

/// `url` plays for 2 s: at least 30 video and 30 audio packets, H.264 and AAC.
pub fn assert_plays(url: &str, name: &str) {
    let r = read_back(url, name, 2);
    assert!(r.video >= 30 && r.audio >= 30, "{url}: {} video / {} audio packets ({})", r.video, r.audio, r.codecs);
    assert!(r.codecs.contains("h264") && r.codecs.contains("aac"), "{url}: {}", r.codecs);
}

/// A callback server that allows every request and answers `answer` as JSON; the requests'
/// bodies.
pub fn answering_hook(answer: String) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // the head, then content-length bytes
            while let Ok(n) = conn.read(&mut buf) {
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    if body.len() >= len {
                        seen2.lock().unwrap().push(body.to_string());
                        break;
                    }
                }
            }
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    (url, seen)
}

/// An admin API request (`Authorization: Bearer token` when given, no body): (status, body).
pub fn admin(gw: &Gateway, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let resp = String::from_utf8_lossy(&resp).to_string();
    let status = resp.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (status, body)
}

/// A loopback address with a port free right now (for a listener the test configures).
pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// The `[https]` section serving `cert`/`key` on `addr`.
pub fn https_config(addr: SocketAddr, cert: &Path, key: &Path) -> String {
    format!("[https]\nlisten = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display())
}

/// A test CA in `dir` (`ca.pem`, made on first use) and a certificate it signs for
/// 127.0.0.1 and localhost with `cn` as its subject: (`NAME.pem`, `NAME.key`), made with
/// openssl (RTMPS and HTTPS tests).
pub fn ca_signed_cert(dir: &Path, name: &str, cn: &str) -> (PathBuf, PathBuf) {
    let openssl = require_tool("openssl");
    let run = |args: &[&str]| {
        let out = Command::new(&openssl).current_dir(dir).args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    if !dir.join("ca.pem").exists() {
        let subject = ["-subj", "/CN=livegate test CA"];
        run(&[
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"][..],
            &subject,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat());
    }
    let (key, csr, pem) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.pem"));
    let subject = format!("/CN={cn}");
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-keyout", &key, "-out", &csr]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
        .unwrap();
    let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"];
    run(&[&sign[..], &["-extfile", "ext.cnf", "-out", &pem]].concat());
    (dir.join(pem), dir.join(key))
}
