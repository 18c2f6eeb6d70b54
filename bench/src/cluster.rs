//! `cluster` (issue 27): what an origin pays for the edges of a cluster. A `redis-server`
//! of the scenario's own, an origin on the server core and two edges (on the client core,
//! with the load) that find the origin's stream through the directory. The origin's CPU is
//! measured over a steady window with two RTMP viewers of its own, then over one with
//! `--viewers` HTTP-FLV viewers on each edge (and no viewer on the origin): the target is
//! that the second costs about what the first does, because each edge pulls the stream once.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::clients::{flv_viewer, http_get_once, ViewerStat};
use crate::report::{round1, ScenarioResult};
use crate::{clk_tck, cpu_pct, ffmpeg_publish, free_port, rtmp_viewers_cpu, sample, start_server_on, Args, KillOnDrop};

/// A viewer count of a stream on a server, by output (`rtmp`, `http_flv`, ...).
async fn viewers(http: &str, output: &str) -> u64 {
    match http_get_once(http, "/api/streams/live/bench").await {
        Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["viewers"][output].as_u64())
            .unwrap_or(0),
        _ => 0,
    }
}

pub(crate) async fn cluster(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    let per_edge = args.viewers;
    eprintln!("== cluster: an origin, 2 edges through Redis; 2 RTMP viewers on the origin, then {per_edge} HTTP-FLV viewers on each edge");
    let port = free_port()?;
    let redis = Command::new("taskset")
        .arg("-c")
        .arg(args.client_core.to_string())
        .args(["redis-server", "--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server (apt install redis-server)")?;
    let _redis = KillOnDrop(redis);
    let t0 = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let config = |node: &str| format!("[cluster]\nredis = \"redis://127.0.0.1:{port}/0\"\nnode = \"{node}\"\n");
    let origin = start_server_on(args, bin, "cluster-origin", args.server_core, Some(&config("origin"))).await?;
    let edges = [
        start_server_on(args, bin, "cluster-edge1", args.client_core, Some(&config("edge-1"))).await?,
        start_server_on(args, bin, "cluster-edge2", args.client_core, Some(&config("edge-2"))).await?,
    ];
    let _ff = KillOnDrop(ffmpeg_publish(args, &args.fixture, &format!("rtmp://{}/live/bench", origin.rtmp))?);
    let t0 = Instant::now();
    while !matches!(http_get_once(&origin.http, "/api/streams/live/bench").await, Ok((200, _))) {
        if t0.elapsed() > Duration::from_secs(15) {
            bail!("stream never went live (ffmpeg?)");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    // phase 1: two RTMP viewers on the origin
    let rtmp_cpu = rtmp_viewers_cpu(args, &origin, 2).await;

    // phase 2: the viewers on the edges (each edge's first viewer starts its pull)
    let mut tasks = Vec::new();
    let mut stats = Vec::new();
    let gap = Duration::from_micros(args.ramp_ms * 1000 / (2 * per_edge as u64).max(1));
    for i in 0..per_edge {
        for e in &edges {
            let st = Arc::new(ViewerStat::new());
            tasks.push(tokio::spawn(flv_viewer(e.http.clone(), "/live/bench.flv".into(), st.clone(), None)));
            stats.push(st);
        }
        if i % 50 == 49 {
            tokio::time::sleep(gap * 100).await;
        }
    }
    tokio::time::sleep(Duration::from_secs_f64(args.warmup.max(3.0))).await;
    let a = sample(args, origin.pid);
    tokio::time::sleep(Duration::from_secs_f64(args.steady)).await;
    let b = sample(args, origin.pid);
    let edges_cpu = cpu_pct(&a, &b, clk_tck());
    let origin_pulls = viewers(&origin.http, "rtmp").await;
    let mut edge_viewers = 0;
    for e in &edges {
        edge_viewers += viewers(&e.http, "http_flv").await;
    }
    let playing = stats.iter().filter(|s| s.first_key_us.load(std::sync::atomic::Ordering::Relaxed) > 0).count();
    tasks.iter().for_each(|t| t.abort());
    let ratio = edges_cpu / rtmp_cpu.max(0.1);
    let json = json!({
        "scenario": "cluster", "viewers_per_edge": per_edge, "edge_viewers": edge_viewers, "playing": playing,
        "origin_pulls": origin_pulls, "origin_cpu_2_rtmp_pct": round1(rtmp_cpu),
        "origin_cpu_2_edges_pct": round1(edges_cpu), "ratio": round1(ratio),
    });
    let checks = vec![
        (format!("cluster: the origin sees one pull per edge ({origin_pulls})"), origin_pulls == 2, true),
        (format!("cluster: every edge viewer plays ({playing}/{})", 2 * per_edge), playing == 2 * per_edge, true),
        (
            format!("cluster: origin CPU for 2 edges x {per_edge} viewers ~ 2 RTMP viewers ({ratio:.2}x)"),
            ratio <= 1.5,
            true,
        ),
    ];
    let row = vec![
        "cluster".to_string(),
        format!("2 edges × {per_edge}"),
        format!("{edges_cpu:.1} % (2 RTMP {rtmp_cpu:.1} %)"),
        format!("{:.1} / {:.1}", b.rss_kib as f64 / 1024.0, b.hwm_kib as f64 / 1024.0),
        String::new(),
        format!("{playing}/{}", 2 * per_edge),
        String::new(),
        String::new(),
    ];
    Ok(ScenarioResult { name: "cluster".into(), json, checks, row })
}
