//! The browser harness: tests/browser/play.mjs (playwright-core driving Debian's Chromium)
//! plays a URL with hls.js or mpegts.js and reports what the player measured. Shared by
//! tests/browser.rs and tests/edge.rs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use super::*;

pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn artifacts() -> PathBuf {
    let dir = root().join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs tests/browser/play.mjs with `opts`; `on_event` sees every `EVENT` line and may
/// write marks to the script's stdin. Returns the `RESULT` object.
pub fn run_player(opts: Value, on_event: impl FnMut(&Value, &mut ChildStdin)) -> Value {
    let mut r = run_script("play.mjs", &opts, on_event);
    let summary = summary(&r);
    println!("{}: {summary}", opts["mode"]);
    r["summary"] = summary;
    r
}

/// Runs the script tests/browser/`script` with `opts` (playwright-core driving Debian's
/// Chromium); `on_event` sees every `EVENT` line and may write marks to the script's
/// stdin. Returns the `RESULT` object, which must say `ok`.
pub fn run_script(script: &str, opts: &Value, mut on_event: impl FnMut(&Value, &mut ChildStdin)) -> Value {
    require_tool("node");
    let chromium = require_tool("chromium");
    let dir = root().join("tests/browser");
    assert!(
        dir.join("node_modules/playwright-core").is_dir(),
        "tests/browser/node_modules is missing: run `npm ci` in tests/browser (scripts/test.sh does)"
    );
    let mut child = Command::new("node")
        .arg(script)
        .arg(opts.to_string())
        .current_dir(&dir)
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut result = None;
    for line in stdout.lines().map_while(Result::ok) {
        if let Some(ev) = line.strip_prefix("EVENT ") {
            on_event(&serde_json::from_str(ev).expect("event json"), &mut stdin);
        } else if let Some(r) = line.strip_prefix("RESULT ") {
            result = Some(serde_json::from_str::<Value>(r).expect("result json"));
        } else {
            println!("[{script}] {line}");
        }
    }
    let _ = child.wait();
    let r = result.unwrap_or_else(|| panic!("{script} printed no RESULT line"));
    assert!(r["ok"].as_bool().unwrap_or(false), "browser run failed: {} (page errors: {})", r["failure"], r["errors"]);
    r
}

/// The measurements worth watching across runs.
pub fn summary(r: &Value) -> Value {
    json!({
        "first_frame_ms": r["firstFrameMs"].as_f64().map(|x| x.round()),
        "latency_s": r["latencyAvg"].as_f64().map(|x| (x * 100.0).round() / 100.0),
        "pdt_latency_s": r["pdtLatencyAvg"].as_f64().map(|x| (x * 100.0).round() / 100.0),
        "media_advance_s": r["mediaAdvance"],
        "wall_s": r["wallSeconds"],
        "frames_decoded": r["framesDecoded"],
        "dropped_frames": r["droppedFrames"],
        "audio_bytes": r["audioBytesGrowth"],
        "size": format!("{}x{}", r["width"], r["height"]),
    })
}

pub fn fatal_errors(r: &Value) -> Vec<Value> {
    r["errors"].as_array().unwrap().iter().filter(|e| e["fatal"].as_bool() == Some(true)).cloned().collect()
}

/// What every playback must show over `seconds` of watching.
pub fn assert_played(r: &Value, seconds: f64) {
    let fatal = fatal_errors(r);
    assert!(fatal.is_empty(), "fatal player errors: {fatal:?}");
    let advance = r["mediaAdvance"].as_f64().unwrap();
    assert!(advance >= 0.6 * seconds, "media time advanced {advance:.2} s in {seconds} s");
    assert_eq!((r["width"].as_u64(), r["height"].as_u64()), (Some(640), Some(360)), "video size");
    let frames = r["framesDecoded"].as_u64().unwrap();
    assert!(frames as f64 >= 30.0 * seconds * 0.5, "only {frames} frames decoded in {seconds} s");
    let audio = r["audioBytesGrowth"].as_u64().unwrap();
    assert!(audio > 0, "no audio decoded");
    assert_eq!(r["ended"].as_bool(), Some(false), "the player reached the end");
}

/// Waits until the playlist lists `n` segments, so hls.js starts at its usual live distance.
pub fn wait_playlist(gw: &Gateway, key: &str, n: usize) {
    let ok = wait_until(Duration::from_secs(30), || {
        let r = http_get(gw.http, &format!("/{key}.m3u8"));
        r.status == 200 && r.text().matches("#EXTINF").count() >= n
    });
    assert!(ok, "playlist of {key} never listed {n} segments");
}

pub fn vendor() -> String {
    root().join("assets/vendor").to_string_lossy().into_owned()
}
