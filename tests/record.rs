//! Recording: an ffmpeg publish to an app with `[record] enabled` becomes a regular MP4
//! (a full `moov` at the end, no fragment left) that ffprobe reads with the right duration
//! and ffmpeg seeks in; `kill -9` mid-recording leaves a `.mp4.part` that the next start
//! repairs and finalizes, playable up to the crash.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Files under `dir` whose name ends with `suffix`.
fn files(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().ends_with(suffix) {
                out.push(p);
            }
        }
    }
    out
}

/// The top-level box types of an MP4 file.
fn top_boxes(path: &Path) -> Vec<String> {
    let data = std::fs::read(path).unwrap();
    let mut pos = 0usize;
    let mut out = Vec::new();
    while pos + 8 <= data.len() {
        let mut size = u32::from_be_bytes(data[pos..pos + 4].try_into().unwrap()) as u64;
        if size == 1 {
            size = u64::from_be_bytes(data[pos + 8..pos + 16].try_into().unwrap());
        }
        out.push(String::from_utf8_lossy(&data[pos + 4..pos + 8]).to_string());
        if size < 8 {
            break;
        }
        pos += size as usize;
    }
    out
}

/// (format duration s, stream codecs, video packets) by ffprobe.
fn probe(path: &Path) -> (f64, String, usize) {
    let v = ffprobe(path.to_str().unwrap(), &["-show_format", "-show_streams", "-count_packets"]);
    let duration = v["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let streams = v["streams"].as_array().cloned().unwrap_or_default();
    let codecs: Vec<String> = streams.iter().filter_map(|s| s["codec_name"].as_str().map(String::from)).collect();
    let video_packets = streams
        .iter()
        .find(|s| s["codec_type"] == "video")
        .and_then(|s| s["nb_read_packets"].as_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (duration, codecs.join(","), video_packets)
}

/// ffmpeg seeks to `at` seconds and decodes one video frame.
fn seeks(path: &Path, at: f64) -> bool {
    Command::new(require_tool("ffmpeg"))
        .args(["-v", "error", "-ss", &at.to_string(), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "null", "-"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn a_recording_is_a_regular_mp4_that_plays_and_seeks() {
    let dir = scratch_dir("record-basic");
    let gw = Gateway::in_process(&format!(
        "[hub]\nreconnect_grace_ms = 300\n[record]\nenabled = true\ndir = \"{}\"\n",
        dir.display()
    ));
    let enc = publish(&gw.rtmp_url("live/rec"), Source::default(), Some(6));
    assert!(wait_live(&gw, "live/rec", Duration::from_secs(15)));
    assert!(enc.wait(Duration::from_secs(30)).is_some(), "the publisher did not finish");
    assert!(wait_until(Duration::from_secs(15), || files(&dir, ".mp4").len() == 1), "no finalized file in {dir:?}");
    assert!(files(&dir, ".part").is_empty());
    let file = files(&dir, ".mp4").remove(0);
    assert!(file.starts_with(dir.join("live").join("rec")), "{file:?}");
    let boxes = top_boxes(&file);
    assert_eq!(boxes.first().map(String::as_str), Some("ftyp"), "{boxes:?}");
    assert_eq!(boxes.last().map(String::as_str), Some("moov"), "{boxes:?}");
    assert!(!boxes.iter().any(|b| b == "moof"), "a fragment header is left: {boxes:?}");
    assert_eq!(boxes.iter().filter(|b| *b == "moov").count(), 1, "{boxes:?}");
    let (duration, codecs, video) = probe(&file);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs}");
    assert!((5.0..=6.6).contains(&duration), "duration {duration:.2} s of a 6 s publish");
    assert!(video >= 140, "{video} video packets");
    assert!(seeks(&file, 3.5), "ffmpeg cannot seek in {file:?}");
}

#[test]
fn a_recording_cut_by_kill_9_is_repaired_on_the_next_start() {
    let dir = scratch_dir("record-kill");
    let cfg = dir.join("livegate.toml");
    std::fs::write(&cfg, format!("[record]\nenabled = true\ndir = \"{}\"\n", dir.join("rec").display())).unwrap();
    let mut gw = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    let _enc = publish(&gw.rtmp_url("live/crash"), Source::default(), None);
    assert!(wait_live(&gw, "live/crash", Duration::from_secs(15)));
    std::thread::sleep(Duration::from_secs(5));
    let parts = files(&dir, ".mp4.part");
    assert_eq!(parts.len(), 1, "{parts:?}");
    let _ = Command::new("kill").args(["-9", &gw.pid().to_string()]).status();
    assert!(wait_until(Duration::from_secs(5), || !gw.is_running()));
    // what the crash left is not a playable file yet; the next start repairs it
    let gw2 = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    assert!(wait_until(Duration::from_secs(15), || files(&dir, ".mp4").len() == 1), "{}", gw2.log());
    assert!(files(&dir, ".mp4.part").is_empty());
    let file = files(&dir, ".mp4").remove(0);
    let (duration, codecs, _) = probe(&file);
    assert!(codecs.contains("h264") && codecs.contains("aac"), "{codecs}");
    assert!(duration >= 3.0, "{duration:.2} s kept of ~5 s recorded before the crash");
    assert!(seeks(&file, 2.0));
    assert!(gw2.log().contains("recording recovered"), "{}", gw2.log());
}
