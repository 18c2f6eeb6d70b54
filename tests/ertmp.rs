//! Enhanced RTMP end to end: a current ffmpeg (9.x, from PyPI imageio-ffmpeg; Debian's
//! 5.1 predates E-RTMP) publishes HEVC, AV1, VP9, Opus, FLAC, AC-3, E-AC-3, MP3 and a
//! multitrack FLV; the gateway serves them over LL-HLS/fMP4, HTTP-FLV and RTMP play, and
//! ffmpeg 9 / ffprobe read them back.

mod common;

use std::time::Duration;

use common::*;

fn api_stream(gw: &Gateway, key: &str) -> serde_json::Value {
    serde_json::from_slice(&http_get(gw.http, &format!("/api/streams/{key}")).body).unwrap_or_default()
}

fn wait_codecs(gw: &Gateway, key: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = api_stream(gw, key);
        last["video"]["codec"].is_string() && last["hls"]["last_sequence"].as_u64().unwrap_or(0) >= 2
    });
    assert!(ok, "{key} did not get live with HLS segments: {last}");
    last
}

/// Publishes a fixture FLV (captured from ffmpeg 9) in a loop, as it is (`-c copy`).
fn publish_fixture(gw: &Gateway, file: &str, key: &str) -> Ffmpeg {
    let path = format!("{}/fixtures/ertmp/{file}", env!("CARGO_MANIFEST_DIR"));
    ffmpeg9_spawn(&["-re", "-stream_loop", "-1", "-i", &path, "-c", "copy", "-f", "flv", &gw.rtmp_url(key)])
}

fn stream_line<'a>(text: &'a str, kind: &str) -> &'a str {
    text.lines().find(|l| l.contains("Stream #0:") && l.contains(kind)).unwrap_or("")
}

#[test]
fn hevc_and_opus_from_ffmpeg_9_play_over_ll_hls_http_flv_and_rtmp() {
    let gw = Gateway::in_process("");
    let url = gw.rtmp_url("live/hevc");
    let _pub = ffmpeg9_spawn(&[
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-c:v",
        "libx265",
        "-preset",
        "ultrafast",
        "-x265-params",
        "log-level=error:keyint=25:bframes=2",
        "-c:a",
        "libopus",
        "-b:a",
        "48k",
        "-f",
        "flv",
        &url,
    ]);
    let api = wait_codecs(&gw, "live/hevc");
    let video = api["video"]["codec"].as_str().unwrap();
    assert!(video.starts_with("hvc1.1.6.L"), "{api}");
    assert_eq!((api["video"]["width"].as_u64(), api["audio"]["codec"].as_str()), (Some(320), Some("opus")), "{api}");
    // Safari's rule: the sample entry is hvc1 (parameter sets in hvcC), never hev1
    let playlist = http_get(gw.http, "/live/hevc.m3u8").text();
    let map = playlist.split("#EXT-X-MAP:URI=\"").nth(1).and_then(|r| r.split('"').next()).expect("EXT-X-MAP");
    let init = http_get(gw.http, &format!("/live/{map}")).body;
    let has = |b: &[u8]| init.windows(4).any(|w| w == b);
    assert!(has(b"hvc1") && has(b"hvcC") && !has(b"hev1") && has(b"Opus") && has(b"dOps"), "init segment boxes");
    for (what, url) in [
        ("LL-HLS", gw.http_url("/live/hevc.m3u8")),
        ("HTTP-FLV", gw.http_url("/live/hevc.flv")),
        ("RTMP", gw.rtmp_url("live/hevc")),
    ] {
        let (ok, text) = ffmpeg9_decode(&url, 3);
        assert!(ok, "{what}: {text}");
        assert!(stream_line(&text, "Video:").contains("hevc"), "{what}: {text}");
        assert!(stream_line(&text, "Audio:").contains("opus"), "{what}: {text}");
        assert!(stream_line(&text, "Video:").contains("320x240"), "{what}: {text}");
        assert!(!text.contains("rror"), "{what} decoded with errors: {text}");
    }
    // Debian's ffprobe 5.1 reads the fMP4 too (no E-RTMP needed for HLS)
    let probe = ffprobe(&gw.http_url("/live/hevc.m3u8"), &["-show_streams"]);
    let names: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(names, vec!["hevc", "opus"], "{probe}");
}

#[test]
fn av1_in_an_mpegts_app_is_served_as_fmp4() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let url = gw.rtmp_url("live/av1");
    let _pub = ffmpeg9_spawn(&[
        "-re",
        "-f",
        "lavfi",
        "-i",
        "testsrc2=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine=sample_rate=48000",
        "-c:v",
        "libsvtav1",
        "-preset",
        "12",
        "-g",
        "25",
        "-svtav1-params",
        "lp=1",
        "-c:a",
        "aac",
        "-b:a",
        "64k",
        "-f",
        "flv",
        &url,
    ]);
    let api = wait_codecs(&gw, "live/av1");
    assert!(api["video"]["codec"].as_str().unwrap().starts_with("av01.0."), "{api}");
    assert_eq!(api["hls"]["variant"], "fmp4", "MPEG-TS cannot carry AV1: {api}");
    let playlist = http_get(gw.http, "/live/av1.m3u8").text();
    assert!(
        playlist.contains("#EXT-X-MAP:URI=") && playlist.contains(".m4s") && !playlist.contains(".ts\n"),
        "{playlist}"
    );
    for url in [gw.http_url("/live/av1.m3u8"), gw.http_url("/live/av1.flv"), gw.rtmp_url("live/av1")] {
        let (ok, text) = ffmpeg9_decode(&url, 2);
        assert!(ok && stream_line(&text, "Video:").contains("av1"), "{url}: {text}");
        assert!(stream_line(&text, "Audio:").contains("aac"), "{url}: {text}");
    }
    // an H.264/AAC stream in the same app stays MPEG-TS
    let _h264 = publish(&gw.rtmp_url("live/ts"), Source::default(), None);
    let api = wait_codecs(&gw, "live/ts");
    assert_eq!(api["hls"]["variant"], "mpegts", "{api}");
}

#[test]
fn vp9_flac_ac3_eac3_and_mp3_reach_fmp4_with_their_sample_entries() {
    let gw = Gateway::in_process("");
    let cases = [
        ("vp9_flac.flv", "live/vp9", "vp09.00.", "fLaC", ["vp9", "flac"]),
        ("h264_ac3.flv", "live/ac3", "avc1.", "ac-3", ["h264", "ac3"]),
        ("h264_eac3.flv", "live/eac3", "avc1.", "ec-3", ["h264", "eac3"]),
        ("h264_mp3.flv", "live/mp3", "avc1.", "mp4a.6B", ["h264", "mp3"]),
    ];
    let _pubs: Vec<Ffmpeg> = cases.iter().map(|(file, key, ..)| publish_fixture(&gw, file, key)).collect();
    for (_, key, video, audio, names) in cases {
        let api = wait_codecs(&gw, key);
        assert!(api["video"]["codec"].as_str().unwrap().starts_with(video), "{api}");
        assert_eq!(api["audio"]["codec"].as_str(), Some(audio), "{api}");
        assert_eq!((api["video"]["width"].as_u64(), api["video"]["height"].as_u64()), (Some(160), Some(120)), "{api}");
        let (ok, text) = ffmpeg9_decode(&gw.http_url(&format!("/{key}.m3u8")), 2);
        assert!(ok, "{key}: {text}");
        assert!(stream_line(&text, "Video:").contains(names[0]), "{key}: {text}");
        assert!(stream_line(&text, "Audio:").contains(names[1]), "{key}: {text}");
        assert!(!text.contains("rror"), "{key} decoded with errors: {text}");
        // HTTP-FLV carries the same codecs back out (Enhanced FLV where legacy FLV cannot)
        let (ok, text) = ffmpeg9_decode(&gw.http_url(&format!("/{key}.flv")), 2);
        assert!(ok && stream_line(&text, "Audio:").contains(names[1]), "{key} HTTP-FLV: {text}");
    }
}

#[test]
fn a_multitrack_publish_serves_its_first_track() {
    let gw = Gateway::in_process("");
    let _pub = publish_fixture(&gw, "multi.flv", "live/multi");
    let api = wait_codecs(&gw, "live/multi");
    assert_eq!((api["video"]["width"].as_u64(), api["video"]["height"].as_u64()), (Some(320), Some(240)), "{api}");
    let (ok, text) = ffmpeg9_decode(&gw.http_url("/live/multi.flv"), 2);
    assert!(ok && stream_line(&text, "Video:").contains("320x240"), "{text}");
    assert_eq!(text.matches("Video:").count(), 2, "one video track in and one out of the decoder: {text}");
}
