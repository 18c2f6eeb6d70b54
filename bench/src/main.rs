//! Load benchmark (issue #6): starts the release `livegate` pinned to one core,
//! publishes a fixture and drives N HTTP-FLV, RTMP-play or HLS viewers (or many
//! publishers) from a lightweight tokio load client pinned to the other core.
//! Prints one JSON line per scenario, a table and PASS/MISS per target.
//!
//! `cargo run --release --bin livegate-bench -- --help`

mod clients;
mod cluster;
mod console;
mod record;
mod report;
mod tls;

use clients::*;
use report::*;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "livegate load benchmark: CPU, memory, keep-up and start-up latency under many viewers")]
struct Args {
    /// Scenarios to run, comma separated: flv, ws (WebSocket-FLV), rtmp, hls, llhls
    /// (Low-Latency HLS clients that block for each part, like hls.js), many, and the join
    /// storms flv-storm and rtmp-storm (every viewer connects at once instead of over
    /// --ramp-ms), and reconnect (half HTTP-FLV, half RTMP viewers; the publisher is killed
    /// 3 s into the steady window and restarted 1 s later), consoles (what open consoles
    /// cost, 200 publishers), cluster (an origin's CPU for two edges of --viewers HTTP-FLV
    /// viewers each, found through a redis-server, against two RTMP viewers), flv-tls and
    /// llhls-tls (the same viewers over the HTTPS port: HTTP-FLV over HTTP/1.1 + TLS,
    /// LL-HLS over HTTP/2 + TLS; run flv/llhls before them to compare). `control`
    /// (first) runs the flv
    /// timeline with no viewer: the RSS the stream itself gains meanwhile (what is left of
    /// the HLS window filling after --settle) is then taken off the later scenarios'
    /// per-viewer figure, shown as "net".
    #[arg(
        long,
        default_value = "control,flv,ws,rtmp,hls,llhls,many,flv-storm,rtmp-storm,reconnect",
        value_delimiter = ','
    )]
    scenarios: Vec<String>,
    /// Viewers per single-publisher scenario.
    #[arg(long, default_value_t = 1000)]
    viewers: usize,
    /// Publishers in the `many` scenario (HLS on).
    #[arg(long, default_value_t = 100)]
    publishers: usize,
    /// Consoles open in the `consoles` scenario (200 publishers).
    #[arg(long, default_value_t = 20)]
    consoles: usize,
    /// Publishers per codec in the `ingest` scenario (HLS on, no viewers): enough that the
    /// server's CPU rises well above the noise of one publish.
    #[arg(long, default_value_t = 10)]
    ingest_publishers: usize,
    /// Time from the stream going live to the 0-viewer RSS baseline (s): by then the
    /// stream's own memory is at its steady state (the HLS window of 6 × 2 s segments
    /// and its retired segments, held 14 s past the window, are full), so the per-viewer
    /// figure is what the viewers add. The figure against a baseline taken 4.5 s after
    /// going live, as before, is reported too (`per_viewer_early_kib`).
    #[arg(long, default_value_t = 32.0)]
    settle: f64,
    /// Order of the `ingest` scenario's fixtures (h264, hevc, av1, multi3): alternate it
    /// between runs, so drift within a sitting favours none.
    #[arg(long, default_value = "h264,hevc,av1,multi3", value_delimiter = ',')]
    ingest_order: Vec<String>,
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
        args.settle = args.settle.min(2.5);
    }
    for (name, v) in [("--settle", args.settle), ("--steady", args.steady), ("--warmup", args.warmup)] {
        if !(v.is_finite() && v >= 0.0) {
            bail!("{name} must be a number of seconds >= 0, got {v}");
        }
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
    let mut control = None;
    // each scenario's server CPU, for the `-tls` ones to compare with their plain run
    let mut cpus = std::collections::HashMap::new();
    // `many` as run earlier in this sitting: what `many-record` is compared with
    let mut many = serde_json::Value::Null;
    for s in args.scenarios.clone() {
        let scenario = async {
            match s.as_str() {
                "control" | "flv" | "ws" | "rtmp" | "hls" | "llhls" | "flv-storm" | "rtmp-storm" | "reconnect" => {
                    single_publisher(&args, &livegate, &s, control, None).await
                }
                s if s.ends_with("-edge") => single_publisher(&args, &livegate, s, control, None).await,
                s if s.ends_with("-tls") => {
                    let plain = cpus.get(s.trim_end_matches("-tls")).copied();
                    single_publisher(&args, &livegate, s, control, plain).await
                }
                "push" => push_targets(&args, &livegate).await,
                "many" => many_publishers(&args, &livegate, None).await,
                "many-record" => many_publishers(&args, &livegate, Some(many.clone())).await,
                "record-2h" => record::two_hours(&args, &livegate).await,
                "consoles" => console::consoles(&args, &livegate).await,
                "cluster" => cluster::cluster(&args, &livegate).await,
                "ingest" => ingest(&args, &livegate).await,
                other => bail!("unknown scenario {other}"),
            }
        };
        // on Ctrl-C the scenario is dropped, which kills livegate and ffmpeg
        let r = tokio::select! {
            r = scenario => r?,
            _ = tokio::signal::ctrl_c() => bail!("interrupted"),
        };
        if s == "control" {
            control = r.json["rss_growth_kib"].as_f64();
        }
        if let Some(cpu) = r.json["server_cpu_pct"].as_f64() {
            cpus.insert(s.clone(), cpu);
        }
        if s == "many" {
            many = r.json.clone();
        }
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
    start_server_on(args, bin, name, args.server_core, None).await
}

/// A livegate pinned to `core`, with the configuration `config` (TOML text) when given.
async fn start_server_on(args: &Args, bin: &Path, name: &str, core: usize, config: Option<&str>) -> Result<Server> {
    let (rp, hp) = (free_port()?, free_port()?);
    let rtmp = format!("127.0.0.1:{rp}");
    let http = format!("127.0.0.1:{hp}");
    let log = std::fs::File::create(format!("target/bench/livegate-{name}.log"))?;
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(core.to_string()).arg(bin);
    if let Some(text) = config {
        let path = format!("target/bench/{name}.toml");
        std::fs::write(&path, text)?;
        cmd.arg("--config").arg(path);
    } else if let Some(config) = &args.server_config {
        cmd.arg("--config").arg(config);
    } else if name == "hls" {
        // the classic HLS client polls playlists and fetches .ts segments
        let config = "target/bench/hls.toml";
        std::fs::write(config, "[hls]\nvariant = \"mpegts\"\n")?;
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
    /// utime alone: what the server's own code costs (the rest, stime, is mostly the
    /// kernel's TCP work, the same for any build moving the same bytes)
    user_ticks: u64,
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
    let user_ticks = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
    let ticks = user_ticks + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
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
        user_ticks,
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

// ---------------------------------------------------------------- scenarios

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

/// `control`: the growth of the server's RSS over the same timeline with no viewers (the
/// stream's own buffers filling: the HLS window, retired segments), in KiB, when the
/// `control` scenario ran before in this sitting.
/// How long a join storm's viewer stops reading after its first keyframe (see
/// `ViewerStat::pause_after_key_ms`); well within the warm-up.
const STORM_PAUSE_MS: u64 = 1000;

async fn single_publisher(
    args: &Args,
    bin: &Path,
    scenario: &str,
    control: Option<f64>,
    plain_cpu: Option<f64>,
) -> Result<ScenarioResult> {
    // over TLS (the HTTPS port): HTTP-FLV over HTTP/1.1, LL-HLS over HTTP/2; compared with
    // the same scenario without `-tls` when it ran earlier in this sitting (`plain_cpu`)
    let (scenario_base, tls) = match scenario.strip_suffix("-tls") {
        Some(k) if k == "flv" || k == "llhls" => (k, true),
        Some(_) => bail!("{scenario}: only flv-tls and llhls-tls"),
        None => (scenario, false),
    };
    // a join storm: every viewer connects at once (a popular stream starts, a page is
    // shared, everyone reconnects after a restart)
    let (kind, storm) = match scenario_base.strip_suffix("-storm") {
        Some(k) => (k, true),
        None => (scenario_base, false),
    };
    // an edge: the server under test pulls the stream from an origin (another livegate, on
    // the client's core) when its first viewer asks
    let (kind, edge) = match kind.strip_suffix("-edge") {
        Some(k) => (k, true),
        None => (kind, false),
    };
    // the control: the flv timeline with no viewer
    let (kind, n) = if kind == "control" { ("flv", 0) } else { (kind, args.viewers) };
    let ramp_ms = if storm { 0 } else { args.ramp_ms };
    eprintln!("== {scenario}: 1 publisher, {n} viewers{}", if storm { ", all at once" } else { "" });
    let origin = match edge {
        true => Some(start_server_on(args, bin, "origin", args.client_core, None).await?),
        false => None,
    };
    // -tls: the certificates and the HTTPS address the server is given and the viewers use
    let https = match tls {
        true => Some((tls::Tls::make(Path::new("target/bench/tls"))?, format!("127.0.0.1:{}", free_port()?))),
        false => None,
    };
    let server = match &origin {
        Some(o) => {
            let config = format!("[apps.live]\npull = \"rtmp://{}/live\"\n", o.rtmp);
            start_server_on(args, bin, scenario, args.server_core, Some(&config)).await?
        }
        None => match &https {
            Some((certs, addr)) => {
                let (cert, key) = (certs.cert.canonicalize()?, certs.key.canonicalize()?);
                let config = format!(
                    "[https]\nlisten = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n",
                    cert.display(),
                    key.display()
                );
                start_server_on(args, bin, scenario, args.server_core, Some(&config)).await?
            }
            None => start_server(args, bin, scenario).await?,
        },
    };
    // where the viewers connect, and their TLS (h2 for LL-HLS, HTTP/1.1 for FLV)
    let (viewer_http, connector) = match &https {
        Some((certs, addr)) => {
            let alpn: &[u8] = if kind == "llhls" { b"h2" } else { b"http/1.1" };
            (addr.clone(), Some(certs.connector(alpn)?))
        }
        None => (server.http.clone(), None),
    };
    // where the encoder publishes
    let ingest = origin.as_ref().unwrap_or(&server);
    let tck = clk_tck();
    let stream = "live/bench";
    let t_pub = Instant::now();
    let publish_url = format!("rtmp://{}/{stream}", ingest.rtmp);
    let mut _ff = KillOnDrop(ffmpeg_publish(args, &args.fixture, &publish_url)?);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    // (an edge's HLS would start its pull before the viewers: no probe there)
    let probe = match edge {
        false => tokio::spawn(hls_probe(server.http.clone(), format!("/{stream}.m3u8"), t_pub, seen.clone())),
        true => tokio::spawn(async {}),
    };
    // live?
    let live_ms = loop {
        if let Ok((200, _)) = http_get_once(&ingest.http, &format!("/api/streams/{stream}")).await {
            break t_pub.elapsed().as_secs_f64() * 1000.0;
        }
        if t_pub.elapsed() > Duration::from_secs(15) {
            bail!("stream never went live (ffmpeg?)");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // GOP cache filled, HLS first segment out: the early baseline with 0 viewers (the
    // stream's HLS window still filling), then the settled one
    let live_at = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.settle.min(4.5))).await;
    let early = sample(args, server.pid);
    tokio::time::sleep_until((live_at + Duration::from_secs_f64(args.settle)).into()).await;
    let base = sample(args, server.pid);

    let mut stats = Vec::with_capacity(n);
    let mut tasks = Vec::with_capacity(n);
    let gap = Duration::from_micros(ramp_ms * 1000 / n.max(1) as u64);
    let mut tick = tokio::time::interval(gap.max(Duration::from_micros(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    if n == 0 {
        // the control waits as long as the ramp would take
        tokio::time::sleep(Duration::from_millis(ramp_ms)).await;
    }
    for _ in 0..n {
        if !storm {
            tick.tick().await;
        }
        let st = Arc::new(ViewerStat::new());
        if storm {
            st.pause_after_key_ms.store(STORM_PAUSE_MS, Ordering::Relaxed);
        }
        stats.push(st.clone());
        let (http, rtmp) = (viewer_http.clone(), server.rtmp.clone());
        let err = st.clone();
        // reconnect: every other viewer plays over RTMP
        let kind_i = match kind {
            "reconnect" if stats.len() % 2 == 0 => "rtmp",
            "reconnect" => "flv",
            k => k,
        };
        let fut: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> = match kind_i {
            "flv" => Box::pin(flv_viewer(http, format!("/{stream}.flv"), st, connector.clone())),
            "ws" => Box::pin(ws_viewer(http, format!("/{stream}.flv"), st)),
            "rtmp" => Box::pin(rtmp_viewer(rtmp, "live".into(), "bench".into(), st)),
            "llhls" => Box::pin(ll_viewer(http, format!("/{stream}.m3u8"), st, connector.clone())),
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
    let mut resumed = Vec::new();
    if kind == "reconnect" {
        // 3 s in, the encoder dies (SIGKILL: its TCP connection closes); 1 s later a new
        // one publishes the same key within the reconnect grace
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(_ff);
        // what the old publisher sent has reached the viewers by now
        tokio::time::sleep(Duration::from_millis(500)).await;
        for s in &stats {
            s.mark_ms.store(s.media_ms.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let restarted = epoch().elapsed();
        _ff = KillOnDrop(ffmpeg_publish(args, &args.fixture, &publish_url)?);
        tokio::time::sleep(Duration::from_secs_f64((args.steady - 4.0).max(2.0))).await;
        // when the first frame of the new publisher reached each viewer, from the first
        // viewer it reached (≈ when the server had it) and from the restart
        let us: Vec<u64> = stats.iter().map(|s| s.resumed_us.load(Ordering::Relaxed)).filter(|&u| u > 0).collect();
        let first = us.iter().copied().min().unwrap_or(0);
        resumed = us.iter().map(|u| (u - first) as f64 / 1000.0).collect();
        eprintln!(
            "   reconnect: {} of {n} viewers got the new publisher's media; the first {:.0} ms after the restart",
            us.len(),
            (first as f64 / 1000.0) - restarted.as_secs_f64() * 1000.0
        );
    } else {
        tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    }
    let b = sample(args, server.pid);
    // an edge pulls once, however many viewers it has: the origin's RTMP viewers
    let origin_viewers = match &origin {
        Some(o) => match http_get_once(&o.http, &format!("/api/streams/{stream}")).await {
            Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["viewers"]["rtmp"].as_i64())
                .unwrap_or(-1),
            _ => -1,
        },
        None => 0,
    };
    let wall_ms = b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64() * 1000.0;
    let bytes1: u64 = stats.iter().map(|s| s.bytes.load(Ordering::Relaxed)).sum();
    probe.abort();
    for t in &tasks {
        t.abort();
    }
    drop(_ff);

    // HLS media time moves in whole segments, LL-HLS in parts
    let slack_ms = match kind {
        "hls" => 2000.0,
        "llhls" => 500.0,
        _ => 0.0,
    };
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
    // where a viewer's wait went: connection up, first bytes of the answer (a storm's
    // split between the accept queue, the server's first answer and the keyframe)
    let p95_of = |f: fn(&ViewerStat) -> &AtomicU64| {
        let mut v: Vec<f64> =
            stats.iter().map(|s| f(s).load(Ordering::Relaxed)).filter(|&u| u > 0).map(|u| u as f64 / 1000.0).collect();
        (percentile(&mut v, 0.5), percentile(&mut v, 0.95))
    };
    let (conn50, conn95) = p95_of(|s| &s.connected_us);
    let (byte50, byte95) = p95_of(|s| &s.first_byte_us);
    let (p50, p95) = (percentile(&mut ttfk, 0.5), percentile(&mut ttfk, 0.95));
    let resumed_n = resumed.len();
    let (resume50, resume95) = (percentile(&mut resumed, 0.5), percentile(&mut resumed, 0.95));
    let cpu = 100.0 * (b.ticks - a.ticks) as f64 / tck / (wall_ms / 1000.0);
    let user = 100.0 * b.user_ticks.saturating_sub(a.user_ticks) as f64 / tck / (wall_ms / 1000.0);
    let rss_mib = b.rss_kib as f64 / 1024.0;
    let hwm_mib = b.hwm_kib as f64 / 1024.0;
    let growth_kib = b.rss_kib as f64 - base.rss_kib as f64;
    let per_viewer_kib = growth_kib / n.max(1) as f64;
    let per_viewer_early_kib = (b.rss_kib as f64 - early.rss_kib as f64) / n.max(1) as f64;
    // less what the server grew by without viewers over the same time
    let per_viewer_net_kib = control.filter(|_| n > 0).map_or(f64::NAN, |c| (growth_kib - c) / n as f64);
    let seen = seen.lock().unwrap().clone();
    let first_seg_ms = seen.first().map_or(f64::NAN, |s| s.1);
    let mut late: Vec<f64> = seen.iter().skip(1).map(|s| s.2).collect();
    let (late50, late_max) = (percentile(&mut late, 0.5), late.iter().copied().fold(f64::NAN, f64::max));
    let out_mbit = (bytes1 - bytes0) as f64 * 8.0 / (wall_ms / 1000.0) / 1e6;
    let server_core_busy = pct(a.server_core, b.server_core);
    let client_core_busy = pct(a.client_core, b.client_core);
    let json = json!({
        "scenario": scenario, "viewers": n, "publishers": 1, "steady_s": wall_ms / 1000.0, "ramp_ms": ramp_ms,
        "server_cpu_pct": round1(cpu), "server_user_pct": round1(user), "server_sys_pct": round1(cpu - user),
        "rss_mib": round1(rss_mib), "peak_rss_mib": round1(hwm_mib),
        "rss_0_viewers_mib": round1(base.rss_kib as f64 / 1024.0), "per_viewer_kib": round1(per_viewer_kib),
        "per_viewer_early_kib": round1(per_viewer_early_kib), "settle_s": args.settle,
        "rss_growth_kib": round1(growth_kib), "per_viewer_net_kib": round1(per_viewer_net_kib),
        "kept_up": kept, "errors": errors, "got_keyframe": got_key,
        "first_key_p50_ms": round1(p50), "first_key_p95_ms": round1(p95),
        "connected_p50_ms": round1(conn50), "connected_p95_ms": round1(conn95),
        "first_byte_p50_ms": round1(byte50), "first_byte_p95_ms": round1(byte95),
        "live_after_ms": round1(live_ms), "hls_first_segment_ms": round1(first_seg_ms),
        "hls_segment_late_p50_ms": round1(late50), "hls_segment_late_max_ms": round1(late_max),
        "client_mbit_s": round1(out_mbit),
        "reconnect_resumed_viewers": resumed_n,
        "reconnect_spread_p50_ms": round1(resume50), "reconnect_spread_p95_ms": round1(resume95),
        "server_core_busy_pct": round1(server_core_busy), "client_core_busy_pct": round1(client_core_busy),
        "other_load_on_server_core_pct": round1(server_core_busy - cpu),
        "origin_rtmp_viewers": origin_viewers,
    });
    warn_noise(kind, server_core_busy - cpu);
    let (bound, aim) = match kind {
        "flv" | "ws" | "reconnect" => (50.0, 35.0),
        "rtmp" => (50.0, 27.0),
        _ => (f64::NAN, 36.0),
    };
    let mut checks = vec![(format!("{scenario}: all {n} viewers kept up ({kept})"), kept == n, true)];
    if bound.is_finite() {
        checks.push((format!("{scenario}: CPU <= {bound}% ({cpu:.1}%)"), cpu <= bound, true));
        checks.push((format!("{scenario}: RSS <= 150 MiB ({rss_mib:.1})"), rss_mib <= 150.0, true));
        checks.push((
            format!("{scenario}: first keyframe p95 <= 50 ms ({p95:.1})"),
            p95 <= 50.0,
            kind == "flv" && !storm,
        ));
    }
    checks.push((format!("{scenario}: aim CPU <= {aim}% ({cpu:.1}%)"), cpu <= aim, false));
    if kind == "llhls" {
        checks.push((format!("{scenario}: aim RSS <= 96 MiB ({rss_mib:.1})"), rss_mib <= 96.0, false));
    } else {
        checks.push((format!("{scenario}: aim RSS <= 64 MiB ({rss_mib:.1})"), rss_mib <= 64.0, false));
    }
    if kind == "reconnect" {
        checks.push((
            format!("{scenario}: every viewer got the new publisher's media ({resumed_n})"),
            resumed_n == n,
            true,
        ));
        checks.push((
            format!("{scenario}: the new publisher's first frame reached every viewer within 100 ms of the first ({resume95:.1} ms p95)"),
            resume95 <= 100.0,
            false,
        ));
    }
    if tls {
        let plain = plain_cpu.unwrap_or(f64::NAN);
        checks.push((
            format!(
                "{scenario}: CPU <= 1.5x {scenario_base} in this sitting ({cpu:.1}% vs {plain:.1}%, {:.2}x)",
                cpu / plain
            ),
            cpu <= 1.5 * plain && kept == n,
            plain.is_finite(),
        ));
    }
    if storm {
        checks.push((format!("{scenario}: {n} at once, first keyframe p95 <= 100 ms ({p95:.1})"), p95 <= 100.0, true));
    }
    if edge {
        checks.push((
            format!("{scenario}: one connection to the origin ({origin_viewers})"),
            origin_viewers == 1,
            true,
        ));
        checks.push((
            format!("{scenario}: request to first keyframe through the edge p95 <= 300 ms ({p95:.1})"),
            p95 <= 300.0,
            true,
        ));
    }
    if kind != "hls" {
        checks.push((format!("{scenario}: aim <= 64 KiB/viewer ({per_viewer_kib:.1})"), per_viewer_kib <= 64.0, false));
    } else {
        checks.push((
            format!("hls: first segment listed <= 4000 ms after publish ({first_seg_ms:.0})"),
            first_seg_ms <= 4000.0,
            true,
        ));
    }
    let row = vec![
        scenario.to_string(),
        format!("1 → {n}"),
        format!("{cpu:.1} %"),
        format!("{rss_mib:.1} / {hwm_mib:.1}"),
        if per_viewer_net_kib.is_finite() {
            format!("{per_viewer_kib:.1} (net {per_viewer_net_kib:.1})")
        } else {
            format!("{per_viewer_kib:.1}")
        },
        format!("{kept}/{n}"),
        format!("{p50:.0} / {p95:.0}"),
        format!("{server_core_busy:.0} / {client_core_busy:.0}"),
    ];
    drop(server);
    Ok(ScenarioResult { name: scenario.into(), json, checks, row })
}

/// `push`: the server's CPU for 10 RTMP viewers of a stream, then (same process, same
/// publish) for 10 push targets of it (livegate instances on the client's core, added
/// through the admin API): a push should cost about what a viewer does.
async fn push_targets(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    const TARGETS: usize = 10;
    const TOKEN: &str = "bench-admin-token-0123456789";
    eprintln!("== push: 1 publisher, {TARGETS} RTMP viewers, then {TARGETS} push targets");
    let config = format!("[admin]\ntoken = \"{TOKEN}\"\n");
    let server = start_server_on(args, bin, "push", args.server_core, Some(&config)).await?;
    let mut targets = Vec::new();
    for i in 0..TARGETS {
        targets.push(start_server_on(args, bin, &format!("push-target{i}"), args.client_core, None).await?);
    }
    let tck = clk_tck();
    let publish_url = format!("rtmp://{}/live/bench", server.rtmp);
    let _ff = KillOnDrop(ffmpeg_publish(args, &args.fixture, &publish_url)?);
    let t0 = Instant::now();
    while !matches!(http_get_once(&server.http, "/api/streams/live/bench").await, Ok((200, _))) {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("stream never went live (ffmpeg?)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let window = |a: &ProcSample, b: &ProcSample| cpu_pct(a, b, tck);
    // phase 1: RTMP viewers
    let viewers_cpu = rtmp_viewers_cpu(args, &server, TARGETS).await;
    // phase 2: push targets
    for t in &targets {
        let url = format!("rtmp://{}/live/{{stream}}", t.rtmp);
        let path = format!("/api/streams/live/bench/pushes?url={}", url.replace('{', "%7B").replace('}', "%7D"));
        let status = admin_post(&server.http, &path, TOKEN).await?;
        if status != 201 {
            bail!("adding push {url}: HTTP {status}");
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(2.0))).await;
    let a = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    let pushes_cpu = window(&a, &b);
    let mut live = 0;
    for t in &targets {
        if let Ok((200, _)) = http_get_once(&t.http, "/api/streams/live/bench").await {
            live += 1;
        }
    }
    let ratio = pushes_cpu / viewers_cpu.max(0.1);
    let json = json!({
        "scenario": "push", "targets": TARGETS, "targets_live": live,
        "viewers_cpu_pct": round1(viewers_cpu), "pushes_cpu_pct": round1(pushes_cpu), "ratio": round1(ratio),
    });
    let checks = vec![
        (format!("push: every target has the stream ({live}/{TARGETS})"), live == TARGETS, true),
        (format!("push: {TARGETS} pushes <= 1.3x the CPU of {TARGETS} RTMP viewers ({ratio:.2}x)"), ratio <= 1.3, true),
    ];
    let row = vec![
        "push".to_string(),
        format!("1 → {TARGETS} targets"),
        format!("{pushes_cpu:.1} % (viewers {viewers_cpu:.1} %)"),
        format!("{:.1} / {:.1}", b.rss_kib as f64 / 1024.0, b.hwm_kib as f64 / 1024.0),
        String::new(),
        format!("{live}/{TARGETS}"),
        String::new(),
        String::new(),
    ];
    Ok(ScenarioResult { name: "push".into(), json, checks, row })
}

/// The CPU (% of a core) a process used between two samples.
fn cpu_pct(a: &ProcSample, b: &ProcSample, tck: f64) -> f64 {
    let (a_at, b_at) = (a.at.unwrap_or_else(Instant::now), b.at.unwrap_or_else(Instant::now));
    100.0 * b.ticks.saturating_sub(a.ticks) as f64 / tck / b_at.duration_since(a_at).as_secs_f64().max(0.001)
}

/// The CPU `server` uses over a steady window with `n` RTMP viewers of `live/bench` (after
/// the warm-up; the viewers are gone a second after).
async fn rtmp_viewers_cpu(args: &Args, server: &Server, n: usize) -> f64 {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let st = Arc::new(ViewerStat::new());
            tokio::spawn(rtmp_viewer(server.rtmp.clone(), "live".into(), "bench".into(), st))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs_f64(args.warmup)).await;
    let a = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    tasks.iter().for_each(|t| t.abort());
    tokio::time::sleep(Duration::from_secs(1)).await;
    cpu_pct(&a, &b, clk_tck())
}

/// An admin POST; the HTTP status.
async fn admin_post(host: &str, path: &str, token: &str) -> Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sock = tokio::net::TcpStream::connect(host).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    sock.write_all(req.as_bytes()).await?;
    let mut resp = Vec::new();
    sock.read_to_end(&mut resp).await?;
    let status = std::str::from_utf8(resp.get(9..12).unwrap_or_default())?.parse()?;
    Ok(status)
}

/// `many`, or `many-record` (`recorded`: the `many` result of this sitting, or Null): every
/// stream recorded too, compared with `many`.
async fn many_publishers(args: &Args, bin: &Path, recorded: Option<serde_json::Value>) -> Result<ScenarioResult> {
    let n = args.publishers;
    let name = if recorded.is_some() { "many-record" } else { "many" };
    eprintln!("== {name}: {n} publishers with HLS on ({})", args.many_fixture.display());
    let rec_dir = std::env::current_dir()?.join("target/bench/recordings");
    let server = match &recorded {
        Some(_) => {
            let _ = std::fs::remove_dir_all(&rec_dir);
            let config = format!("[record]\nenabled = true\ndir = \"{}\"\nmin_free_bytes = 0\n", rec_dir.display());
            start_server_on(args, bin, name, args.server_core, Some(&config)).await?
        }
        None => start_server(args, bin, name).await?,
    };
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
    let (written_a, in_a) = (record::written(server.pid), record::bytes_in(&server.http).await);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    let (written_b, in_b) = (record::written(server.pid), record::bytes_in(&server.http).await);
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
    let mut json = json!({
        "scenario": name, "publishers": n, "fixture": args.many_fixture.display().to_string(), "steady_s": wall_s,
        "server_cpu_pct": round1(cpu), "cpu_per_publisher_pct": round2(cpu / n.max(1) as f64),
        "server_user_pct": round1(100.0 * (b.user_ticks - a.user_ticks) as f64 / tck / wall_s),
        "rss_mib": round1(rss_mib), "peak_rss_mib": round1(hwm_mib), "per_publisher_kib": round1(per_pub_kib),
        "streams_with_hls": with_hls, "errors": errors,
        "server_core_busy_pct": round1(sb), "client_core_busy_pct": round1(cb),
        "other_load_on_server_core_pct": round1(sb - cpu),
    });
    warn_noise(name, sb - cpu);
    let mut checks = vec![
        (format!("{name}: {n} publishers all serving HLS ({with_hls})"), with_hls == n && errors == 0, true),
        (format!("{name}: CPU <= 25% ({cpu:.1}%)"), cpu <= 25.0, true),
        (format!("{name}: RSS <= 500 MiB ({rss_mib:.1})"), rss_mib <= 500.0, true),
    ];
    if let Some(plain) = &recorded {
        let recording = record::files_being_written(&rec_dir);
        let amp = (written_b.saturating_sub(written_a)) as f64 / (in_b.saturating_sub(in_a)).max(1) as f64;
        json["streams_recording"] = json!(recording);
        json["write_amplification"] = round2(amp);
        checks.push((format!("{name}: every stream recorded ({recording})"), recording == n, true));
        checks.push((format!("{name}: bytes written / ingested <= 1.05 ({amp:.3})"), amp <= 1.05, true));
        if let (Some(plain_cpu), Some(plain_kib)) =
            (plain["server_cpu_pct"].as_f64(), plain["per_publisher_kib"].as_f64())
        {
            let ratio = cpu / plain_cpu.max(0.1);
            let more_kib = per_pub_kib - plain_kib;
            json["cpu_vs_many"] = round2(ratio);
            json["rss_more_per_stream_kib"] = round1(more_kib);
            checks.push((format!("{name}: CPU <= 1.2 x many ({ratio:.2} x)"), ratio <= 1.2, true));
            checks.push((
                format!("{name}: RSS <= +2 MiB per recorded stream ({more_kib:.0} KiB)"),
                more_kib <= 2048.0,
                true,
            ));
        }
    }
    let row = vec![
        if recorded.is_some() { "many (HLS on, recorded)".into() } else { "many (HLS on)".into() },
        format!("{n} → 0"),
        format!("{cpu:.1} % ({:.2} %/pub)", cpu / n.max(1) as f64),
        format!("{rss_mib:.1} / {hwm_mib:.1}"),
        format!("{per_pub_kib:.1}/pub"),
        format!("{with_hls}/{n} HLS"),
        "-".into(),
        format!("{sb:.0} / {cb:.0}"),
    ];
    drop(server);
    Ok(ScenarioResult { name: name.into(), json, checks, row })
}

/// `ingest`: the same number of publishers of each fixture (H.264, HEVC, AV1, and a 3-track
/// multitrack H.264 ladder whose top track is the H.264 fixture's encode), HLS on (the
/// default Low-Latency HLS), no viewers. Reports server CPU and CPU per Mbit/s received.
async fn ingest(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    let dir = args.fixture.parent().unwrap_or(Path::new("."));
    let mut cases = Vec::new();
    for codec in &args.ingest_order {
        let fixture = match codec.as_str() {
            "h264" => args.fixture.clone(),
            "hevc" | "av1" | "multi3" => dir.join(format!("fixture-{codec}.flv")),
            other => bail!("--ingest-order: unknown fixture {other} (h264, hevc, av1, multi3)"),
        };
        cases.push((codec.as_str(), fixture));
    }
    let n = args.ingest_publishers;
    let mut rows = serde_json::Map::new();
    let mut measured = Vec::new();
    for (codec, fixture) in &cases {
        if !fixture.exists() {
            bail!("{} missing: run scripts/make-bench-fixture.sh with ffmpeg 9 available", fixture.display());
        }
        eprintln!("== ingest {codec}: {n} publishers of {}", fixture.display());
        let server = start_server(args, bin, &format!("ingest-{codec}")).await?;
        let tags = Arc::new(read_flv(fixture)?);
        let stop = Arc::new(AtomicBool::new(false));
        for i in 0..n {
            let (rtmp, tags, stop) = (server.rtmp.clone(), tags.clone(), stop.clone());
            tokio::spawn(async move {
                if let Err(e) = rtmp_publisher(rtmp, format!("ingest{i}"), tags, stop).await {
                    eprintln!("publisher error: {e:#}");
                }
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(4.0))).await;
        let bytes_in = |text: &str| -> f64 {
            text.lines()
                .find(|l| l.starts_with("livegate_bytes_in_total "))
                .and_then(|l| l.rsplit(' ').next()?.parse().ok())
                .unwrap_or(0.0)
        };
        let m0 = http_get_once(&server.http, "/metrics").await.map(|(_, b)| bytes_in(&String::from_utf8_lossy(&b)))?;
        let a = sample(args, server.pid);
        tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
        let b = sample(args, server.pid);
        let m1 = http_get_once(&server.http, "/metrics").await.map(|(_, b)| bytes_in(&String::from_utf8_lossy(&b)))?;
        let mut variants = 0;
        if let Ok((200, body)) = http_get_once(&server.http, "/live/ingest0.m3u8").await {
            variants = String::from_utf8_lossy(&body).matches("#EXT-X-STREAM-INF:").count();
        }
        stop.store(true, Ordering::Relaxed);
        let wall_s = b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64();
        let cpu = 100.0 * (b.ticks - a.ticks) as f64 / clk_tck() / wall_s;
        let mbps = (m1 - m0) * 8.0 / wall_s / 1e6;
        let per_100 = if mbps > 0.0 { cpu / mbps * 100.0 } else { f64::NAN };
        let (sb, _) = (pct(a.server_core, b.server_core), pct(a.client_core, b.client_core));
        warn_noise(&format!("ingest-{codec}"), sb - cpu);
        rows.insert(
            codec.to_string(),
            json!({"server_cpu_pct": round2(cpu), "mbit_s_in": round1(mbps), "cpu_pct_per_100_mbit_s": round2(per_100),
                   "rss_mib": round1(b.rss_kib as f64 / 1024.0), "hls_variants": variants}),
        );
        measured.push((codec.to_string(), cpu, mbps, per_100, b.rss_kib as f64 / 1024.0, variants));
        drop(server);
    }
    // the checks of the fixtures that ran (--ingest-order may name only some)
    let get = |c: &str| measured.iter().find(|m| m.0 == c).cloned();
    let mut checks = Vec::new();
    if let Some(h264) = get("h264") {
        for (name, c) in [("HEVC", get("hevc")), ("AV1", get("av1"))] {
            if let Some(c) = c {
                checks.push((
                    format!("ingest: {name} CPU per byte <= H.264's ({:.2} vs {:.2} %/100 Mbit/s)", c.3, h264.3),
                    c.3 <= h264.3 * 1.05,
                    false,
                ));
            }
        }
        if let Some(multi) = get("multi3") {
            checks.push((
                format!("ingest: 3-track publish <= 3.5x the top rendition ({:.2}x)", multi.1 / h264.1),
                multi.1 <= 3.5 * h264.1,
                false,
            ));
        }
    }
    if let Some(multi) = get("multi3") {
        checks.push((format!("ingest: the 3-track publish is a 3-variant ladder ({})", multi.5), multi.5 == 3, true));
    }
    let row = vec![
        format!("ingest ({n} pubs/codec)"),
        format!("{n} → 0"),
        measured.iter().map(|m| format!("{} {:.1} %", m.0, m.1)).collect::<Vec<_>>().join(", "),
        measured.iter().map(|m| format!("{:.0}", m.4)).collect::<Vec<_>>().join("/"),
        measured.iter().map(|m| format!("{:.2}", m.3)).collect::<Vec<_>>().join("/") + " %/100Mb",
        "-".into(),
        "-".into(),
        "-".into(),
    ];
    let json = json!({"scenario": "ingest", "publishers_per_codec": n, "steady_s": args.steady, "codecs": rows});
    Ok(ScenarioResult { name: "ingest".into(), json, checks, row })
}
