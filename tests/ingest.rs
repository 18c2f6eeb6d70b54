//! End-to-end: the real binary, ffmpeg as publisher and player, ffprobe as judge.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

fn packets(probe: &serde_json::Value, kind: &str) -> Vec<serde_json::Value> {
    probe["packets"].as_array().into_iter().flatten().filter(|p| p["codec_type"] == kind).cloned().collect()
}

fn stream_of<'a>(probe: &'a serde_json::Value, kind: &str) -> Option<&'a serde_json::Value> {
    probe["streams"].as_array()?.iter().find(|s| s["codec_type"] == kind)
}

fn ts(p: &serde_json::Value, field: &str) -> Option<i64> {
    p[field].as_str().and_then(|s| s.parse().ok()).or_else(|| p[field].as_i64())
}

/// Checks a recording: H.264 of the published size with B-frames and
/// non-decreasing DTS starting at a keyframe, plus AAC.
fn check_recording(path: &std::path::Path, width: u64, height: u64) {
    let probe = ffprobe(path.to_str().unwrap(), &["-show_streams", "-show_packets"]);
    let video = stream_of(&probe, "video").expect("video stream");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(width), Some(height)));
    let audio = stream_of(&probe, "audio").expect("audio stream");
    assert_eq!(audio["codec_name"], "aac");
    let vp = packets(&probe, "video");
    assert!(vp.len() > 30, "only {} video packets", vp.len());
    assert!(vp[0]["flags"].as_str().unwrap_or("").starts_with('K'), "first video packet is not a keyframe");
    let dts: Vec<i64> = vp.iter().filter_map(|p| ts(p, "dts")).collect();
    assert!(dts.windows(2).all(|w| w[0] <= w[1]), "video DTS not monotonic: {dts:?}");
    let reordered = vp.iter().filter(|p| ts(p, "pts") != ts(p, "dts")).count();
    assert!(reordered > 0, "expected B-frames (pts != dts)");
    assert!(packets(&probe, "audio").len() > 20);
}

#[test]
fn http_flv_serves_h264_and_aac_with_bframes_from_the_gop_cache() {
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/demo"), Source::default(), None);
    assert!(wait_live(&gw, "live/demo", Duration::from_secs(15)), "stream never went live");
    std::thread::sleep(Duration::from_millis(1500)); // join mid-GOP

    // time from connect to the first video keyframe tag in the body
    let start = Instant::now();
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET /live/demo.flv HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let first_key = loop {
        let n = s.read_some(&mut chunk).expect("read flv");
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
        // a video tag (9) whose body starts with 0x17 0x01 (AVC keyframe NALU)
        if let Some(p) = buf.windows(13).position(|w| w[0] == 9 && w[11] == 0x17 && w[12] == 0x01) {
            break p;
        }
    };
    let elapsed = start.elapsed();
    println!("HTTP-FLV connect to first keyframe: {:.1} ms", elapsed.as_secs_f64() * 1000.0);
    assert!(first_key > 0);
    let head = String::from_utf8_lossy(&buf[..buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap()]).to_string();
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("content-type: video/x-flv"), "{head}");
    assert!(lower.contains("access-control-allow-origin: *"), "{head}");
    assert!(lower.contains("cache-control: no-cache"), "{head}");
    assert!(elapsed < Duration::from_secs(1), "first keyframe took {elapsed:?}: GOP cache not used");
    drop(s);

    let dir = scratch_dir("flv");
    let out = dir.join("rec.flv");
    let r = record(&gw.http_url("/live/demo.flv"), 4, &out);
    assert!(r.status.success(), "ffmpeg http-flv: {}", String::from_utf8_lossy(&r.stderr));
    check_recording(&out, 640, 360);

    // the API sees it
    let api = http_get(gw.http, "/api/streams");
    let json: serde_json::Value = serde_json::from_slice(&api.body).unwrap();
    let s = &json["streams"][0];
    assert_eq!((s["app"].as_str(), s["name"].as_str()), (Some("live"), Some("demo")));
    assert_eq!(s["video"]["width"], 640);
    assert_eq!(s["audio"]["sample_rate"], 44100);
    assert!(s["bytes_in"].as_u64().unwrap() > 10_000);
    let metrics = http_get(gw.http, "/metrics").text();
    assert!(metrics.contains("livegate_streams 1"), "{metrics}");
    assert_eq!(http_get(gw.http, "/healthz").status, 200);
    assert_eq!(http_get(gw.http, "/live/nope.flv").status, 404);
    assert_eq!(http_get(gw.http, "/live/../etc/passwd").status, 400);
}

#[test]
fn rtmp_play_pulls_the_stream() {
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/cam"), Source::default(), None);
    assert!(wait_live(&gw, "live/cam", Duration::from_secs(15)));
    let dir = scratch_dir("rtmp-play");
    let out = dir.join("rec.flv");
    let r = record(&gw.rtmp_url("live/cam"), 4, &out);
    assert!(r.status.success(), "ffmpeg rtmp play: {}", String::from_utf8_lossy(&r.stderr));
    check_recording(&out, 640, 360);
}

#[test]
fn second_publisher_on_a_live_key_is_refused() {
    let gw = Gateway::start();
    let _first = publish(&gw.rtmp_url("live/dup"), Source::default(), None);
    assert!(wait_live(&gw, "live/dup", Duration::from_secs(15)));
    let second = publish(&gw.rtmp_url("live/dup"), Source::default(), None);
    let status = second.wait(Duration::from_secs(15)).expect("second publisher was not closed");
    assert!(!status.success());
    assert!(gw.log().contains("already being published"), "{}", gw.log());
    // the first one is untouched
    let r = http_request(gw.http, "GET", "/live/dup.flv", 200_000, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert!(r.body.len() >= 200_000);
}

#[test]
fn a_reconnecting_encoder_takes_over_from_its_frozen_connection() {
    let gw = Gateway::start();
    let first = publish(&gw.rtmp_url("live/re"), Source::default(), None);
    assert!(wait_live(&gw, "live/re", Duration::from_secs(15)));
    let publisher_of = || {
        let j: serde_json::Value =
            serde_json::from_slice(&http_get(gw.http, "/api/streams/live/re").body).unwrap_or_default();
        j["publisher"].as_str().unwrap_or_default().to_string()
    };
    let old = publisher_of();
    // frozen: its TCP connection stays open but sends nothing, like a half-open connection
    let signal = |sig: &str| {
        let st = std::process::Command::new("kill").args([sig, &first.child.id().to_string()]).status().unwrap();
        assert!(st.success());
    };
    signal("-STOP");
    let started = Instant::now();
    let second = publish(&gw.rtmp_url("live/re"), Source::default(), None);
    assert!(gw.wait_log("taking the stream over", Duration::from_secs(10)), "{}", gw.log());
    assert!(wait_until(Duration::from_secs(10), || {
        let now = publisher_of();
        !now.is_empty() && now != old
    }));
    let took = started.elapsed();
    // the default takeover_idle_ms is 2 s; the old connection was idle-timed-out only after 30 s
    assert!(took < Duration::from_secs(6), "takeover took {took:?}");
    let r = http_request(gw.http, "GET", "/live/re.flv", 200_000, Duration::from_secs(10));
    assert_eq!(r.status, 200);
    assert!(r.body.len() >= 200_000);
    signal("-CONT");
    let status = first.wait(Duration::from_secs(15)).expect("the replaced publisher was not disconnected");
    assert!(!status.success());
    assert!(gw.log().contains("replaced by a new publisher"), "{}", gw.log());
    let mut second = second;
    assert!(second.is_running(), "the new publisher keeps publishing");
    println!("takeover: the new publisher was live {took:?} after the old one froze");
}

#[test]
fn viewers_end_when_the_publisher_stops() {
    // viewers end once the reconnect grace is over (2 s, not the default 10: the bounds
    // below then leave a loaded machine 12 s of slack)
    let gw = Gateway::in_process("[hub]\nreconnect_grace_ms = 2000\n");
    let publisher = publish(&gw.rtmp_url("live/short"), Source::default(), Some(6));
    assert!(wait_live(&gw, "live/short", Duration::from_secs(15)));
    let dir = scratch_dir("ends");
    let rtmp_out = dir.join("rtmp.flv");
    let url = gw.rtmp_url("live/short");
    let rtmp_viewer = std::thread::spawn(move || {
        let start = Instant::now();
        let r = record(&url, 60, &rtmp_out);
        (r, start.elapsed())
    });
    let start = Instant::now();
    let r = http_request(gw.http, "GET", "/live/short.flv", usize::MAX, Duration::from_secs(30));
    let elapsed = start.elapsed();
    assert_eq!(r.status, 200);
    assert!(elapsed < Duration::from_secs(20), "HTTP-FLV body did not end ({elapsed:?})");
    assert!(r.body.len() > 10_000);
    let (rr, rtmp_elapsed) = rtmp_viewer.join().unwrap();
    assert!(rtmp_elapsed < Duration::from_secs(25), "RTMP viewer did not end ({rtmp_elapsed:?})");
    assert!(rr.status.success(), "{}", String::from_utf8_lossy(&rr.stderr));
    assert!(publisher.wait(Duration::from_secs(5)).is_some());
    assert_eq!(http_get(gw.http, "/live/short.flv").status, 404);
}

// ---- hostile input ----

/// Plain handshake as a client; returns the connected socket.
fn handshake(gw: &Gateway) -> TcpStream {
    let mut s = TcpStream::connect(gw.rtmp).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut client = livegate::rtmp::ClientSession::new(Default::default());
    s.write_all(&client.handshake_start()).unwrap();
    let mut s0s1s2 = bytes::BytesMut::zeroed(3073);
    s.read_exact(&mut s0s1s2).unwrap();
    client.handle_input(&mut s0s1s2, &mut Vec::new()).unwrap();
    s.write_all(&client.poll_transmit().unwrap()).unwrap();
    s
}

/// A message in one type-0 chunk on chunk stream 3.
fn chunk0(msg_type: u8, payload: &[u8], declared_len: Option<u32>) -> Vec<u8> {
    let len = declared_len.unwrap_or(payload.len() as u32);
    let mut v = vec![0x03, 0, 0, 0, (len >> 16) as u8, (len >> 8) as u8, len as u8, msg_type, 0, 0, 0, 0];
    v.extend_from_slice(payload);
    v
}

fn set_chunk_size(size: u32) -> Vec<u8> {
    let mut v = vec![0x02, 0, 0, 0, 0, 0, 4, 1, 0, 0, 0, 0];
    v.extend_from_slice(&size.to_be_bytes());
    v
}

/// True when the server closes the connection within the timeout.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 65536];
    while start.elapsed() < within {
        match s.read_some(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false
            }
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn hostile_clients_are_closed_and_good_streams_keep_flowing() {
    let dir = scratch_dir("hostile");
    let cfg = dir.join("livegate.toml");
    std::fs::write(&cfg, "[rtmp]\nhandshake_timeout_ms = 1500\nidle_timeout_ms = 3000\n").unwrap();
    let mut gw = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    let _pub = publish(&gw.rtmp_url("live/good"), Source::default(), None);
    assert!(wait_live(&gw, "live/good", Duration::from_secs(15)));

    // garbage instead of a handshake (an HTTP request gets a status page, then the close)
    for garbage in [&b"\xff\x00garbage"[..], b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"] {
        let mut s = TcpStream::connect(gw.rtmp).unwrap();
        s.write_all(garbage).unwrap();
        assert!(closed_by_server(&mut s, Duration::from_secs(5)), "garbage handshake");
    }

    // truncated handshake, then silence: the handshake timeout closes it
    let mut s = TcpStream::connect(gw.rtmp).unwrap();
    s.write_all(&[3u8; 100]).unwrap();
    assert!(closed_by_server(&mut s, Duration::from_secs(5)), "truncated handshake");

    // connects and sends nothing
    let mut s = TcpStream::connect(gw.rtmp).unwrap();
    assert!(closed_by_server(&mut s, Duration::from_secs(5)), "silent client");

    // chunk size 0, and 2^31
    for size in [0u32, 0x8000_0000] {
        let mut s = handshake(&gw);
        s.write_all(&set_chunk_size(size)).unwrap();
        assert!(closed_by_server(&mut s, Duration::from_secs(5)), "chunk size {size}");
    }

    // a 16 MB message
    let mut s = handshake(&gw);
    s.write_all(&chunk0(9, &[0x17, 1, 0, 0, 0], Some(16 * 1024 * 1024 + 1))).unwrap();
    assert!(closed_by_server(&mut s, Duration::from_secs(5)), "16 MB message");

    // AMF nested 100,000 deep in a command
    let mut s = handshake(&gw);
    s.write_all(&set_chunk_size(4 * 1024 * 1024)).unwrap();
    let mut amf = vec![0x02, 0, 7];
    amf.extend_from_slice(b"connect");
    amf.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..100_000 {
        amf.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
    }
    s.write_all(&chunk0(20, &amf, None)).unwrap();
    assert!(closed_by_server(&mut s, Duration::from_secs(5)), "deep AMF");

    // unknown message type: ignored, connection stays; then silence: idle timeout closes it
    let mut s = handshake(&gw);
    s.write_all(&chunk0(0x42, &[1, 2, 3], None)).unwrap();
    assert!(!closed_by_server(&mut s, Duration::from_millis(500)), "unknown type must not close");
    assert!(closed_by_server(&mut s, Duration::from_secs(6)), "idle timeout");

    // bytes now and then do not keep a connection that neither publishes nor plays
    let mut s = handshake(&gw);
    let start = Instant::now();
    let mut closed = false;
    while start.elapsed() < Duration::from_secs(8) {
        if s.write_all(&chunk0(0x42, &[1], None)).is_err() || closed_by_server(&mut s, Duration::from_millis(500)) {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dripping idle connection was kept open");
    assert!(start.elapsed() < Duration::from_secs(5), "closed only after {:?}", start.elapsed());

    let log = gw.log();
    assert!(log.contains("closing RTMP connection"), "{log}");
    assert!(gw.is_running(), "gateway died");
    assert!(!log.contains("panicked"), "{log}");

    // the good stream still plays
    let out = dir.join("after.flv");
    let r = record(&gw.http_url("/live/good.flv"), 3, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    check_recording(&out, 640, 360);
}
