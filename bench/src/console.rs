//! `consoles` (issue 25): what open consoles cost the server. 200 publishers of the
//! light fixture (HLS on) run throughout; the server's CPU is measured over a steady
//! window with no console open, then over one with `--consoles` consoles open, each doing
//! what the page does: `/api/streams` and `/api/stats` once, an `/api/events` connection
//! read to the end, and the keyframes of the cards on a desktop screen (12) every 5 s.
//! The difference, per console, is what one costs. Also timed, as the page's first paint
//! and thumbnails stand for: the two JSON documents with 200 streams, and all 200
//! keyframes fetched six at a time (a browser's connections per host).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clients::{http_get_once, read_flv, rtmp_publisher};
use crate::report::{round1, round2, warn_noise, ScenarioResult};
use crate::{clk_tck, pct, sample, start_server, Args};

/// Live streams in the scenario (the target).
const STREAMS: usize = 200;
/// Cards a desktop screen shows at once: the keyframes a console fetches every 5 s.
const VISIBLE: usize = 12;
const THUMB_EVERY: Duration = Duration::from_secs(5);

/// One console: the page's requests until `stop`; counts the SSE bytes it read.
async fn console(http: String, i: usize, stop: Arc<AtomicBool>, sse_bytes: Arc<AtomicU64>) -> Result<()> {
    http_get_once(&http, "/api/streams").await?;
    http_get_once(&http, "/api/stats").await?;
    let mut sse = tokio::net::TcpStream::connect(&http).await?;
    sse.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {http}\r\n\r\n").as_bytes()).await?;
    let reader = {
        let (stop, sse_bytes) = (stop.clone(), sse_bytes.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(500), sse.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => {
                        sse_bytes.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(_) => {}
                }
            }
        })
    };
    // the cards on screen: a window of the list, each console its own
    let first = (i * VISIBLE) % STREAMS;
    while !stop.load(Ordering::Relaxed) {
        for k in 0..VISIBLE {
            let path = format!("/api/streams/live/bench{}/keyframe", (first + k) % STREAMS);
            http_get_once(&http, &path).await?;
        }
        tokio::time::sleep(THUMB_EVERY).await;
    }
    let _ = reader.await;
    Ok(())
}

/// `consoles`.
pub(crate) async fn consoles(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    let n = args.consoles;
    eprintln!("== consoles: {STREAMS} publishers with HLS on, then {n} consoles open");
    let server = start_server(args, bin, "consoles").await?;
    let tck = clk_tck();
    let tags = Arc::new(read_flv(&args.many_fixture)?);
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let gap = Duration::from_millis(4000 / STREAMS as u64);
    for i in 0..STREAMS {
        let (rtmp, tags, stop, errors) = (server.rtmp.clone(), tags.clone(), stop.clone(), errors.clone());
        tokio::spawn(async move {
            if rtmp_publisher(rtmp, format!("bench{i}"), tags, stop).await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        });
        tokio::time::sleep(gap).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(5.0))).await;
    // the page's first requests, timed
    let t = Instant::now();
    let (s1, streams) = http_get_once(&server.http, "/api/streams").await?;
    let (s2, _) = http_get_once(&server.http, "/api/stats").await?;
    let paint_ms = t.elapsed().as_secs_f64() * 1000.0;
    let listed = serde_json::from_slice::<serde_json::Value>(&streams)
        .ok()
        .and_then(|v| v["streams"].as_array().map(Vec::len))
        .unwrap_or(0);
    let t = Instant::now();
    let served = Arc::new(AtomicU64::new(0));
    let mut fetchers = Vec::new();
    for w in 0..6 {
        let (http, served) = (server.http.clone(), served.clone());
        fetchers.push(tokio::spawn(async move {
            for i in (w..STREAMS).step_by(6) {
                if let Ok((200, body)) = http_get_once(&http, &format!("/api/streams/live/bench{i}/keyframe")).await {
                    if !body.is_empty() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for f in fetchers {
        let _ = f.await;
    }
    let thumbs_ms = t.elapsed().as_secs_f64() * 1000.0;
    let thumbs = served.load(Ordering::Relaxed) as usize;
    // no console open
    let a = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, server.pid);
    let idle_cpu = 100.0 * (b.ticks - a.ticks) as f64 / tck / b.at.unwrap().duration_since(a.at.unwrap()).as_secs_f64();
    // n consoles open
    let open = Arc::new(AtomicBool::new(false));
    let sse_bytes = Arc::new(AtomicU64::new(0));
    let console_errors = Arc::new(AtomicU64::new(0));
    for i in 0..n {
        let (http, open, sse_bytes, errs) =
            (server.http.clone(), open.clone(), sse_bytes.clone(), console_errors.clone());
        tokio::spawn(async move {
            if console(http, i, open, sse_bytes).await.is_err() {
                errs.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let c = sample(args, server.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let d = sample(args, server.pid);
    let wall_s = d.at.unwrap().duration_since(c.at.unwrap()).as_secs_f64();
    let open_cpu = 100.0 * (d.ticks - c.ticks) as f64 / tck / wall_s;
    open.store(true, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let per_console = (open_cpu - idle_cpu) / n.max(1) as f64;
    let (sb, cb) = (pct(c.server_core, d.server_core), pct(c.client_core, d.client_core));
    warn_noise("consoles", sb - open_cpu);
    let errors = errors.load(Ordering::Relaxed) + console_errors.load(Ordering::Relaxed);
    let sse_kib = sse_bytes.load(Ordering::Relaxed) as f64 / 1024.0;
    let json = json!({
        "scenario": "consoles", "streams": STREAMS, "consoles": n, "steady_s": wall_s,
        "server_cpu_no_console_pct": round1(idle_cpu), "server_cpu_with_consoles_pct": round1(open_cpu),
        "cpu_per_console_pct": round2(per_console),
        "first_documents_ms": round1(paint_ms), "streams_listed": listed,
        "all_keyframes_ms": round1(thumbs_ms), "keyframes_served": thumbs,
        "sse_kib_read": round1(sse_kib), "rss_mib": round1(d.rss_kib as f64 / 1024.0),
        "errors": errors, "server_core_busy_pct": round1(sb), "client_core_busy_pct": round1(cb),
    });
    let checks = vec![
        (
            format!("consoles: {STREAMS} streams listed ({listed}), answers 200 ({s1}, {s2})"),
            listed == STREAMS && s1 == 200 && s2 == 200,
            true,
        ),
        (format!("consoles: first documents <= 1 s ({paint_ms:.0} ms)"), paint_ms <= 1000.0, true),
        (
            format!("consoles: all {STREAMS} keyframes <= 3 s ({thumbs_ms:.0} ms, {thumbs} served)"),
            thumbs_ms <= 3000.0 && thumbs == STREAMS,
            true,
        ),
        (format!("consoles: <= 1 % of a core per open console ({per_console:.2} %)"), per_console <= 1.0, true),
        (format!("consoles: no errors ({errors})"), errors == 0, true),
    ];
    let row = vec![
        format!("consoles ({STREAMS} streams)"),
        format!("{n} consoles"),
        format!("{idle_cpu:.1} → {open_cpu:.1} % ({per_console:.2} %/console)"),
        format!("{:.1}", d.rss_kib as f64 / 1024.0),
        "-".into(),
        format!("{thumbs}/{STREAMS} kf {thumbs_ms:.0} ms"),
        "-".into(),
        format!("{sb:.0} / {cb:.0}"),
    ];
    drop(server);
    Ok(ScenarioResult { name: "consoles".into(), json, checks, row })
}
