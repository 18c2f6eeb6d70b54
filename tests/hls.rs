//! HLS end to end: the real binary, ffmpeg publishing, playlists and segments
//! fetched over HTTP and judged by ffprobe / ffmpeg.

mod common;

use std::time::{Duration, Instant};

use common::*;
use m3u8_rs::{MediaPlaylist, Playlist};

fn parse_playlist(body: &[u8]) -> MediaPlaylist {
    match m3u8_rs::parse_playlist_res(body) {
        Ok(Playlist::MediaPlaylist(p)) => p,
        other => panic!("not a media playlist: {other:?}\n{}", String::from_utf8_lossy(body)),
    }
}

/// Waits until the playlist lists at least `n` segments; returns it.
fn wait_segments(gw: &Gateway, key: &str, n: usize, timeout: Duration) -> MediaPlaylist {
    let start = Instant::now();
    loop {
        let r = http_get(gw.http, &format!("/{key}.m3u8"));
        if r.status == 200 {
            let p = parse_playlist(&r.body);
            if p.segments.len() >= n {
                return p;
            }
        }
        assert!(start.elapsed() < timeout, "playlist of {key} never reached {n} segments");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn segment_probe(gw: &Gateway, app: &str, uri: &str, dir: &std::path::Path) -> serde_json::Value {
    let r = http_get(gw.http, &format!("/{app}/{uri}"));
    assert_eq!(r.status, 200, "segment {uri}");
    assert_eq!(r.header("content-type"), Some("video/mp2t"));
    assert_eq!(r.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert_eq!(r.body.len() % 188, 0, "whole TS packets");
    let path = dir.join(uri);
    std::fs::write(&path, &r.body).unwrap();
    ffprobe(path.to_str().unwrap(), &["-show_streams", "-show_packets"])
}

fn kinds(probe: &serde_json::Value) -> Vec<String> {
    let mut k: Vec<String> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["codec_type"].as_str().unwrap_or("").to_string())
        .collect();
    k.sort();
    k
}

#[test]
fn live_playlist_and_segments_follow_the_rules() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let started = Instant::now();
    let _pub = publish(&gw.rtmp_url("live/hls"), Source::default(), None);
    let first = wait_segments(&gw, "live/hls", 1, Duration::from_secs(20));
    println!("publish start to first playlist entry: {:.2} s", started.elapsed().as_secs_f64());
    assert!(!first.segments.is_empty());

    let pl = wait_segments(&gw, "live/hls", 4, Duration::from_secs(30));
    let r = http_get(gw.http, "/live/hls.m3u8");
    assert_eq!(r.header("content-type"), Some("application/vnd.apple.mpegurl"));
    assert_eq!(r.header("cache-control"), Some("max-age=1"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let text = r.text();
    assert!(text.contains("#EXT-X-VERSION:3"), "{text}");
    assert!(text.contains("#EXT-X-INDEPENDENT-SEGMENTS"), "{text}");
    assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:"), "{text}");
    assert_eq!(pl.target_duration, 2);
    assert!(!pl.end_list);
    let pdt = text.matches("#EXT-X-PROGRAM-DATE-TIME:").count();
    assert!(pdt >= pl.segments.len(), "PROGRAM-DATE-TIME on every segment:\n{text}");
    let durations: Vec<f32> = pl.segments.iter().map(|s| s.duration).collect();
    println!("segment durations: {durations:?}");
    for d in &durations {
        assert!(d.round() as u64 <= pl.target_duration, "segment of {d}s exceeds the target");
        assert!(*d >= 0.9, "segment of {d}s is too short for 1 s GOPs");
    }

    let dir = scratch_dir("hls-rules");
    let mut last_end: Option<f64> = None;
    for seg in &pl.segments {
        let probe = segment_probe(&gw, "live", &seg.uri, &dir);
        assert_eq!(kinds(&probe), vec!["audio", "video"], "{}", seg.uri);
        let video: Vec<&serde_json::Value> =
            probe["packets"].as_array().unwrap().iter().filter(|p| p["codec_type"] == "video").collect();
        assert!(video[0]["flags"].as_str().unwrap().starts_with('K'), "{} starts with a keyframe", seg.uri);
        let dts: Vec<f64> = video.iter().filter_map(|p| p["dts_time"].as_str()?.parse().ok()).collect();
        assert!(dts.windows(2).all(|w| w[0] < w[1]), "DTS increase within {}", seg.uri);
        // timestamps run on across segments
        if let Some(prev) = last_end {
            assert!((dts[0] - prev).abs() < 0.1, "gap between segments: {prev} -> {}", dts[0]);
        }
        last_end = dts.last().map(|d| d + 1.0 / 30.0);
    }

    // a player records 10 s without errors
    let out = dir.join("rec.ts");
    let r = record(&gw.http_url("/live/hls.m3u8"), 10, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
    let probe = ffprobe(out.to_str().unwrap(), &["-show_format"]);
    let dur: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(dur >= 9.5, "recorded {dur}s");

    // HEAD, unknown names, traversal
    let head = http_request(gw.http, "HEAD", "/live/hls.m3u8", 0, Duration::from_secs(5));
    assert_eq!((head.status, head.body.len()), (200, 0));
    assert_eq!(http_get(gw.http, "/live/nope.m3u8").status, 404);
    assert_eq!(http_get(gw.http, "/live/hls-0-0.ts").status, 404);
    assert_eq!(http_get(gw.http, "/live/..%2fhls.m3u8").status, 400);
}

#[test]
fn audio_only_and_video_only_streams_declare_only_their_tracks() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let dir = scratch_dir("hls-tracks");
    let _a = publish(&gw.rtmp_url("live/audio"), Source { video: false, ..Source::default() }, None);
    let _v = publish(&gw.rtmp_url("live/video"), Source { audio: false, ..Source::default() }, None);
    let pa = wait_segments(&gw, "live/audio", 2, Duration::from_secs(30));
    let pv = wait_segments(&gw, "live/video", 2, Duration::from_secs(30));
    let probe = segment_probe(&gw, "live", &pa.segments[1].uri, &dir);
    assert_eq!(kinds(&probe), vec!["audio"]);
    let probe = segment_probe(&gw, "live", &pv.segments[1].uri, &dir);
    assert_eq!(kinds(&probe), vec!["video"]);
    for (key, secs) in [("live/audio", 6), ("live/video", 6)] {
        let out = dir.join(format!("{}.ts", key.replace('/', "-")));
        let r = record(&gw.http_url(&format!("/{key}.m3u8")), secs, &out);
        assert!(r.status.success(), "{key}: {}", String::from_utf8_lossy(&r.stderr));
    }
}

#[test]
fn republish_continues_the_sequence_with_a_discontinuity() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let first = publish(&gw.rtmp_url("live/re"), Source::default(), Some(5));
    assert!(first.wait(Duration::from_secs(20)).is_some());
    // EXT-X-ENDLIST comes `endlist_delay_ms` (10 s by default) after the publisher left
    let ended = wait_until(Duration::from_secs(20), || {
        let r = http_get(gw.http, "/live/re.m3u8");
        r.status == 200 && parse_playlist(&r.body).end_list
    });
    assert!(ended, "no EXT-X-ENDLIST after the publisher left");
    let before = parse_playlist(&http_get(gw.http, "/live/re.m3u8").body);
    let last_before = before.media_sequence + before.segments.len() as u64 - 1;

    let _second = publish(&gw.rtmp_url("live/re"), Source::default(), None);
    let after = wait_until(Duration::from_secs(20), || {
        let p = parse_playlist(&http_get(gw.http, "/live/re.m3u8").body);
        !p.end_list && p.segments.iter().any(|s| s.discontinuity)
    });
    assert!(after, "republish did not add a discontinuity");
    let p = parse_playlist(&http_get(gw.http, "/live/re.m3u8").body);
    assert!(p.media_sequence >= before.media_sequence, "media sequence went backwards");
    let idx = p.segments.iter().position(|s| s.discontinuity).unwrap();
    let seq_of_disc = p.media_sequence + idx as u64;
    assert_eq!(seq_of_disc, last_before + 1, "sequence continues right after the last segment");
    assert_eq!(p.discontinuity_sequence, 0);
}

#[test]
fn hls_dir_files_match_what_http_serves() {
    let dir = scratch_dir("hls-dir");
    let gw = Gateway::start_with(&["--hls-dir", dir.to_str().unwrap()]);
    let _pub = publish(&gw.rtmp_url("live/disk"), Source::default(), None);
    let pl = wait_segments(&gw, "live/disk", 3, Duration::from_secs(30));
    for seg in &pl.segments {
        let http = http_get(gw.http, &format!("/live/{}", seg.uri)).body;
        let file = std::fs::read(dir.join("live").join(&seg.uri)).expect("segment file");
        assert_eq!(http, file, "{}", seg.uri);
    }
    // the playlist file is a complete playlist listing segments that exist on disk
    let text = std::fs::read(dir.join("live/disk.m3u8")).expect("playlist file");
    let on_disk = parse_playlist(&text);
    assert!(on_disk.segments.len() >= 3);
    for seg in &on_disk.segments {
        assert!(dir.join("live").join(&seg.uri).exists(), "{} listed but missing", seg.uri);
    }
    // a temporary file exists between a write and its rename while the publisher goes on:
    // one left behind is there in every look
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(dir.join("live"))
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".tmp"))
            .collect()
    };
    assert!(wait_until(Duration::from_secs(2), || leftovers().is_empty()), "temp files left behind: {:?}", leftovers());
}

#[test]
fn an_ended_playlist_gets_its_endlist_and_goes_at_its_deadlines() {
    // endlist after 2 s, dropped after 6 s: the lifecycle sleeps until each deadline (the
    // bounds leave the test, which learns of the end through the log, 0.5-1.5 s of slack)
    let dir = scratch_dir("hls-deadlines");
    let cfg = dir.join("livegate.toml");
    // (with no reconnect grace: endlist_delay_ms is the wait for the publisher)
    std::fs::write(&cfg, "[hub]\nreconnect_grace_ms = 0\n[hls]\nendlist_delay_ms = 2000\nhold_time_ms = 6000\n")
        .unwrap();
    let gw = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    let ff = publish(&gw.rtmp_url("live/dl"), Source::default(), Some(3));
    wait_segments(&gw, "live/dl", 1, Duration::from_secs(15));
    assert!(ff.wait(Duration::from_secs(15)).is_some(), "ffmpeg finished");
    assert!(gw.wait_log("hls: playlist ended", Duration::from_secs(5)));
    let ended = Instant::now();
    assert!(!http_get(gw.http, "/live/dl.m3u8").text().contains("#EXT-X-ENDLIST"), "not before the delay");
    assert!(wait_until(Duration::from_secs(5), || http_get(gw.http, "/live/dl.m3u8")
        .text()
        .contains("#EXT-X-ENDLIST")));
    let endlist_after = ended.elapsed();
    assert!(wait_until(Duration::from_secs(8), || http_get(gw.http, "/live/dl.m3u8").status == 404));
    let gone_after = ended.elapsed();
    println!("ENDLIST {endlist_after:?} and drop {gone_after:?} after the publisher left (2 s / 6 s configured)");
    assert!(endlist_after < Duration::from_millis(3500), "{endlist_after:?}");
    assert!(gone_after >= Duration::from_millis(4500) && gone_after < Duration::from_millis(7500), "{gone_after:?}");
}

/// The initialization segment and every listed segment of an fMP4 playlist, concatenated
/// as a player's source buffer would receive them.
fn fmp4_stream(gw: &Gateway, key: &str, pl: &MediaPlaylist) -> Vec<u8> {
    let app = key.split('/').next().unwrap();
    let map = pl.segments[0].map.as_ref().expect("EXT-X-MAP before the first segment");
    let init = http_get(gw.http, &format!("/{app}/{}", map.uri));
    assert_eq!(init.status, 200, "{}", map.uri);
    assert_eq!(init.header("content-type"), Some("video/mp4"));
    assert_eq!(init.header("cache-control"), Some("public, max-age=31536000, immutable"));
    let mut all = init.body.clone();
    for seg in &pl.segments {
        assert!(seg.uri.ends_with(".m4s"), "{}", seg.uri);
        let r = http_get(gw.http, &format!("/{app}/{}", seg.uri));
        assert_eq!(r.status, 200, "{}", seg.uri);
        assert_eq!(r.header("content-type"), Some("video/iso.segment"));
        all.extend_from_slice(&r.body);
    }
    all
}

fn packets(probe: &serde_json::Value, kind: &str) -> Vec<(f64, f64, bool)> {
    let index: Vec<i64> = probe["streams"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["codec_type"] == kind)
        .map(|s| s["index"].as_i64().unwrap())
        .collect();
    probe["packets"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| index.contains(&p["stream_index"].as_i64().unwrap()))
        .map(|p| {
            let t = |k: &str| p[k].as_str().and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN);
            (t("dts_time"), t("pts_time"), p["flags"].as_str().unwrap_or("").starts_with('K'))
        })
        .collect()
}

#[test]
fn fmp4_variant_serves_an_init_segment_and_continuous_fragments() {
    let gw = Gateway::in_process("[hls]\nvariant = \"fmp4\"\n");
    let dir = scratch_dir("hls-fmp4");
    let _av = publish(&gw.rtmp_url("live/cmaf"), Source::default(), None);
    let _a = publish(&gw.rtmp_url("live/cmafa"), Source { video: false, ..Source::default() }, None);
    let _v = publish(&gw.rtmp_url("live/cmafv"), Source { audio: false, ..Source::default() }, None);
    let pl = wait_segments(&gw, "live/cmaf", 4, Duration::from_secs(30));
    let text = http_get(gw.http, "/live/cmaf.m3u8").text();
    assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n"), "{text}");
    assert_eq!(text.matches("#EXT-X-MAP:").count(), 1, "{text}");
    let path = dir.join("cmaf.mp4");
    std::fs::write(&path, fmp4_stream(&gw, "live/cmaf", &pl)).unwrap();
    let probe = ffprobe(path.to_str().unwrap(), &["-show_streams", "-show_packets"]);
    let streams = probe["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").expect("a video track");
    assert_eq!((video["codec_name"].as_str(), video["width"].as_i64()), (Some("h264"), Some(640)));
    assert!(streams.iter().any(|s| s["codec_name"] == "aac"), "an AAC track");
    // video: starts at a keyframe, DTS strictly increasing across all segments, PTS ≥ DTS
    let v = packets(&probe, "video");
    assert!(v.len() >= 4 * 55, "{} video packets in 4 segments", v.len());
    assert!(v[0].2, "the first video sample is a keyframe");
    for w in v.windows(2) {
        assert!(w[1].0 > w[0].0, "video DTS {} then {}", w[0].0, w[1].0);
        assert!(w[1].1 >= w[1].0 - 1e-6, "PTS before DTS");
    }
    // audio: 1024-sample frames back to back across segment boundaries (no gaps, no overlaps)
    let a = packets(&probe, "audio");
    for w in a.windows(2) {
        let step = w[1].1 - w[0].1;
        assert!((step - 1024.0 / 44_100.0).abs() < 0.002, "audio step {step:.4} s at {:.3}", w[0].1);
    }
    // the whole stream decodes
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i", path.to_str().unwrap(), "-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    // audio-only and video-only publishes: an init segment with only the track they have
    for (key, kind) in [("live/cmafa", "audio"), ("live/cmafv", "video")] {
        let pl = wait_segments(&gw, key, 2, Duration::from_secs(30));
        let path = dir.join(format!("{kind}.mp4"));
        std::fs::write(&path, fmp4_stream(&gw, key, &pl)).unwrap();
        let probe = ffprobe(path.to_str().unwrap(), &["-show_streams"]);
        assert_eq!(kinds(&probe), vec![kind], "{key}");
    }
    // the API tells the variant
    let api: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams/live/cmaf").body).unwrap();
    assert_eq!(api["hls"]["variant"], "fmp4", "{api}");
}

/// The URI of `EXT-X-PRELOAD-HINT` and the (msn, part) it names.
fn preload_hint(text: &str) -> (String, u64, u32) {
    let line = text.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:TYPE=PART,URI=")).expect("a preload hint");
    let uri = line.split('"').nth(1).unwrap().to_string();
    let stem = uri.strip_suffix(".m4s").unwrap();
    let (msn, part) = stem.rsplit('-').next().unwrap().split_once('.').unwrap();
    (uri.clone(), msn.parse().unwrap(), part.parse().unwrap())
}

#[test]
fn low_latency_hls_blocks_until_the_part_exists_and_serves_hinted_parts() {
    // lowlatency is the default variant
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/llhls"), Source::default(), None);
    let pl = wait_segments(&gw, "live/llhls", 2, Duration::from_secs(30));
    assert_eq!(pl.media_sequence, 1, "LL playlists start at 1");
    let text = http_get(gw.http, "/live/llhls.m3u8").text();
    for tag in [
        "#EXT-X-VERSION:6",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,",
        "#EXT-X-PART-INF:PART-TARGET=0.334",
        "#EXT-X-MAP:URI=",
    ] {
        assert!(text.contains(tag), "{tag} missing:\n{text}");
    }
    // a blocking reload for the hinted part is answered when it exists, with it listed
    let (uri, msn, part) = preload_hint(&text);
    let t0 = Instant::now();
    let r = http_get(gw.http, &format!("/live/llhls.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
    let waited = t0.elapsed();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), Some("public, max-age=6"));
    assert!(r.text().contains(&format!("URI=\"{uri}\"")), "the part asked for is listed:\n{}", r.text());
    assert!(waited < Duration::from_secs(2), "blocked {waited:?} for one part");
    println!("blocking reload for the hinted part answered after {waited:?}");
    // the next hinted part: a request for it waits for it, then gets one moof + mdat
    let (next_uri, ..) = preload_hint(&r.text());
    let p = http_get(gw.http, &format!("/live/{next_uri}"));
    assert_eq!(p.status, 200, "{next_uri}");
    assert_eq!(p.header("content-type"), Some("video/iso.segment"));
    assert_eq!(p.header("cache-control"), Some("public, max-age=31536000, immutable"));
    assert_eq!(&p.body[4..8], b"moof");
    // a complete segment is its parts, in order
    let text = http_get(gw.http, "/live/llhls.m3u8").text();
    let lines: Vec<&str> = text.lines().collect();
    let seg_at = lines.iter().position(|l| l.ends_with(".m4s") && !l.starts_with('#')).unwrap();
    let seg_uri = lines[seg_at];
    let parts: Vec<&str> = lines[..seg_at]
        .iter()
        .rev()
        .take_while(|l| l.starts_with("#EXT-X-PART:") || l.starts_with("#EXTINF"))
        .filter(|l| l.starts_with("#EXT-X-PART:"))
        .map(|l| l.split('"').nth(1).unwrap())
        .collect();
    assert!(!parts.is_empty(), "the oldest listed segment has no parts listed:\n{text}");
    let joined: Vec<u8> = parts.iter().rev().flat_map(|u| http_get(gw.http, &format!("/live/{u}")).body).collect();
    assert_eq!(joined, http_get(gw.http, &format!("/live/{seg_uri}")).body, "{seg_uri} is its parts");
    // malformed or far-ahead directives: 400; a part that is neither listed nor hinted: 404
    for q in ["_HLS_part=1", "_HLS_msn=x", &format!("_HLS_msn={}", msn + 5), "_HLS_msn=1&_HLS_skip=NO"] {
        assert_eq!(http_get(gw.http, &format!("/live/llhls.m3u8?{q}")).status, 400, "{q}");
    }
    let unknown = uri.replace(&format!("-{msn}.{part}.m4s"), &format!("-{}.0.m4s", msn + 3));
    assert_eq!(http_get(gw.http, &format!("/live/{unknown}")).status, 404);
    // a delta update is a playlist too
    assert_eq!(http_get(gw.http, "/live/llhls.m3u8?_HLS_skip=YES").status, 200);
    // players that know nothing of LL-HLS (ffmpeg 5.1) play the same URL from its segments
    let dir = scratch_dir("hls-ll-record");
    let out = dir.join("rec.mkv");
    let rec = record(&gw.http_url("/live/llhls.m3u8"), 4, &out);
    assert!(rec.status.success(), "{}", String::from_utf8_lossy(&rec.stderr));
    let probe = ffprobe(out.to_str().unwrap(), &["-show_streams"]);
    assert_eq!(kinds(&probe), vec!["audio", "video"]);
    // how long after its last frame arrived a part is listed (measured by the server)
    let metrics = http_get(gw.http, "/metrics").text();
    let value = |name: &str| -> f64 {
        metrics.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok()).unwrap_or(f64::NAN)
    };
    let (sum, count) = (value("livegate_hls_part_delay_seconds_sum "), value("livegate_hls_part_delay_seconds_count "));
    let within_50ms = value("livegate_hls_part_delay_seconds_bucket{le=\"0.05\"} ");
    assert!(count > 10.0, "{metrics}");
    println!(
        "parts listed {:.1} ms after their last frame on average; {within_50ms} of {count} within 50 ms",
        1000.0 * sum / count
    );
    let api: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams/live/llhls").body).unwrap();
    assert_eq!(
        (api["hls"]["variant"].as_str(), api["hls"]["part_target_ms"].as_u64()),
        (Some("lowlatency"), Some(333))
    );
    // the encoder dies: a blocking reload for what does not come is answered 503 after 3
    // target durations (ENDLIST comes only after endlist_delay_ms, 10 s)
    drop(_pub);
    std::thread::sleep(Duration::from_millis(500));
    let now = parse_playlist(&http_get(gw.http, "/live/llhls.m3u8").body);
    let next = now.media_sequence + now.segments.len() as u64 + 1;
    let t0 = Instant::now();
    let r = http_get(gw.http, &format!("/live/llhls.m3u8?_HLS_msn={next}"));
    let waited = t0.elapsed();
    assert_eq!(r.status, 503, "{}", r.text());
    assert!(waited >= Duration::from_secs(5) && waited < Duration::from_secs(8), "503 after {waited:?}");
}

#[test]
fn low_latency_hls_refuses_bad_directives_caps_waiting_requests_and_never_hangs_after_the_end() {
    let gw = Gateway::in_process(
        // the publisher may come back for 500 ms; ENDLIST comes right after (the grace
        // replaces endlist_delay_ms)
        "[hub]\nreconnect_grace_ms = 500\n[hls]\nvariant = \"lowlatency\"\nmax_blocked_requests = 5\n\
         endlist_delay_ms = 10000\nhold_time_ms = 30000\n",
    );
    let ff = publish(&gw.rtmp_url("live/llbad"), Source::default(), Some(8));
    let pl = wait_segments(&gw, "live/llbad", 1, Duration::from_secs(30));
    for q in ["_HLS_msn=-1", "_HLS_msn=99999999999999999999", "_HLS_msn=abc", "_HLS_part=2", "_HLS_msn=1&_HLS_part=-3"]
    {
        assert_eq!(http_get(gw.http, &format!("/live/llbad.m3u8?{q}")).status, 400, "{q}");
    }
    // more waiting requests than the cap: the ones past it get 503 at once
    let next = pl.media_sequence + pl.segments.len() as u64 + 1;
    let http = gw.http;
    let waiting: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let t0 = Instant::now();
                let r = http_get(http, &format!("/live/llbad.m3u8?_HLS_msn={next}"));
                (r.status, t0.elapsed())
            })
        })
        .collect();
    let answers: Vec<(u16, Duration)> = waiting.into_iter().map(|t| t.join().unwrap()).collect();
    let refused = answers.iter().filter(|(s, d)| *s == 503 && *d < Duration::from_secs(1)).count();
    assert!(refused >= 3, "8 waiting requests with a cap of 5: {answers:?}");
    assert!(answers.iter().filter(|(s, _)| *s == 200).count() >= 1, "{answers:?}");
    // the publisher leaves: a request waiting for what will never come is answered with the
    // ended playlist once ENDLIST is added (500 ms), and a hinted part is refused, never a hang
    let text = http_get(gw.http, "/live/llbad.m3u8").text();
    let hint =
        text.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT")).unwrap().split('"').nth(1).unwrap().to_string();
    assert!(ff.wait(Duration::from_secs(20)).is_some(), "ffmpeg finished");
    let t0 = Instant::now();
    let r = http_get(gw.http, "/live/llbad.m3u8?_HLS_msn=999999&_HLS_part=0");
    assert!(t0.elapsed() < Duration::from_secs(4), "waited {:?}", t0.elapsed());
    assert!(r.status == 200 && r.text().contains("#EXT-X-ENDLIST") || r.status == 400, "{} {}", r.status, r.text());
    assert!(wait_until(Duration::from_secs(5), || http_get(gw.http, "/live/llbad.m3u8")
        .text()
        .contains("#EXT-X-ENDLIST")));
    let t0 = Instant::now();
    let r = http_get(gw.http, &format!("/live/llbad.m3u8?_HLS_msn={next}&_HLS_part=3"));
    assert_eq!(r.status, 200, "directives are ignored once the playlist ended");
    assert!(r.text().contains("#EXT-X-ENDLIST") && !r.text().contains("PRELOAD-HINT"));
    let p = http_get(gw.http, &format!("/live/{hint}"));
    assert!(t0.elapsed() < Duration::from_secs(1), "answered after {:?}", t0.elapsed());
    assert!(p.status == 200 || p.status == 404, "hinted part of an ended stream: {}", p.status);
}
