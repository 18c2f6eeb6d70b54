//! Publisher continuity (`[hub] reconnect_grace_ms`): an encoder restarted within the
//! grace continues the same stream; HTTP-FLV and RTMP viewers stay connected on one
//! timeline and HLS goes on without a discontinuity; after the grace the stream ends.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::hostile::{flv_reader, playlist, Rtmp};
use common::*;

/// (kind, timestamp, is a sequence header) of each complete tag of an FLV body, and where
/// the complete tags end (the body's length when nothing is held back).
fn walk_tags(flv: &[u8]) -> (Vec<(u8, u32, bool)>, usize) {
    assert!(flv.starts_with(b"FLV"), "an FLV body");
    let mut out = Vec::new();
    let mut i = 13;
    while i + 11 <= flv.len() {
        let size = u32::from_be_bytes([0, flv[i + 1], flv[i + 2], flv[i + 3]]) as usize;
        if i + 11 + size + 4 > flv.len() {
            break;
        }
        let ts = u32::from_be_bytes([flv[i + 7], flv[i + 4], flv[i + 5], flv[i + 6]]);
        let body = &flv[i + 11..i + 11 + size];
        let config = body.len() > 1 && body[1] == 0 && matches!(flv[i], 8 | 9);
        out.push((flv[i], ts, config));
        i += 11 + size + 4;
    }
    (out, i)
}

fn tags(flv: &[u8]) -> Vec<(u8, u32, bool)> {
    walk_tags(flv).0
}

/// Checks one viewer's FLV: one header, each track's timestamps never go back, and the
/// timeline has no hole where the publisher was away (the largest step between video tags
/// is about a frame, not the pause).
fn assert_continuous(what: &str, flv: &[u8], pause: Duration) -> u32 {
    assert_eq!(flv.windows(4).filter(|w| w == b"FLV\x01").count(), 1, "{what}: one FLV header (no restart)");
    let tags = tags(flv);
    let mut gap = 0;
    for kind in [8u8, 9] {
        let ts: Vec<u32> = tags.iter().filter(|t| t.0 == kind && !t.2).map(|t| t.1).collect();
        assert!(ts.len() > 50, "{what}: {} tags of type {kind}", ts.len());
        for w in ts.windows(2) {
            assert!(w[1] >= w[0], "{what}: type {kind} went back from {} to {}", w[0], w[1]);
            if kind == 9 {
                gap = gap.max(w[1] - w[0]);
            }
        }
    }
    let pause_ms = pause.as_millis() as u32;
    assert!(gap <= 200 && gap < pause_ms, "{what}: a {gap} ms hole in the timeline after a {pause_ms} ms pause");
    let configs = tags.iter().filter(|t| t.0 == 9 && t.2).count();
    assert_eq!(configs, 1, "{what}: the unchanged video sequence header was not sent again");
    gap
}

#[test]
fn an_encoder_restart_within_the_grace_keeps_every_viewer_on_one_timeline() {
    let gw = Gateway::in_process("[hub]\nreconnect_grace_ms = 4000\n[hls]\nvariant = \"fmp4\"\n");
    let url = gw.rtmp_url("live/cont");
    let first = publish(&url, Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || {
        playlist(&gw, "live/cont").is_some_and(|p| p.matches("#EXTINF").count() >= 2)
    }));
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let flv = flv_reader(gw.http, "live/cont", stop.clone(), count.clone());
    let out = scratch_dir("continuity").join("rtmp.flv");
    let mut rtmp = ffmpeg9_spawn(&["-i", &url, "-c", "copy", "-f", "flv", "-y", out.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(3));

    // the encoder goes away (killed: its TCP connection closes) and comes back after 1 s
    first.stop();
    let left = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(3), || { api(&gw, "live/cont")["waiting_for_publisher_ms"].is_u64() }),
        "the stream waits for its publisher: {}",
        api(&gw, "live/cont")
    );
    // (the console's card says "waiting for publisher" from that field: tests/console.rs)
    // a viewer joining meanwhile is served (the last GOP). What it gets comes at once; the
    // read ends after 1 s, well inside the grace: the GOP cached when the encoder died may be
    // any size, and waiting for more bytes than it holds once took 3 of the grace's 4 s.
    let late = http_request(gw.http, "GET", "/live/cont.flv", 1 << 20, Duration::from_secs(1));
    assert_eq!(late.status, 200);
    let (late_tags, whole) = walk_tags(&late.body);
    assert!(late_tags.iter().any(|t| t.0 == 9 && t.2), "the late viewer gets the video config");
    assert!(late_tags.iter().any(|t| t.0 == 9 && !t.2), "and the cached GOP: {late_tags:?}");
    // with its last tag's size: flv.js and mpegts.js show a frame only once that arrived
    assert_eq!(whole, late.body.len(), "the last frame is whole: {late_tags:?}");
    std::thread::sleep(Duration::from_secs(1).saturating_sub(left.elapsed()));
    let pause = left.elapsed();
    let second = publish(&url, Source::default(), None);
    let before = count.load(Ordering::Relaxed);
    assert!(wait_until(Duration::from_secs(10), || count.load(Ordering::Relaxed) > before + 200_000), "media again");
    std::thread::sleep(Duration::from_secs(3));
    let api_now = api(&gw, "live/cont");
    assert_eq!(api_now["reconnects"], 1, "{api_now}");
    assert!(api_now["waiting_for_publisher_ms"].is_null(), "{api_now}");
    assert!(rtmp.is_running(), "the RTMP viewer is still playing");
    // HLS: the same playlist goes on without a discontinuity
    let pl = playlist(&gw, "live/cont").unwrap();
    assert!(!pl.contains("#EXT-X-DISCONTINUITY") && !pl.contains("#EXT-X-ENDLIST"), "{pl}");

    stop.store(true, Ordering::Relaxed);
    let body = flv.join().unwrap();
    let gap = assert_continuous("HTTP-FLV", &body, pause);
    println!("HTTP-FLV viewer: largest timestamp step {gap} ms across a {pause:?} publisher pause");
    // after the grace the stream ends as before: viewers are told, the playlist ends
    second.stop();
    assert!(wait_until(Duration::from_secs(10), || !rtmp.is_running()), "the RTMP viewer ends after the grace");
    let gap = assert_continuous("RTMP play", &std::fs::read(&out).unwrap(), pause);
    println!("RTMP viewer: largest timestamp step {gap} ms");
    assert!(wait_until(Duration::from_secs(5), || http_get(gw.http, "/api/streams/live/cont").status == 404));
    let pl = playlist(&gw, "live/cont").unwrap_or_default();
    assert!(pl.contains("#EXT-X-ENDLIST"), "ENDLIST right after the grace: {pl}");
}

fn api(gw: &Gateway, key: &str) -> serde_json::Value {
    serde_json::from_slice(&http_get(gw.http, &format!("/api/streams/{key}")).body).unwrap_or_default()
}

#[test]
fn many_short_publishes_and_a_changed_codec_stay_one_stream() {
    let gw = Gateway::in_process("[hub]\nreconnect_grace_ms = 3000\n");
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let mut first = Rtmp::publish(gw.rtmp, "live", "loop").expect("publish");
    first.send_configs(0);
    let flv = flv_reader(gw.http, "live/loop", stop.clone(), count.clone());
    // a reconnect loop: 30 publishes of a few frames each, every one from timestamp 0
    drop(first);
    for _ in 0..30 {
        let mut c = Rtmp::publish(gw.rtmp, "live", "loop").expect("a publish within the grace");
        c.send_configs(0);
        for t in common::hostile::frames_from(0).take(10) {
            c.send_tag(&t).unwrap();
        }
        c.unpublish();
    }
    assert!(
        wait_until(Duration::from_secs(5), || api(&gw, "live/loop")["reconnects"] == 30),
        "{}",
        api(&gw, "live/loop")
    );
    // a publisher from elsewhere with other codecs (audio only): new sequence headers
    let mut other = Rtmp::publish(gw.rtmp, "live", "loop").expect("publish");
    let audio_cfg = common::hostile::source().configs.iter().find(|t| t.kind == 8).unwrap().clone();
    other.send_tag(&audio_cfg).unwrap();
    for t in common::hostile::frames_from(0).filter(|t| t.kind == 8).take(40) {
        other.send_tag(&t).unwrap();
    }
    assert!(
        wait_until(Duration::from_secs(5), || api(&gw, "live/loop")["video"].is_null()),
        "{}",
        api(&gw, "live/loop")
    );
    other.unpublish();
    stop.store(true, Ordering::Relaxed);
    let body = flv.join().unwrap();
    let tags = tags(&body);
    assert_eq!(body.windows(4).filter(|w| w == b"FLV\x01").count(), 1, "one viewer session throughout");
    let ts: Vec<u32> = tags.iter().filter(|t| t.0 == 8 && !t.2).map(|t| t.1).collect();
    assert!(ts.windows(2).all(|w| w[1] >= w[0]), "audio timestamps never go back across 31 publishers");
    assert!(tags.iter().filter(|t| t.0 == 8 && t.2).count() >= 1);
    let list: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams").body).unwrap();
    let listed = list["streams"].as_array().map_or(0, |a| a.iter().filter(|s| s["name"] == "loop").count());
    assert_eq!(listed, 1, "one stream, waiting for its publisher: {list}");
}

const TOKEN: &str = "0123456789abcdef-token";

/// `POST path` with the admin token: the whole answer.
fn post(gw: &Gateway, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp
}

/// A publisher of `live/NAME` from livegate's own client, announcing Enhanced RTMP v2's
/// reconnect capability (`capsEx` 1) when `reconnect`, sending configs and a second of media.
fn publisher(gw: &Gateway, name: &str, reconnect: bool, from_ms: u32) -> Rtmp {
    use livegate::rtmp::amf0::Amf0Value;
    use std::io::Write;
    let mut c = Rtmp::connect(gw.rtmp);
    let caps = if reconnect { vec![("capsEx".to_string(), Amf0Value::Number(1.0))] } else { Vec::new() };
    let mut out = c.client.connect_with("live", caps);
    out.extend(c.client.create_stream());
    out.extend(c.client.publish(1, name));
    c.s.write_all(&out).unwrap();
    assert!(c.wait_for(&[b"NetStream.Publish.Start"], Duration::from_secs(10)).is_some(), "publish");
    c.send_configs(from_ms);
    common::hostile::send_media(&mut c, 0, 1000, 4.0, |t| t + from_ms);
    c
}

#[test]
fn an_admin_drain_asks_a_capable_publisher_to_reconnect_and_closes_another() {
    let gw = Gateway::in_process(&format!("[admin]\ntoken = \"{TOKEN}\"\n[hub]\nreconnect_grace_ms = 5000\n"));
    let (stop, count) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let mut old = publisher(&gw, "drain", true, 0);
    let flv = flv_reader(gw.http, "live/drain", stop.clone(), count.clone());
    let target = format!("rtmp%3A%2F%2F127.0.0.1%3A{}%2Flive", gw.rtmp.port());
    let r = post(&gw, &format!("/api/streams/live/drain/reconnect?tcUrl={target}"));
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("reconnect requested"), "{r}");
    assert!(
        old.wait_for(&[b"NetConnection.Connect.ReconnectRequest"], Duration::from_secs(5)).is_some(),
        "the publisher is asked to reconnect"
    );
    let url = format!("rtmp://127.0.0.1:{}/live", gw.rtmp.port());
    assert!(old.wait_for(&[url.as_bytes()], Duration::from_secs(1)).is_some(), "with the target tcUrl");
    // as an E-RTMP v2 encoder does: the old connection goes on, a new one takes over, the old closes
    common::hostile::send_media(&mut old, 1000, 500, 4.0, |t| t);
    drop(old);
    let new = publisher(&gw, "drain", true, 1500);
    assert!(
        wait_until(Duration::from_secs(5), || api(&gw, "live/drain")["reconnects"] == 1),
        "{}",
        api(&gw, "live/drain")
    );
    drop(new);
    stop.store(true, Ordering::Relaxed);
    let body = flv.join().unwrap();
    assert_eq!(body.windows(4).filter(|w| w == b"FLV\x01").count(), 1, "the viewer stayed on across the move");
    // a publisher that did not announce the capability is disconnected instead
    let mut plain = publisher(&gw, "plain", false, 0);
    let r = post(&gw, "/api/streams/live/plain/reconnect");
    assert!(r.starts_with("HTTP/1.1 200") && r.contains("disconnected"), "{r}");
    assert!(common::hostile::closed_by_server(&mut plain.s, Duration::from_secs(5)));
    assert!(post(&gw, "/api/streams/live/term/reconnect?tcUrl=http%3A%2F%2Fx").starts_with("HTTP/1.1 400"));
    assert!(post(&gw, "/api/streams/live/none/reconnect").starts_with("HTTP/1.1 404"));
}

#[test]
fn sigterm_asks_a_capable_publisher_to_reconnect_before_closing() {
    let mut gw = Gateway::start();
    let mut capable = publisher(&gw, "term", true, 0);
    let mut plain = publisher(&gw, "term2", false, 0);
    let pid = gw.pid();
    let killer = std::thread::spawn(move || {
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    });
    assert!(
        capable.wait_for(&[b"NetConnection.Connect.ReconnectRequest"], Duration::from_secs(5)).is_some(),
        "a capable publisher is asked to reconnect at shutdown"
    );
    assert!(plain.wait_for(&[b"NetStream.Unpublish.Success"], Duration::from_secs(5)).is_some());
    assert!(!String::from_utf8_lossy(&plain.seen).contains("ReconnectRequest"));
    drop(capable);
    killer.join().unwrap();
    assert_eq!(gw.terminate(), Some(0));
}

#[test]
fn within_the_grace_only_the_key_a_stream_was_published_with_continues_or_takes_it_over() {
    // Issue 28 #5 (9): within the reconnect grace any publisher continued a dropped stream,
    // and its viewers got the new publisher's frames; with publish keys, any key holder could.
    let cfg = common::hostile::config_file(
        "grace-keys",
        "[auth]\npublish_keys = [\"key-a\", \"key-b\"]\n[hub]\nreconnect_grace_ms = 6000\n[hls]\nenabled = false\n",
    );
    let gw = Gateway::start_with(&["--config", &cfg]);
    let mut a = Rtmp::publish(gw.rtmp, "live", "s?key=key-a").expect("publish with key a");
    a.send_configs(0);
    common::hostile::send_media(&mut a, 0, 1000, 4.0, |t| t);
    // a silent publisher is taken over only by its own key (takeover_idle_ms: 2 s)
    std::thread::sleep(Duration::from_millis(2500));
    let b = Rtmp::publish(gw.rtmp, "live", "s?key=key-b");
    assert!(b.as_ref().is_err_and(|seen| seen.contains("NetStream.Publish.BadName")), "key b took a's stream over");
    assert_eq!(api(&gw, "live/s")["reconnects"], 0, "{}", api(&gw, "live/s"));
    // a leaves: while the stream waits for it, key b is refused, key a continues it
    drop(a);
    assert!(
        wait_until(Duration::from_secs(3), || api(&gw, "live/s")["waiting_for_publisher_ms"].is_u64()),
        "the stream waits for its publisher: {}",
        api(&gw, "live/s")
    );
    let refused = Rtmp::publish(gw.rtmp, "live", "s?key=key-b").err().expect("key b continued a's stream");
    assert!(refused.contains("waits for its publisher to come back"), "{refused}");
    let mut back = Rtmp::publish(gw.rtmp, "live", "s?key=key-a").expect("key a continues its stream");
    back.send_configs(0);
    let now = api(&gw, "live/s");
    assert_eq!((now["reconnects"].as_u64(), now["waiting_for_publisher_ms"].is_null()), (Some(1), true), "{now}");
    // once the grace is over, another key publishes the name as a new stream
    drop(back);
    assert!(wait_until(Duration::from_secs(15), || http_get(gw.http, "/api/streams/live/s").status == 404));
    let _b = Rtmp::publish(gw.rtmp, "live", "s?key=key-b").expect("key b publishes once the grace is over");
    assert_eq!(api(&gw, "live/s")["reconnects"], 0);
    let m = http_get(gw.http, "/metrics").text();
    assert!(m.contains("livegate_rejected_total{reason=\"waiting_for_publisher\"} 1"), "{m}");
}
