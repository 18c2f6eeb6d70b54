//! Recording (issue 24): `many-record` (in `main.rs`: the `many` publishers with every
//! stream recorded, compared with a `many` run of the same sitting; what it measures with
//! comes from here) and `record-2h`: two hours of the fixture published at 100x real
//! time, recorded into one file; how long closing (the last fragment and the
//! finalizing into a regular MP4) takes once the publisher is gone, and ffprobe's duration
//! of the result against that of what ffmpeg sent (kept as FLV beside the publish).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::clients::http_get_once;
use crate::report::{round1, round2, ScenarioResult};
use crate::{start_server_on, Args};

/// Bytes the process has had written to storage (`/proc/PID/io` `write_bytes`).
pub(crate) fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes:").and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0)
}

/// Bytes received from every publisher so far (the sum of `/api/streams`' `bytes_in`).
pub(crate) async fn bytes_in(http: &str) -> u64 {
    let Ok((200, body)) = http_get_once(http, "/api/streams").await else { return 0 };
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let streams = v["streams"].as_array().or_else(|| v.as_array()).cloned().unwrap_or_default();
    streams.iter().filter_map(|s| s["bytes_in"].as_u64()).sum()
}

/// `.mp4.part` files under `dir` (recordings being written).
pub(crate) fn files_being_written(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(".mp4.part") {
                n += 1;
            }
        }
    }
    n
}

/// `record-2h`.
pub(crate) async fn two_hours(args: &Args, bin: &Path) -> Result<ScenarioResult> {
    const SECONDS: u32 = 7200;
    let dir = std::env::current_dir()?.join("target/bench/recordings-2h");
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("== record-2h: {SECONDS} s of {} published at 100x, recorded", args.fixture.display());
    let config = format!(
        "[hub]\nreconnect_grace_ms = 0\n[hls]\nenabled = false\n[record]\nenabled = true\ndir = \"{}\"\n\
         max_duration_s = 10800\nmin_free_bytes = 0\n",
        dir.display()
    );
    let server = start_server_on(args, bin, "record-2h", args.server_core, Some(&config)).await?;
    let sent = std::env::current_dir()?.join("target/bench/record-2h-sent.flv");
    let t0 = Instant::now();
    let st = Command::new("taskset")
        .arg("-c")
        .arg(args.client_core.to_string())
        .args(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-stream_loop", "-1"])
        // 100x real time: the recorder keeps up (published faster, it falls behind the
        // stream and skips to later keyframes, as it does behind a slow disk)
        .args(["-readrate", "100", "-i"])
        .arg(&args.fixture)
        .args(["-t", &SECONDS.to_string(), "-c", "copy", "-map", "0", "-f", "tee"])
        // what was sent, kept as FLV: the duration the recording must match
        .arg(format!("[f=flv]rtmp://{}/live/long|[f=flv]{}", server.rtmp, sent.display()))
        .stdout(Stdio::null())
        .status()
        .context("ffmpeg")?;
    if !st.success() {
        bail!("ffmpeg failed publishing");
    }
    let published = Instant::now();
    let publish_s = published.duration_since(t0).as_secs_f64();
    // closed when the listing says complete
    let (file, gaps) = loop {
        if let Ok((200, body)) = http_get_once(&server.http, "/api/recordings/live/long").await {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let item = &v["recordings"][0];
            if item["complete"] == true {
                let gaps = item["gaps"].as_array().map_or(0, Vec::len);
                break (item["file"].as_str().unwrap_or_default().to_string(), gaps);
            }
        }
        if published.elapsed() > Duration::from_secs(120) {
            bail!("the recording was not finalized within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let close_s = published.elapsed().as_secs_f64();
    let path = dir.join("live").join("long").join(&file);
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let probe = |p: &Path| -> Result<serde_json::Value> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration:stream=codec_type,avg_frame_rate", "-of", "json"])
            .arg(p)
            .output()
            .context("ffprobe")?;
        Ok(serde_json::from_slice(&out.stdout).unwrap_or_default())
    };
    let duration_of = |v: &serde_json::Value| v["format"]["duration"].as_str().and_then(|d| d.parse::<f64>().ok());
    let sent_s = duration_of(&probe(&sent)?).unwrap_or(0.0);
    let probe = probe(&path)?;
    let duration = duration_of(&probe).unwrap_or(0.0);
    let fps = probe["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["codec_type"] == "video"))
        .and_then(|s| s["avg_frame_rate"].as_str())
        .and_then(|r| r.split_once('/'))
        .and_then(|(a, b)| Some(a.parse::<f64>().ok()? / b.parse::<f64>().ok()?.max(1.0)))
        .unwrap_or(30.0);
    let off = (duration - sent_s).abs();
    let frame = 1.0 / fps.max(1.0);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&sent);
    let json = json!({
        "scenario": "record-2h", "seconds": SECONDS, "publish_s": round1(publish_s), "close_s": round2(close_s),
        "file_bytes": size, "ffprobe_duration_s": round2(duration), "sent_duration_s": round2(sent_s), "fps": round1(fps), "gaps": gaps,
    });
    let checks = vec![
        (format!("record-2h: recorded without a gap ({gaps})"), gaps == 0, true),
        (format!("record-2h: finalized within 2 s of the publisher leaving ({close_s:.2} s)"), close_s <= 2.0, true),
        (
            format!("record-2h: ffprobe duration within one frame of what was sent ({duration:.3} s, {sent_s:.3} s)"),
            off <= frame,
            true,
        ),
    ];
    let row = vec![
        "record-2h".into(),
        "1 → 0".into(),
        format!("closed in {close_s:.2} s"),
        "-".into(),
        format!("{:.0} MiB file", size as f64 / 1048576.0),
        format!("{duration:.3} s"),
        "-".into(),
        "-".into(),
    ];
    Ok(ScenarioResult { name: "record-2h".into(), json, checks, row })
}
