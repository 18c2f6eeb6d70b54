//! Real browsers: hls.js and mpegts.js in headless Chromium (Debian's, driven by
//! playwright-core from `tests/browser/`) play what the real binary serves while
//! ffmpeg publishes. The test page comes from another origin than the media
//! (CORS). Each test prints the player's measurements. Needs node, chromium and
//! `npm ci` in tests/browser: scripts/test.sh installs them; missing ones fail.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use common::browser::*;
use common::*;
use serde_json::json;

#[test]
fn hls_js_plays_the_live_playlist_from_another_origin() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let _pub = publish(&gw.rtmp_url("live/hlsjs"), Source::default(), None);
    wait_playlist(&gw, "live/hlsjs", 3);
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/hlsjs.m3u8"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs.png")}),
        |_, _| {},
    );
    assert_ne!(r["pageOrigin"].as_str(), Some(gw.http_url("").trim_end_matches('/')), "cross-origin page");
    assert_played(&r, 10.0);
    assert!(r["tracks"]["audio"].as_str().unwrap_or("").starts_with("mp4a"), "hls.js audio track: {}", r["tracks"]);
    assert!(r["tracks"]["video"].as_str().unwrap_or("").starts_with("avc1"), "hls.js video track: {}", r["tracks"]);
    assert!(r["firstFrameMs"].as_f64().unwrap() < 5000.0, "hls.js startup {}", r["firstFrameMs"]);
}

#[test]
fn hls_js_plays_fmp4_segments() {
    let gw = Gateway::in_process("[hls]\nvariant = \"fmp4\"\n");
    let _pub = publish(&gw.rtmp_url("live/fmp4"), Source::default(), None);
    wait_playlist(&gw, "live/fmp4", 3);
    let playlist = http_get(gw.http, "/live/fmp4.m3u8").text();
    assert!(playlist.contains("#EXT-X-MAP:URI=") && playlist.contains(".m4s"), "{playlist}");
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/fmp4.m3u8"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-fmp4.png")}),
        |_, _| {},
    );
    assert_played(&r, 10.0);
    // one fMP4 file carries both tracks: hls.js feeds them to one "audiovideo" buffer
    let codecs = r["tracks"]["audiovideo"].as_str().unwrap_or("");
    assert!(codecs.contains("avc1") && codecs.contains("mp4a"), "hls.js tracks: {}", r["tracks"]);
}

#[test]
fn hls_js_plays_low_latency_hls_with_parts_and_blocking_reload() {
    // the default variant, and 2 s keyframes as encoders are told to use
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/ll"), Source { gop: 60, ..Source::default() }, None);
    wait_playlist(&gw, "live/ll", 2);
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/ll.m3u8"), "seconds": 12, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-ll.png")}),
        |_, _| {},
    );
    assert_played(&r, 12.0);
    assert!(r["canBlockReload"].as_bool().unwrap_or(false), "hls.js saw no CAN-BLOCK-RELOAD");
    assert!(r["parts"].as_u64().unwrap_or(0) >= 6, "hls.js saw {} parts", r["parts"]);
    // measured, not judged here (the benchmark holds the targets): printed with the summary
    println!("LL-HLS latency {} s (PDT {} s)", r["latencyAvg"], r["pdtLatencyAvg"]);
}

#[test]
fn hls_js_plays_keyed_low_latency_hls_of_a_ladder() {
    // play keys on a multitrack publish (two video variants, alternate audio), Low-Latency
    // HLS: every URI hls.js is given (variants, EXT-X-MEDIA, EXT-X-MAP, parts, preload hints,
    // rendition reports, segments) must carry the key, or it gets 401
    use common::hostile::ladder_publisher;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let gw = Gateway::in_process("[auth]\nplay_keys = [\"v1ew\"]\n");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = ladder_publisher(gw.rtmp, "live/keyed", stop.clone());
    let ready = wait_until(Duration::from_secs(30), || {
        let text = http_get(gw.http, "/live/keyed.m3u8?key=v1ew").text();
        text.matches("#EXT-X-STREAM-INF:").count() == 2 && text.contains("#EXT-X-MEDIA:")
    });
    assert!(ready, "{}", http_get(gw.http, "/live/keyed.m3u8?key=v1ew").text());
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/keyed.m3u8?key=v1ew"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-ll-keyed.png")}),
        |_, _| {},
    );
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
    assert_played(&r, 10.0);
    assert!(r["canBlockReload"].as_bool().unwrap_or(false), "hls.js saw no CAN-BLOCK-RELOAD");
    assert!(r["parts"].as_u64().unwrap_or(0) >= 6, "hls.js saw {} parts", r["parts"]);
    println!("keyed LL-HLS ladder: latency {} s, first frame {} ms", r["latencyAvg"], r["firstFrameMs"]);
}

#[test]
fn mpegts_js_plays_http_flv_with_a_fast_first_frame() {
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/flvjs"), Source::default(), None);
    assert!(wait_live(&gw, "live/flvjs", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(1500)); // a full GOP in the cache
    let r = run_player(
        json!({"mode": "flv", "url": gw.http_url("/live/flvjs.flv"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("mpegtsjs.png")}),
        |_, _| {},
    );
    assert_played(&r, 10.0);
    let mi = &r["mediaInfo"];
    assert_eq!(mi["hasAudio"].as_bool(), Some(true), "mpegts.js media info: {mi}");
    assert!(mi["audioCodec"].as_str().unwrap_or("").starts_with("mp4a"), "mpegts.js media info: {mi}");
    let first = r["firstFrameMs"].as_f64().unwrap();
    assert!(first <= 1500.0, "first frame after {first:.0} ms (GOP cache should make it immediate)");
}

#[test]
fn mpegts_js_plays_websocket_flv() {
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/wsjs"), Source::default(), None);
    assert!(wait_live(&gw, "live/wsjs", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(1500));
    let url = gw.http_url("/live/wsjs.flv").replacen("http://", "ws://", 1);
    let r = run_player(
        json!({"mode": "flv", "url": url, "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("mpegtsjs-websocket.png")}),
        |_, _| {},
    );
    assert_played(&r, 10.0);
    let mi = &r["mediaInfo"];
    assert_eq!((mi["hasVideo"].as_bool(), mi["hasAudio"].as_bool()), (Some(true), Some(true)), "{mi}");
    println!("WebSocket-FLV in mpegts.js: {}", summary(&r));
}

#[test]
fn hls_js_keeps_playing_across_an_encoder_restart() {
    // MPEG-TS, and Low-Latency HLS over fMP4 (a new init segment or not, a discontinuity)
    for variant in ["mpegts", "lowlatency"] {
        println!("== {variant}");
        encoder_restart_case(variant);
    }
}

fn encoder_restart_case(variant: &str) {
    let gw = Gateway::in_process(&format!("[hls]\nvariant = \"{variant}\"\n"));
    let key = "live/restart";
    let mut publisher = Some(publish(&gw.rtmp_url(key), Source::default(), None));
    wait_playlist(&gw, key, 3);
    let mut restarted_at = None;
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url(&format!("/{key}.m3u8")), "seconds": 4, "vendor": vendor(),
               "waitMarks": ["restarted"], "afterMarkSeconds": 14, "maxSeconds": 90}),
        |ev, stdin| {
            if ev["event"] == "playing" {
                std::thread::sleep(Duration::from_secs(4));
                publisher.take().unwrap().stop(); // SIGKILL: the encoder dies
                writeln!(stdin, "killed").unwrap();
                std::thread::sleep(Duration::from_secs(3));
                publisher = Some(publish(&gw.rtmp_url(key), Source::default(), None));
                restarted_at = Some(Instant::now());
                writeln!(stdin, "restarted").unwrap();
            }
        },
    );
    assert!(restarted_at.is_some(), "the restart never happened");
    let fatal = fatal_errors(&r);
    assert!(fatal.is_empty(), "fatal hls.js errors across the restart: {fatal:?}");
    assert_eq!(r["ended"].as_bool(), Some(false), "hls.js ended playback at the restart: {}", r["events"]);
    let marks = r["marks"].as_array().unwrap();
    let at_restart = &marks.iter().find(|m| m["name"] == "restarted").expect("restart mark")["sample"];
    let samples = r["samples"].as_array().unwrap();
    let last = samples.last().unwrap();
    // everything the first session produced is buffered by the restart mark (its last segment was
    // flushed 3 s before); what plays beyond that came from the new session
    let old_end = at_restart["bufEnd"].as_f64().unwrap();
    let beyond = last["ct"].as_f64().unwrap() - old_end;
    let frames_after = last["frames"].as_u64().unwrap() - at_restart["frames"].as_u64().unwrap();
    let live_at_end = last["live"].as_bool();
    println!(
        "restart: media played beyond the first session {beyond:.2} s, frames after restart {frames_after}, \
         playlist live at the end {live_at_end:?}, events {}",
        r["events"]
    );
    assert!(beyond >= 5.0, "after the restart hls.js played only {beyond:.2} s of the new session");
    assert!(frames_after >= 300, "only {frames_after} frames decoded in the 14 s after the restart");
    assert_eq!(live_at_end, Some(true), "hls.js no longer treats the playlist as live");
    assert_eq!((last["w"].as_u64(), last["h"].as_u64()), (Some(640), Some(360)));
}

#[test]
fn the_builtin_player_page_plays_both_modes() {
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/page"), Source::default(), None);
    wait_playlist(&gw, "live/page", 3);

    let index = http_get(gw.http, "/");
    assert_eq!(index.status, 200);
    assert_eq!(index.header("content-type"), Some("text/html; charset=utf-8"));
    // the console (tests/console.rs): its script lists the streams and links their pages
    assert!(index.text().contains("/_player/console.js"), "{}", index.text());
    let page = http_get(gw.http, "/live/page");
    assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
    for path in ["/_player/hls-1.7.4.min.js", "/_player/mpegts-1.8.2.js", "/_player/player.js", "/_player/console.js"] {
        let r = http_get(gw.http, path);
        assert_eq!((r.status, r.header("content-type")), (200, Some("text/javascript; charset=utf-8")), "{path}");
    }

    for (mode, engine) in [("hls", "hls.js"), ("flv", "mpegts.js"), ("ws", "mpegts.js 1.8.2 (WebSocket)")] {
        let r = run_player(
            json!({"mode": "page", "url": gw.http_url(&format!("/live/page?mode={mode}")), "seconds": 8,
                   "screenshot": artifacts().join(format!("player-page-{mode}.png"))}),
            |_, _| {},
        );
        assert_played(&r, 8.0);
        let last = r["samples"].as_array().unwrap().last().unwrap().clone();
        assert!(last["engine"].as_str().unwrap_or("").starts_with(engine), "{mode}: engine {}", last["engine"]);
        assert!(last["latency"].as_f64().is_some(), "{mode}: the page shows no latency");
    }
}

/// An AV1 + AAC publish from ffmpeg 9 (Enhanced RTMP), 640x360 at 30 fps like `Source`.
fn publish_av1(gw: &Gateway, key: &str) -> Ffmpeg {
    ffmpeg9_publish(
        "640x360",
        30,
        44100,
        "-c:v libsvtav1 -preset 12 -g 60 -b:v 600k -pix_fmt yuv420p -c:a aac -b:a 64k -ac 2",
        &gw.rtmp_url(key),
    )
}

#[test]
fn av1_from_enhanced_rtmp_plays_in_hls_js() {
    // Chromium decodes AV1 in software: hls.js over LL-HLS (fMP4 av01/av1C)
    let gw = Gateway::in_process("");
    let _pub = publish_av1(&gw, "live/av1");
    wait_playlist(&gw, "live/av1", 2);
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/av1.m3u8"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-av1.png")}),
        |_, _| {},
    );
    assert_played(&r, 10.0);
    let codecs = r["tracks"]["audiovideo"].as_str().or(r["tracks"]["video"].as_str()).unwrap_or("");
    assert!(codecs.contains("av01"), "hls.js tracks: {}", r["tracks"]);
    println!("hls.js AV1: first frame {} ms, latency {} s", r["firstFrameMs"], r["latencyAvg"]);
    // HTTP-FLV carries the same AV1 as Enhanced FLV (tests/ertmp.rs reads it with ffmpeg 9);
    // mpegts.js 1.8.2 is not used for it here: with SVT-AV1 it reports 666x360 and throws at
    // the second keyframe. So the built-in player page, asked for no mode, plays AV1 over HLS.
    let r = run_player(
        json!({"mode": "page", "url": gw.http_url("/live/av1"), "seconds": 8,
               "screenshot": artifacts().join("player-page-av1.png")}),
        |_, _| {},
    );
    assert_played(&r, 8.0);
    let last = r["samples"].as_array().unwrap().last().unwrap().clone();
    assert!(last["engine"].as_str().unwrap_or("").starts_with("hls.js"), "engine {}", last["engine"]);
}

#[test]
fn hls_js_switches_between_the_renditions_of_a_multitrack_publish() {
    // one ffmpeg 9 publish with two H.264 encodes as two video tracks and two AAC encodes
    // as two audio tracks (Enhanced RTMP multitrack)
    let gw = Gateway::in_process("");
    let _pub = ffmpeg9_publish(
        "640x360",
        30,
        44100,
        "-map 0:v -map 0:v -map 1:a -map 1:a -c:v libx264 -preset veryfast -s:v:0 640x360 -s:v:1 320x180 \
         -b:v:0 800k -b:v:1 200k -g 60 -keyint_min 60 -sc_threshold 0 -pix_fmt yuv420p -c:a aac -b:a:0 64k \
         -b:a:1 32k",
        &gw.rtmp_url("live/abr"),
    );
    let ready = wait_until(Duration::from_secs(30), || {
        let text = http_get(gw.http, "/live/abr.m3u8").text();
        text.matches("#EXT-X-STREAM-INF:").count() == 2 && text.matches("#EXT-X-MEDIA:").count() == 2
    });
    assert!(ready, "{}", http_get(gw.http, "/live/abr.m3u8").text());
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/abr.m3u8"), "seconds": 14, "vendor": vendor(),
               "switchLevel": 0, "switchAudio": 1, "screenshot": artifacts().join("hlsjs-abr.png")}),
        |_, _| {},
    );
    let fatal = fatal_errors(&r);
    assert!(fatal.is_empty(), "fatal hls.js errors: {fatal:?}");
    let last = r["samples"].as_array().unwrap().last().unwrap().clone();
    // hls.js orders its levels by bandwidth: level 0 is the lower rendition; it starts on
    // the first listed (the higher one) and is told to switch down after 4 s
    assert_eq!(last["levels"], json!(["320x180", "640x360"]), "hls.js quality levels");
    let switches = last["switches"].as_array().cloned().unwrap_or_default();
    assert!(switches.first() == Some(&json!(1)) && switches.contains(&json!(0)), "switches: {switches:?}");
    assert_eq!((last["w"].as_u64(), last["h"].as_u64()), (Some(320), Some(180)), "playing the lower rendition");
    assert!(r["mediaAdvance"].as_f64().unwrap() >= 0.6 * 14.0, "media advanced {}", r["mediaAdvance"]);
    // the audio group: both audio tracks offered, switched to the second (an audio-only
    // playlist), whose audio then decodes
    assert_eq!(last["audioTracks"], json!(["Audio 0", "Audio 1"]), "hls.js audio tracks: {last}");
    assert_eq!(last["audioTrack"], json!(1), "{last}");
    assert!(last["audioSwitches"].as_array().is_some_and(|s| s.contains(&json!(1))), "{last}");
    let at_switch = last["audioBytesAtSwitch"].as_u64().expect("audio switched");
    assert!(last["audioBytes"].as_u64().unwrap_or(0) > at_switch, "audio decoded after the switch: {last}");
    println!(
        "ABR: levels {}, switches {}, audio tracks {} (switched {}), latency {} s",
        last["levels"], last["switches"], last["audioTracks"], last["audioSwitches"], r["latencyAvg"]
    );
    // the built-in player page offers both renditions (its quality menu is hls.js's levels)
    let r = run_player(
        json!({"mode": "page", "url": gw.http_url("/live/abr?mode=hls"), "seconds": 6,
               "screenshot": artifacts().join("player-page-abr.png")}),
        |_, _| {},
    );
    let last = r["samples"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["levels"], json!(["320x180", "640x360"]), "player page levels: {last}");
    assert_eq!(last["audioTracks"], json!(["Audio 0", "Audio 1"]), "player page audio menu: {last}");
    assert!(fatal_errors(&r).is_empty(), "{:?}", fatal_errors(&r));
}

#[test]
fn hls_js_plays_a_stream_an_edge_pulls_from_its_origin() {
    // hls.js asks the edge for a playlist of a stream it does not have: the request starts
    // the pull and waits for the pulled stream's first playlist
    let origin = Gateway::in_process("");
    let _pub = publish(&origin.rtmp_url("live/edge"), Source::default(), None);
    assert!(wait_live(&origin, "live/edge", Duration::from_secs(20)));
    let edge = Gateway::in_process(&format!("[apps.live]\npull = \"rtmp://{}/live\"\n", origin.rtmp));
    let r = run_player(
        json!({"mode": "hls", "url": edge.http_url("/live/edge.m3u8"), "seconds": 10, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-edge.png")}),
        |_, _| {},
    );
    assert_played(&r, 10.0);
    let codecs = r["tracks"]["audiovideo"].as_str().unwrap_or("");
    assert!(codecs.contains("avc1") && codecs.contains("mp4a"), "hls.js tracks: {}", r["tracks"]);
    let o: serde_json::Value = serde_json::from_slice(&http_get(origin.http, "/api/streams/live/edge").body).unwrap();
    assert_eq!(o["viewers"]["rtmp"], 1, "the edge pulls over one RTMP connection: {o}");

    // the same from Debian's nginx-rtmp as the origin
    let nginx = common::nginx_rtmp::NginxRtmp::start();
    let _pub2 = publish(&format!("rtmp://{}/live/ng", nginx.addr()), Source::default(), None);
    let edge2 = Gateway::in_process(&format!("[apps.live]\npull = \"rtmp://{}/live\"\n", nginx.addr()));
    // (nginx-rtmp has the stream a moment after ffmpeg connects)
    let pulled = wait_until(Duration::from_secs(15), || {
        http_request(edge2.http, "GET", "/live/ng.flv", 20_000, Duration::from_secs(8)).status == 200
    });
    assert!(pulled, "the edge never pulled from nginx-rtmp");
    let r = run_player(
        json!({"mode": "hls", "url": edge2.http_url("/live/ng.m3u8"), "seconds": 8, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-edge-nginx.png")}),
        |_, _| {},
    );
    assert_played(&r, 8.0);
}

#[test]
fn a_recording_plays_and_seeks_in_a_video_element() {
    let dir = scratch_dir("browser-record");
    let gw = Gateway::in_process(&format!(
        "[hub]\nreconnect_grace_ms = 300\n[record]\nenabled = true\ndir = \"{}\"\n",
        dir.display()
    ));
    let enc = publish(&gw.rtmp_url("live/vod"), Source::default(), Some(8));
    assert!(wait_live(&gw, "live/vod", Duration::from_secs(20)));
    assert!(enc.wait(Duration::from_secs(30)).is_some());
    let listed = wait_until(Duration::from_secs(15), || {
        let v: serde_json::Value =
            serde_json::from_slice(&http_get(gw.http, "/api/recordings/live/vod").body).unwrap_or_default();
        v["recordings"][0]["complete"] == true
    });
    assert!(listed, "no finalized recording");
    let v: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/recordings/live/vod").body).unwrap();
    let url = gw.http_url(v["recordings"][0]["url"].as_str().unwrap());
    let r = run_player(
        json!({"mode": "file", "url": url, "seconds": 3, "seekTo": 5.0, "vendor": vendor(),
               "screenshot": artifacts().join("recording.png")}),
        |_, _| {},
    );
    assert!(r["ok"].as_bool().unwrap_or(false), "{r}");
    assert!(fatal_errors(&r).is_empty(), "{:?}", fatal_errors(&r));
    let duration = r["duration"].as_f64().unwrap_or(0.0);
    assert!((7.0..=8.6).contains(&duration), "the <video> sees {duration} s");
    let seeked = r["seekedAt"].as_f64().expect("the video element never seeked");
    assert!((4.5..=5.5).contains(&seeked), "seeked to {seeked}");
    assert!(r["totalFrames"].as_u64().unwrap_or(0) > 30, "{r}");
}

/// A live stream being recorded, rewound in hls.js through its DVR window
/// (`/APP/STREAM.m3u8?dvr`, a live playlist served from the recording), then a past range
/// of it (`?start=…&end=…`, a VOD playlist) played and seeked in.
#[test]
fn hlsjs_rewinds_a_dvr_window_and_plays_a_recorded_range() {
    let dir = scratch_dir("browser-dvr");
    let gw = Gateway::in_process(&format!(
        "[hub]\nreconnect_grace_ms = 300\n[record]\nenabled = true\ndir = \"{}\"\n[apps.live.hls]\ndvr_window_s = 60\n",
        dir.display()
    ));
    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let before = now() - 1.0;
    let enc = publish(&gw.rtmp_url("live/dvr"), Source::default(), Some(36));
    assert!(wait_live(&gw, "live/dvr", Duration::from_secs(20)));
    // ~18 s recorded: the window holds that much to rewind into
    std::thread::sleep(Duration::from_secs(18));
    let r = run_player(
        json!({"mode": "hls", "url": gw.http_url("/live/dvr.m3u8?dvr"), "seconds": 6, "seekTo": -12.0,
               "vendor": vendor(), "screenshot": artifacts().join("hlsjs-dvr.png")}),
        |_, _| {},
    );
    assert!(r["ok"].as_bool().unwrap_or(false), "{r}");
    assert!(fatal_errors(&r).is_empty(), "{:?}", fatal_errors(&r));
    let last = r["samples"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
    assert_eq!(last["live"], true, "the DVR playlist is a live one: {last}");
    let window = r["seekableAtSeek"].as_array().cloned().unwrap_or_default();
    let (w0, w1) = (window.first().and_then(|v| v.as_f64()), window.get(1).and_then(|v| v.as_f64()));
    let (Some(w0), Some(w1)) = (w0, w1) else { panic!("no seekable range: {r}") };
    assert!(w1 - w0 >= 12.0, "a DVR window of {:.1} s after 18 s of recording", w1 - w0);
    let seeked = r["seekedAt"].as_f64().expect("hls.js never seeked");
    assert!(seeked >= w0 && seeked <= w1 - 10.0, "seeked to {seeked} in {w0}..{w1}");
    let ct = last["ct"].as_f64().unwrap_or(0.0);
    assert!(ct > seeked + 2.5, "playback went on after the rewind only to {ct} from {seeked}");
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) > 100, "{r}");

    assert!(enc.wait(Duration::from_secs(40)).is_some());
    let finalized = wait_until(Duration::from_secs(15), || {
        let v: serde_json::Value =
            serde_json::from_slice(&http_get(gw.http, "/api/recordings/live/dvr").body).unwrap_or_default();
        v["recordings"][0]["complete"] == true
    });
    assert!(finalized, "no finalized recording");
    // 20 s from the middle of the recording, seeked to its 12th second
    let url = gw.http_url(&format!("/live/dvr.m3u8?start={:.3}&end={:.3}", before + 8.0, before + 28.0));
    let r = run_player(
        json!({"mode": "hls", "url": url, "seconds": 4, "seekTo": 12.0, "vendor": vendor(),
               "screenshot": artifacts().join("hlsjs-recorded-range.png")}),
        |_, _| {},
    );
    assert!(r["ok"].as_bool().unwrap_or(false), "{r}");
    assert!(fatal_errors(&r).is_empty(), "{:?}", fatal_errors(&r));
    let duration = r["duration"].as_f64().unwrap_or(0.0);
    assert!((19.0..=23.5).contains(&duration), "hls.js sees a {duration} s range of 20 s");
    let seeked = r["seekedAt"].as_f64().expect("hls.js never seeked");
    assert!((11.5..=12.5).contains(&seeked), "seeked to {seeked}");
    assert!(r["framesDecoded"].as_u64().unwrap_or(0) > 60, "{r}");
}

/// A gateway in this process with `[https]` on a free port, its certificate signed by a
/// test CA: (gateway, HTTPS base URL, CA file, certificate and key files).
fn https_gateway(name: &str) -> (Gateway, String, std::path::PathBuf, (std::path::PathBuf, std::path::PathBuf)) {
    // play.mjs adds the test CA to Chromium's NSS database with certutil (libnss3-tools)
    require_tool("certutil");
    let dir = scratch_dir(name);
    let (cert, key) = ca_signed_cert(&dir, "server", "livegate test");
    let addr = free_port();
    let gw = Gateway::in_process(&https_config(addr, &cert, &key));
    (gw, format!("https://localhost:{}", addr.port()), dir.join("ca.pem"), (cert, key))
}

#[test]
fn hls_js_plays_low_latency_hls_over_https_and_http2_from_an_https_page() {
    // Chromium trusts the test CA as a user-installed CA (its NSS database), not by
    // ignoring certificate errors
    let (gw, base, ca, (cert, key)) = https_gateway("browser-https-hls");
    let _pub = publish(&gw.rtmp_url("live/tls"), Source { gop: 60, ..Source::default() }, None);
    wait_playlist(&gw, "live/tls", 2);
    let r = run_player(
        json!({"mode": "hls", "url": format!("{base}/live/tls.m3u8"), "seconds": 10, "vendor": vendor(),
               "trustCa": ca, "harnessTls": {"cert": cert, "key": key},
               "screenshot": artifacts().join("hlsjs-https.png")}),
        |_, _| {},
    );
    assert!(r["pageOrigin"].as_str().unwrap_or("").starts_with("https://"), "{}", r["pageOrigin"]);
    assert_played(&r, 10.0);
    assert!(r["canBlockReload"].as_bool().unwrap_or(false), "hls.js saw no CAN-BLOCK-RELOAD");
    assert!(r["parts"].as_u64().unwrap_or(0) >= 6, "hls.js saw {} parts", r["parts"]);
    println!("LL-HLS over HTTPS: protocols {}, latency {} s", r["protocols"], r["latencyAvg"]);
    assert_eq!(r["protocols"], json!(["h2"]), "every media request over HTTP/2");
}

#[test]
fn an_https_page_plays_http_flv_over_https_and_websocket_flv_over_wss() {
    let (gw, base, ca, (cert, key)) = https_gateway("browser-https-flv");
    let _pub = publish(&gw.rtmp_url("live/tlsflv"), Source::default(), None);
    assert!(wait_live(&gw, "live/tlsflv", Duration::from_secs(20)));
    std::thread::sleep(Duration::from_millis(1500));
    let flv = format!("{base}/live/tlsflv.flv");
    for url in [flv.clone(), flv.replacen("https://", "wss://", 1)] {
        let r = run_player(
            json!({"mode": "flv", "url": url, "seconds": 6, "vendor": vendor(),
                   "trustCa": ca, "harnessTls": {"cert": cert, "key": key}}),
            |_, _| {},
        );
        assert!(r["pageOrigin"].as_str().unwrap_or("").starts_with("https://"), "{}", r["pageOrigin"]);
        assert_played(&r, 6.0);
        assert_eq!(r["mediaInfo"]["hasAudio"].as_bool(), Some(true), "{url}: {}", r["mediaInfo"]);
    }
    // the built-in player page loaded over https asks for wss:// in WebSocket mode
    let r = run_player(
        json!({"mode": "page", "url": format!("{base}/live/tlsflv?mode=ws"), "seconds": 6, "trustCa": ca}),
        |_, _| {},
    );
    assert_played(&r, 6.0);
    let last = r["samples"].as_array().unwrap().last().unwrap().clone();
    assert!(last["engine"].as_str().unwrap_or("").contains("WebSocket"), "engine {}", last["engine"]);
    assert!(last["url"].as_str().unwrap_or("").starts_with("wss://"), "the page played {}", last["url"]);
}
