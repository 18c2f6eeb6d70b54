//! The console (`GET /`) and what it reads: `/api/events` (SSE), `/api/stats` and
//! `/api/streams/APP/STREAM/keyframe`, against a gateway in this process, ffmpeg
//! publishers and Debian's Chromium (tests/browser/console.mjs).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::browser::*;
use common::*;
use serde_json::json;

const TOKEN: &str = "console-admin-token-0123456789";

fn config() -> String {
    format!("[admin]\ntoken = \"{TOKEN}\"\n[apps.keyed.auth]\nplay_keys = [\"sesame\"]\n")
}

/// Reads an SSE stream until `done` says so (or `timeout`): the events as (id, kind, data).
fn read_events(
    http: std::net::SocketAddr,
    query: &str,
    last_event_id: Option<&str>,
    timeout: Duration,
    mut done: impl FnMut(&[(String, String, serde_json::Value)]) -> bool,
) -> Vec<(String, String, serde_json::Value)> {
    let mut s = TcpStream::connect(http).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let last = last_event_id.map(|id| format!("Last-Event-ID: {id}\r\n")).unwrap_or_default();
    write!(s, "GET /api/events{query} HTTP/1.1\r\nHost: x\r\n{last}\r\n").unwrap();
    let (mut raw, mut events) = (Vec::new(), Vec::new());
    let start = Instant::now();
    let mut buf = [0u8; 8192];
    while start.elapsed() < timeout && !done(&events) {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
        events = parse_sse(&String::from_utf8_lossy(&raw));
    }
    events
}

/// The events of an SSE body (chunk-size lines of the chunked encoding are not `field:`
/// lines and are skipped).
fn parse_sse(body: &str) -> Vec<(String, String, serde_json::Value)> {
    let body = body.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut out = Vec::new();
    let (mut id, mut kind, mut data) = (String::new(), String::new(), None);
    for line in body.split(['\n']).map(|l| l.trim_end_matches('\r')) {
        if let Some(v) = line.strip_prefix("id: ") {
            id = v.to_string();
        } else if let Some(v) = line.strip_prefix("event: ") {
            kind = v.to_string();
        } else if let Some(v) = line.strip_prefix("data: ") {
            data = serde_json::from_str(v).ok();
        } else if line.is_empty() && !kind.is_empty() {
            out.push((std::mem::take(&mut id), std::mem::take(&mut kind), data.take().unwrap_or_default()));
        }
    }
    out
}

#[test]
fn events_follow_publishes_resume_with_last_event_id_and_say_reset_for_a_lost_id() {
    let gw = Gateway::in_process(&config());
    let key = "live/sse";
    let http = gw.http;
    let watcher = std::thread::spawn(move || {
        read_events(http, "", None, Duration::from_secs(30), |ev| ev.iter().any(|e| e.1 == "unpublish"))
    });
    std::thread::sleep(Duration::from_millis(300));
    let publisher = publish(&gw.rtmp_url(key), Source { width: 320, height: 240, ..Source::default() }, Some(5));
    assert!(wait_live(&gw, key, Duration::from_secs(10)));
    // a refused publish is a warning event (a name that is not valid)
    let _ = publish(&gw.rtmp_url("live/.hidden"), Source::default(), Some(1)).wait(Duration::from_secs(10));
    assert!(publisher.wait(Duration::from_secs(20)).is_some());
    let events = watcher.join().unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.1.as_str()).collect();
    println!("events: {kinds:?}");
    let publish_ev = events.iter().find(|e| e.1 == "publish").expect("a publish event");
    assert_eq!(publish_ev.2["stream"], key);
    assert!(kinds.contains(&"waiting") && kinds.contains(&"unpublish"), "{kinds:?}");
    assert!(kinds.contains(&"stats"), "{kinds:?}");
    let stats = events.iter().rev().find(|e| e.1 == "stats" && e.2["streams"].get(key).is_some()).expect("stats");
    assert!(stats.2["server"]["bytes_in"].as_u64().unwrap() > 0, "{}", stats.2);
    // the ids go up, and resuming after the publish replays what came after it
    let ids: Vec<&str> = events.iter().filter(|e| !e.0.is_empty()).map(|e| e.0.as_str()).collect();
    assert!(ids.len() >= 3, "{ids:?}");
    let replay = read_events(gw.http, "", Some(&publish_ev.0), Duration::from_secs(5), |ev| {
        ev.iter().any(|e| e.1 == "unpublish")
    });
    let replayed: Vec<&str> = replay.iter().filter(|e| !e.0.is_empty()).map(|e| e.1.as_str()).collect();
    let after: Vec<&str> = events
        .iter()
        .filter(|e| !e.0.is_empty())
        .map(|e| e.1.as_str())
        .skip_while(|k| *k != "publish")
        .skip(1)
        .collect();
    assert_eq!(replayed, after, "the replay is what came after the publish");
    assert!(replayed.contains(&"unpublish"));
    // the same through ?last_event_id= (the page's first connection)
    let q = format!("?last_event_id={}", publish_ev.0);
    let replay = read_events(gw.http, &q, None, Duration::from_secs(5), |ev| ev.iter().any(|e| e.1 == "unpublish"));
    assert!(replay.iter().any(|e| e.1 == "waiting"));
    // an id from another run of the server: reset
    let reset = read_events(gw.http, "", Some("abc-3"), Duration::from_secs(5), |ev| ev.iter().any(|e| e.1 == "reset"));
    assert!(reset.iter().any(|e| e.1 == "reset"), "{reset:?}");
    // /api/stats: the newest id and the warnings
    let stats: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/stats").body).unwrap();
    let n = |id: &str| id.rsplit('-').next().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let newest = stats["last_event_id"].as_str().unwrap();
    assert!(n(newest) >= n(ids.last().unwrap()) && newest.split('-').next() == ids[0].split('-').next(), "{newest}");
    let warned = stats["recent_warnings"].as_array().unwrap();
    assert!(warned.iter().any(|w| w["kind"] == "refused" && w["reason"] == "bad_name"), "{stats}");
}

#[test]
fn the_keyframe_endpoint_serves_a_one_sample_mp4_behind_the_play_keys() {
    let gw = Gateway::in_process(&config());
    let _a = publish(&gw.rtmp_url("live/kf"), Source { width: 320, height: 240, ..Source::default() }, None);
    let _b = publish(&gw.rtmp_url("keyed/kf?key=x"), Source { width: 320, height: 240, ..Source::default() }, None);
    assert!(wait_live(&gw, "live/kf", Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(10), || http_get(gw.http, "/api/streams/keyed/kf").status == 200));
    let ok = wait_until(Duration::from_secs(10), || http_get(gw.http, "/api/streams/live/kf/keyframe").status == 200);
    assert!(ok, "no keyframe served");
    let r = http_get(gw.http, "/api/streams/live/kf/keyframe");
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    let dir = scratch_dir("console-keyframe");
    let file = dir.join("kf.mp4");
    std::fs::write(&file, &r.body).unwrap();
    let probe = ffprobe(file.to_str().unwrap(), &["-count_frames", "-show_streams"]);
    let v = &probe["streams"][0];
    assert_eq!(
        (v["codec_name"].as_str(), v["width"].as_u64(), v["nb_read_frames"].as_str()),
        (Some("h264"), Some(320), Some("1")),
        "{probe}"
    );
    // the same keyframe is served from the cache (same bytes) until the next one
    let again = http_get(gw.http, "/api/streams/live/kf/keyframe");
    assert!(again.body == r.body || again.body.len() > 1000);
    assert_eq!(http_get(gw.http, "/api/streams/keyed/kf/keyframe").status, 401);
    assert_eq!(http_get(gw.http, "/api/streams/keyed/kf/keyframe?key=sesame").status, 200);
    assert_eq!(http_get(gw.http, "/api/streams/live/none/keyframe").status, 404);
    let streams: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams/keyed/kf").body).unwrap();
    assert_eq!(streams["play_key_required"], true);
}

#[test]
fn the_console_shows_live_thumbnails_graphs_urls_new_publishes_and_kicks() {
    let gw = Gateway::in_process(&config());
    let small = Source { width: 320, height: 240, ..Source::default() };
    let _h264 = publish(&gw.rtmp_url("live/h264"), small, None);
    let _av1 = ffmpeg9_publish(
        "320x240",
        25,
        48000,
        "-c:v libsvtav1 -preset 12 -g 25 -svtav1-params lp=1 -c:a aac -b:a 64k",
        &gw.rtmp_url("live/av1"),
    );
    let _keyed = publish(&gw.rtmp_url("keyed/cam?key=any"), small, None);
    for k in ["live/h264", "live/av1", "keyed/cam"] {
        let live =
            wait_until(Duration::from_secs(20), || http_get(gw.http, &format!("/api/streams/{k}")).status == 200);
        assert!(live, "{k} is not live");
    }
    // a push target whose URL would inject markup if the page wrote it as HTML
    let inject = "<img/src=x/onerror=window.__pwned=1>";
    let target = format!("rtmp://127.0.0.1:9/app/{inject}/streamkey");
    let (status, body) =
        admin(&gw, "POST", &format!("/api/streams/live/h264/pushes?url={}", pct(&target)), Some(TOKEN));
    assert_eq!(status, 201, "{body}");
    let shot = artifacts().join("console.png");
    let mut late = None;
    let opts = json!({
        "url": gw.http_url("/"),
        "token": TOKEN,
        "expect": ["live/h264", "live/av1", "keyed/cam"],
        "thumbs": ["live/h264", "live/av1"],
        "keyed": "keyed/cam",
        "key": "sesame",
        "late": "live/late",
        "inject": inject,
        "screenshot": shot.to_string_lossy(),
        "phoneScreenshot": artifacts().join("console-phone.png").to_string_lossy(),
    });
    let r = run_script("console.mjs", &opts, |ev, stdin| {
        if ev["step"] == "opened" {
            late = Some(publish(&gw.rtmp_url("live/late"), small, None));
            assert!(wait_live(&gw, "live/late", Duration::from_secs(10)));
            writeln!(stdin, "published").unwrap();
        }
    });
    println!(
        "console: cards {} ms, thumbnails {} ms, new publish shown {} ms",
        r["cardsMs"], r["thumbsMs"], r["lateMs"]
    );
    println!("thumbs {}, spark {}, copied {}", r["thumbs"], r["spark"], r["copied"]);
    assert!(r["errors"].as_array().unwrap().is_empty(), "page errors: {}", r["errors"]);
    assert!(r["dialogs"].as_array().unwrap().is_empty(), "dialogs: {}", r["dialogs"]);
    // thumbnails: pictures of the test pattern (many colours), decoded by WebCodecs
    for k in ["live/h264", "live/av1"] {
        let t = &r["thumbs"][k];
        assert_eq!((t["width"].as_u64(), t["height"].as_u64()), (Some(320), Some(240)), "{k}: {t}");
        assert!(t["colours"].as_u64().unwrap() > 40 && t["lit"].as_u64().unwrap() > 100, "{k}: {t}");
        assert_eq!(t["decoder"], "webcodecs", "{k}: {t}");
    }
    assert!(r["spark"]["drawn"].as_u64().unwrap() > 20, "the graph is drawn: {}", r["spark"]);
    assert!(r["spark"]["text"].as_str().unwrap().contains("bit/s"));
    // the copied URLs work
    let host = format!("http://{}", gw.http);
    let flv = r["copied"]["HTTP-FLV"].as_str().unwrap();
    assert_eq!(flv, format!("{host}/live/h264.flv"));
    let head = http_request(gw.http, "GET", "/live/h264.flv", 13, Duration::from_secs(5));
    assert_eq!(&head.body[..3], b"FLV");
    assert_eq!(r["copied"]["LL-HLS"].as_str().unwrap(), format!("{host}/live/h264.m3u8"));
    assert_eq!(r["copied"]["RTMP play"].as_str().unwrap(), format!("rtmp://127.0.0.1:{}/live/h264", gw.rtmp.port()));
    assert_eq!(r["copied"]["WebSocket-FLV"].as_str().unwrap(), format!("ws://{}/live/h264.flv", gw.http));
    let (ok, _) = ffmpeg9_decode(r["copied"]["RTMP play"].as_str().unwrap(), 1);
    assert!(ok, "the copied RTMP URL plays");
    assert_eq!(r["watchHref"].as_str().unwrap(), format!("{host}/live/h264"));
    // behind play keys: nothing until the key, then the thumbnail and keyed URLs
    assert_eq!(r["keyedBefore"]["thumb"], 0, "{}", r["keyedBefore"]);
    assert_eq!(r["keyedBefore"]["urls"], 0, "{}", r["keyedBefore"]);
    let keyed_urls: Vec<&str> = r["keyedAfter"]["urls"].as_array().unwrap().iter().filter_map(|u| u.as_str()).collect();
    assert!(
        keyed_urls.iter().filter(|u| u.contains(".m3u8") || u.contains(".flv")).all(|u| u.ends_with("?key=sesame")),
        "{keyed_urls:?}"
    );
    // markup in a push URL stays text
    assert_eq!(r["injected"]["pwned"], false);
    assert_eq!(r["injected"]["imgs"], 0);
    // admin: no buttons without the token; kick with it ended the late publisher
    assert_eq!(r["kickBeforeToken"], 0);
    assert_eq!(r["kicked"], true);
    let late = late.expect("the late publisher");
    assert!(late.wait(Duration::from_secs(10)).is_some(), "the kicked publisher's ffmpeg ended");
    let events: Vec<&str> = r["events"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
    assert!(events.contains(&"publish") && events.contains(&"kick") && events.contains(&"unpublish"), "{events:?}");
    assert!(shot.exists());
    // on a phone's screen: nothing wider than it
    assert!(r["phone"]["scrollWidth"].as_u64().unwrap() <= 390, "{}", r["phone"]);
    assert!(r["phone"]["cardWidth"].as_u64().unwrap() <= 390, "{}", r["phone"]);
}

fn pct(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
