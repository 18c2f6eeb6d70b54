//! Operating livegate: auth, callbacks, metrics, API, admin, RTMPS, limits, shutdown.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;

fn config_file(name: &str, text: &str) -> (std::path::PathBuf, String) {
    let dir = scratch_dir(name);
    let path = dir.join("livegate.toml");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap().to_string();
    (dir, p)
}

#[test]
fn stream_keys_gate_publishing_and_playing() {
    let (_dir, cfg) = config_file(
        "keys",
        "[hls]\nvariant = \"mpegts\"\n[auth]\npublish_keys = [\"s3cret\"]\nplay_keys = [\"v1ew\"]\n",
    );
    let gw = Gateway::start_with(&["--config", &cfg]);
    let wrong = publish(&gw.rtmp_url("live/k?key=nope"), Source::default(), None);
    let status = wrong.wait(Duration::from_secs(15)).expect("publisher with a wrong key was not closed");
    assert!(!status.success());
    assert!(gw.log().contains("NetStream.Publish.Unauthorized"), "{}", gw.log());

    let _right = publish(&gw.rtmp_url("live/k?key=s3cret"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || {
        http_request(gw.http, "HEAD", "/live/k.flv?key=v1ew", 0, Duration::from_secs(2)).status == 200
    }));
    assert_eq!(http_request(gw.http, "HEAD", "/live/k.flv", 0, Duration::from_secs(2)).status, 401);
    assert_eq!(http_request(gw.http, "GET", "/live/k.flv?key=bad", 100, Duration::from_secs(2)).status, 401);
    let ok = http_request(gw.http, "GET", "/live/k.flv?key=v1ew", 50_000, Duration::from_secs(5));
    assert_eq!(ok.status, 200);
    assert!(ok.body.len() >= 50_000);
    // RTMP play needs the key too
    let dir = scratch_dir("keys-rtmp");
    let r = record(&gw.rtmp_url("live/k"), 2, &dir.join("no.flv"));
    assert!(!r.status.success(), "RTMP play without a key must fail");
    let r = record(&gw.rtmp_url("live/k?key=v1ew"), 2, &dir.join("yes.flv"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    // HLS: the playlist and every segment need the key; the playlist's segment URIs carry it
    assert_eq!(http_get(gw.http, "/live/k.m3u8").status, 401);
    let mut playlist = String::new();
    assert!(wait_until(Duration::from_secs(15), || {
        playlist = http_get(gw.http, "/live/k.m3u8?key=v1ew").text();
        playlist.contains(".ts")
    }));
    let seg = playlist.lines().find(|l| l.ends_with(".ts?key=v1ew")).unwrap_or_else(|| panic!("{playlist}"));
    let bare = seg.trim_end_matches("?key=v1ew");
    assert_eq!(http_get(gw.http, &format!("/live/{bare}")).status, 401);
    assert_eq!(http_get(gw.http, &format!("/live/{bare}?key=bad")).status, 401);
    let got = http_get(gw.http, &format!("/live/{seg}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body.first(), Some(&0x47), "a TS segment");
    let r = record(&gw.http_url("/live/k.m3u8?key=v1ew"), 2, &dir.join("hls.flv"));
    assert!(r.status.success(), "ffmpeg plays keyed HLS: {}", String::from_utf8_lossy(&r.stderr));
    let metrics = http_get(gw.http, "/metrics").text();
    assert!(metrics.contains("livegate_rejected_total{reason=\"bad_key\"}"), "{metrics}");
}

/// Reads one HTTP request from `conn` and returns its body (`None` when the peer closed first).
fn read_request_body(conn: &TcpStream) -> Option<Vec<u8>> {
    let mut reader = BufReader::new(conn.try_clone().ok()?);
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

/// A tiny callback server: answers 200 when the JSON names an allowed stream, 403 otherwise; records bodies.
fn hook_server(allowed: &'static str) -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let seen = seen2.clone();
            std::thread::spawn(move || {
                let Some(body) = read_request_body(&conn) else { return };
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let allow = json["stream"] == allowed;
                seen.lock().unwrap().push(json);
                let status = if allow { "200 OK" } else { "403 Forbidden" };
                let mut conn = conn;
                let _ = write!(conn, "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            });
        }
    });
    (url, seen)
}

#[test]
fn http_callbacks_allow_deny_and_notify() {
    let (url, seen) = hook_server("yes");
    let (_dir, cfg) = config_file(
        "hooks",
        &format!(
            "[auth]\non_publish = \"{url}\"\non_play = \"{url}\"\non_unpublish = \"{url}\"\non_done = \"{url}\"\n"
        ),
    );
    let gw = Gateway::in_process_file(&cfg);
    // one check order for every output (keys, live, on_play, limits): a stream that is not
    // live costs no callback, over RTMP as over HTTP-FLV
    let probe = std::process::Command::new(require_tool("ffprobe"))
        .args(["-v", "error", "-rw_timeout", "5000000"])
        .arg(gw.rtmp_url("live/absent"))
        .output()
        .expect("run ffprobe");
    assert!(!probe.status.success(), "a play of a stream that is not live succeeded");
    assert_eq!(http_request(gw.http, "GET", "/live/absent.flv", 10_000, Duration::from_secs(5)).status, 404);
    let denied = publish(&gw.rtmp_url("live/no"), Source::default(), None);
    assert!(!denied.wait(Duration::from_secs(15)).expect("denied publisher not closed").success());
    let allowed = publish(&gw.rtmp_url("live/yes?token=abc"), Source::default(), Some(4));
    assert!(wait_live(&gw, "live/yes", Duration::from_secs(15)));
    let r = http_request(gw.http, "GET", "/live/yes.flv", 10_000, Duration::from_secs(5));
    assert_eq!(r.status, 200);
    let played = ffprobe(&gw.rtmp_url("live/yes"), &["-show_streams"]);
    assert!(played["streams"].as_array().is_some_and(|s| !s.is_empty()), "{played}");
    assert!(allowed.wait(Duration::from_secs(20)).is_some());
    assert!(wait_until(Duration::from_secs(10), || {
        let s = seen.lock().unwrap();
        s.iter().any(|j| j["action"] == "unpublish") && s.iter().any(|j| j["action"] == "done")
    }));
    let s = seen.lock().unwrap();
    let publish_yes = s.iter().find(|j| j["action"] == "publish" && j["stream"] == "yes").expect("on_publish");
    assert_eq!(publish_yes["app"], "live");
    assert_eq!(publish_yes["protocol"], "rtmp");
    assert_eq!(publish_yes["query"], "token=abc");
    assert!(publish_yes["client"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(s.iter().any(|j| j["action"] == "publish" && j["stream"] == "no"));
    assert!(s.iter().any(|j| j["action"] == "play" && j["protocol"] == "http_flv"));
    assert!(s.iter().any(|j| j["action"] == "play" && j["protocol"] == "rtmp" && j["stream"] == "yes"));
    assert!(!s.iter().any(|j| j["stream"] == "absent"), "on_play was asked about a stream that is not live");
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

#[test]
fn metrics_api_and_admin_kick() {
    let (_dir, cfg) = config_file("metrics", "[admin]\ntoken = \"0123456789abcdef-token\"\n");
    let gw = Gateway::in_process_file(&cfg);
    let before = http_get(gw.http, "/metrics");
    assert!(before.header("content-type").unwrap().contains("openmetrics-text"));
    // every sample line parses as `name{labels} value`
    for line in before.text().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let value = line.rsplit(' ').next().unwrap();
        assert!(value.parse::<f64>().is_ok(), "bad sample line {line:?}");
    }
    let publisher = publish(&gw.rtmp_url("live/m"), Source::default(), None);
    assert!(wait_live(&gw, "live/m", Duration::from_secs(15)));
    let _ = http_request(gw.http, "GET", "/live/m.flv", 100_000, Duration::from_secs(5));
    let _ = http_get(gw.http, "/live/m.m3u8"); // an HLS client: counted for 10 s after its last playlist fetch
                                               // the HLS client; the HTTP-FLV one is gone once the server noticed its close
    assert!(
        wait_until(Duration::from_secs(5), || metric(&http_get(gw.http, "/metrics").text(), "livegate_viewers") == 1.0)
    );
    let after = http_get(gw.http, "/metrics").text();
    assert_eq!(metric(&after, "livegate_streams"), 1.0);
    assert!(metric(&after, "livegate_bytes_in_total") > metric(&before.text(), "livegate_bytes_in_total"));
    assert!(metric(&after, "livegate_bytes_out_total") >= 100_000.0, "{after}");
    assert!(metric(&after, "livegate_connections_total") >= 2.0);
    assert!(metric(&after, "livegate_publishes_total") >= 1.0);

    let one: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams/live/m").body).unwrap();
    assert_eq!(one["name"], "m");
    assert_eq!(one["viewers"]["hls"], 1);
    assert_eq!(one["viewers"]["http_flv"], 0);
    assert_eq!(one["video"]["codec"].as_str().map(|c| c.starts_with("avc1.")), Some(true));
    assert!(one["publisher"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(http_get(gw.http, "/api/streams/live/none").status, 404);

    // admin: token required, then the publisher is disconnected
    let kick = |auth: Option<&str>| {
        let mut s = TcpStream::connect(gw.http).unwrap();
        let header = auth.map(|a| format!("Authorization: Bearer {a}\r\n")).unwrap_or_default();
        write!(s, "DELETE /api/streams/live/m HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n").unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    assert!(kick(None).starts_with("HTTP/1.1 401"));
    assert!(kick(Some("wrong-token-wrong-token")).starts_with("HTTP/1.1 401"));
    assert!(kick(Some("0123456789abcdef-token")).starts_with("HTTP/1.1 200"));
    assert!(publisher.wait(Duration::from_secs(10)).is_some(), "kicked publisher still running");
    assert!(wait_until(Duration::from_secs(5), || http_get(gw.http, "/api/streams/live/m").status == 404));
}

#[test]
fn admin_api_is_off_without_a_token() {
    let gw = Gateway::in_process("");
    let mut s = TcpStream::connect(gw.http).unwrap();
    write!(
        s,
        "DELETE /api/streams/live/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer anything\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    assert!(resp.starts_with("HTTP/1.1 404"), "{resp}");
}

/// A self-signed certificate and key for 127.0.0.1 in `dir` (openssl): (cert, key).
fn self_signed_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    require_tool("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

#[test]
fn rtmps_publish_with_ffmpeg() {
    let dir = scratch_dir("rtmps");
    let (cert, key) = self_signed_cert(&dir);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("livegate.toml");
    std::fs::write(
        &cfg,
        format!("[rtmps]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display()),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    assert!(gw.wait_log("RTMPS listening on", Duration::from_secs(5)));
    let _pub = publish(&format!("rtmps://127.0.0.1:{port}/live/tls"), Source::default(), None);
    assert!(wait_live(&gw, "live/tls", Duration::from_secs(20)), "{}", gw.log());
    let out = dir.join("tls.flv");
    let r = record(&gw.http_url("/live/tls.flv"), 3, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let probe = ffprobe(out.to_str().unwrap(), &["-show_streams"]);
    assert_eq!(probe["streams"].as_array().unwrap().len(), 2);
    // RTMPS play
    let r = record(&format!("rtmps://127.0.0.1:{port}/live/tls"), 2, &dir.join("play.flv"));
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
}

#[test]
fn limits_refuse_the_next_connection_stream_and_viewer() {
    let (_dir, cfg) = config_file(
        "limits",
        "[limits]\nmax_rtmp_connections = 2\nmax_streams = 1\nmax_viewers_per_stream = 1\n[rtmp]\nhandshake_timeout_ms = 20000\n",
    );
    let gw = Gateway::start_with(&["--config", &cfg]);
    let _p = publish(&gw.rtmp_url("live/one"), Source::default(), None);
    assert!(wait_live(&gw, "live/one", Duration::from_secs(15)));
    // one RTMP connection is in use by the publisher; one more fits, the third is refused
    let mut second = TcpStream::connect(gw.rtmp).unwrap();
    second.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut third = TcpStream::connect(gw.rtmp).unwrap();
    third.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    assert!(matches!(third.read_some(&mut buf), Ok(0) | Err(_)), "third connection should be closed");
    assert!(second.read_some(&mut buf).is_err(), "second connection should stay open (read times out)");
    assert!(gw.log().contains("connection limit reached"));
    drop(second);
    std::thread::sleep(Duration::from_millis(300));
    // a second stream is refused (max_streams = 1)
    let other = publish(&gw.rtmp_url("live/two"), Source::default(), None);
    assert!(!other.wait(Duration::from_secs(15)).expect("second stream not refused").success());
    // one viewer fits, the second gets 503
    let viewer = std::thread::spawn({
        let http = gw.http;
        move || http_request(http, "GET", "/live/one.flv", 400_000, Duration::from_secs(8))
    });
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(http_request(gw.http, "GET", "/live/one.flv", 10, Duration::from_secs(3)).status, 503);
    assert_eq!(viewer.join().unwrap().status, 200);
    let m = http_get(gw.http, "/metrics").text();
    for reason in ["connection_limit", "stream_limit", "viewer_limit"] {
        assert!(m.contains(&format!("livegate_rejected_total{{reason=\"{reason}\"}}")), "{reason}: {m}");
    }
}

#[test]
fn sigterm_flushes_hls_ends_playlists_and_exits_zero() {
    let dir = scratch_dir("sigterm");
    let mut gw = Gateway::start_with(&["--hls-dir", dir.to_str().unwrap()]);
    let _p = publish(&gw.rtmp_url("live/bye"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(20), || {
        std::fs::read_to_string(dir.join("live/bye.m3u8")).is_ok_and(|t| t.matches("#EXTINF").count() >= 2)
    }));
    let viewer = std::thread::spawn({
        let http = gw.http;
        move || http_request(http, "GET", "/live/bye.flv", usize::MAX, Duration::from_secs(30))
    });
    std::thread::sleep(Duration::from_millis(500));
    let started = std::time::Instant::now();
    assert_eq!(gw.terminate(), Some(0), "exit code after SIGTERM");
    assert!(started.elapsed() < Duration::from_secs(6), "took {:?}", started.elapsed());
    let playlist = std::fs::read_to_string(dir.join("live/bye.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
    let body = viewer.join().unwrap();
    assert_eq!(body.status, 200);
    assert!(body.body.len() > 1000);
    // the HTTP-FLV body was ended, not cut: whole tags, then the last PreviousTagSize
    let tags = livegate::flv::file::read_tags(&bytes::Bytes::from(body.body.clone())).expect("whole FLV tags");
    let last = tags.last().expect("FLV tags");
    let tail = body.body[body.body.len() - 4..].try_into().map(u32::from_be_bytes).unwrap_or(0);
    assert_eq!(tail as usize, 11 + last.body.len(), "the FLV ends with its last tag's PreviousTagSize");
}

#[test]
fn bad_config_is_rejected_at_start_with_file_key_and_reason() {
    let (_dir, cfg) = config_file("badcfg", "[rtmp]\nlisten = \"0.0.0.0:1935\"\nchunk_sise = 4096\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_livegate")).args(["--config", &cfg]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("livegate.toml") && err.contains("chunk_sise"), "{err}");
}

#[test]
fn sighup_reloads_keys_and_limits_and_leaves_live_streams_alone() {
    let (_dir, cfg) = config_file("reload", "[auth]\nplay_keys = [\"old\"]\n");
    let gw = Gateway::start_with(&["--config", &cfg]);
    let _publisher = publish(&gw.rtmp_url("live/r"), Source::default(), None);
    let head = |q: &str| http_request(gw.http, "HEAD", &format!("/live/r.flv{q}"), 0, Duration::from_secs(2)).status;
    let publisher_of = || -> serde_json::Value {
        serde_json::from_slice(&http_get(gw.http, "/api/streams/live/r").body).unwrap_or_default()
    };
    assert!(wait_until(Duration::from_secs(15), || head("?key=old") == 200));
    assert_eq!(head("?key=new"), 401);
    let before = publisher_of();
    // a viewer that joined under the old key stays
    let mut viewer = TcpStream::connect(gw.http).unwrap();
    viewer.write_all(b"GET /live/r.flv?key=old HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    viewer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    assert!(viewer.read_some(&mut buf).unwrap() > 0);
    let hup = || {
        let st = std::process::Command::new("kill").args(["-HUP", &gw.pid().to_string()]).status().unwrap();
        assert!(st.success());
    };

    let text =
        "[auth]\nplay_keys = [\"new\"]\n[limits]\nmax_viewers_per_stream = 1\n[rtmp]\nhandshake_timeout_ms = 5000\n";
    std::fs::write(&cfg, text).unwrap();
    hup();
    assert!(gw.wait_log("configuration reloaded", Duration::from_secs(10)), "{}", gw.log());
    assert!(gw.log().contains("changed rtmp only take effect after a restart"), "{}", gw.log());
    assert_eq!(head("?key=old"), 401);
    // the one viewer allowed is already there (it joined before): a second is refused
    let second = http_request(gw.http, "GET", "/live/r.flv?key=new", 100, Duration::from_secs(2));
    assert_eq!(second.status, 503);
    let mut total = 0;
    while total < 300_000 {
        total += viewer.read_some(&mut buf).expect("the earlier viewer keeps receiving");
    }
    drop(viewer);
    assert!(wait_until(Duration::from_secs(5), || head("?key=new") == 200));
    let after = publisher_of();
    assert_eq!(after["publisher"], before["publisher"], "the stream was not restarted");
    assert!(after["uptime_s"].as_f64() >= before["uptime_s"].as_f64(), "{before} {after}");

    // a broken file changes nothing
    std::fs::write(&cfg, "[auth]\nplay_keyz = [\"x\"]\n").unwrap();
    hup();
    assert!(gw.wait_log("configuration reload failed", Duration::from_secs(10)), "{}", gw.log());
    assert!(gw.log().contains("play_keyz"), "the log names the bad key: {}", gw.log());
    assert_eq!(head("?key=new"), 200);
    assert_eq!(head("?key=old"), 401);
}

#[test]
fn app_auth_inherits_what_it_does_not_set_and_keyed_segments_are_private() {
    let (_dir, cfg) = config_file(
        "app-auth",
        "[hls]\nvariant = \"mpegts\"\n[auth]\nplay_keys = [\"v1ew\"]\n[apps.cam.auth]\npublish_keys = [\"camkey\"]\n[apps.open.auth]\nplay_keys = []\n",
    );
    let gw = Gateway::in_process_file(&cfg);
    let started_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let _cam = publish(&gw.rtmp_url("cam/x?key=camkey"), Source::default(), None);
    let _open = publish(&gw.rtmp_url("open/y"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || {
        http_request(gw.http, "HEAD", "/cam/x.flv?key=v1ew", 0, Duration::from_secs(2)).status == 200
    }));
    // [apps.cam.auth] sets only publish_keys: playing still needs the global play key
    assert_eq!(http_request(gw.http, "HEAD", "/cam/x.flv", 0, Duration::from_secs(2)).status, 401);
    assert_eq!(http_request(gw.http, "GET", "/cam/x.flv", 100, Duration::from_secs(2)).status, 401);
    assert_eq!(http_get(gw.http, "/cam/x.m3u8").status, 401);
    // [apps.open.auth] play_keys = [] opens it explicitly
    assert!(wait_live(&gw, "open/y", Duration::from_secs(15)));
    let head = http_request(gw.http, "HEAD", "/open/y.flv", 0, Duration::from_secs(2));
    assert_eq!(head.header("content-length"), None, "the endless FLV body has no length");
    assert_eq!(http_request(gw.http, "GET", "/open/y.flv", 100, Duration::from_secs(5)).status, 200);

    let mut keyed = String::new();
    let mut open = String::new();
    assert!(wait_until(Duration::from_secs(15), || {
        keyed = http_get(gw.http, "/cam/x.m3u8?key=v1ew").text();
        open = http_get(gw.http, "/open/y.m3u8").text();
        keyed.contains(".ts") && open.contains(".ts")
    }));
    let seg = keyed.lines().find(|l| l.ends_with(".ts?key=v1ew")).unwrap().to_string();
    let bare = seg.trim_end_matches("?key=v1ew");
    assert_eq!(http_get(gw.http, &format!("/cam/{bare}")).status, 401, "no segment without the key");
    let got = http_get(gw.http, &format!("/cam/{seg}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.header("cache-control"), Some("private, max-age=31536000, immutable"));
    let open_seg = open.lines().find(|l| l.ends_with(".ts")).unwrap();
    let got = http_get(gw.http, &format!("/open/{open_seg}"));
    assert_eq!(got.header("cache-control"), Some("public, max-age=31536000, immutable"));
    // the segment token is random: not the publish start time (which /api/streams shows)
    let token = bare.strip_suffix(".ts").unwrap().rsplit('-').nth(1).unwrap();
    assert_eq!(token.len(), 16, "{token}");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let as_time = u64::from_str_radix(token, 16).unwrap();
    assert!(!(started_ms - 60_000..=now_ms).contains(&as_time), "token {token} is a timestamp");
    // HEAD on a playlist and a segment carries the length GET sends
    for path in [format!("/open/{open_seg}"), "/open/y.m3u8".to_string()] {
        let get = http_get(gw.http, &path);
        let head = http_request(gw.http, "HEAD", &path, 0, Duration::from_secs(2));
        assert_eq!(head.status, 200);
        let len: usize = head.header("content-length").unwrap_or_else(|| panic!("{path}: no length")).parse().unwrap();
        if path.ends_with(".ts") {
            assert_eq!(len, get.body.len(), "{path}");
        } else {
            assert!(len > 0, "{path}");
        }
    }
}

/// Requests seen by a callback server, and (in flight now, most in flight).
type HookCounts = (Arc<std::sync::atomic::AtomicUsize>, Arc<Mutex<(usize, usize)>>);

/// A callback server that answers 200 after `delay`, counting requests and the most in flight.
fn slow_hook_server(delay: Duration) -> (String, HookCounts) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let count = Arc::new(AtomicUsize::new(0));
    // (in flight now, most in flight)
    let flight = Arc::new(Mutex::new((0usize, 0usize)));
    let (count2, flight2) = (count.clone(), flight.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            let (count, flight) = (count2.clone(), flight2.clone());
            std::thread::spawn(move || {
                let Some(_body) = read_request_body(&conn) else { return };
                count.fetch_add(1, Ordering::SeqCst);
                {
                    let mut f = flight.lock().unwrap();
                    f.0 += 1;
                    f.1 = f.1.max(f.0);
                }
                // wait `delay`, or until livegate gives up on the callback and closes the
                // connection: then it is no longer in flight on livegate's side either
                let mut conn = conn;
                let until = std::time::Instant::now() + delay;
                conn.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                let mut byte = [0u8; 1];
                while std::time::Instant::now() < until {
                    match conn.read_some(&mut byte) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                        }
                        Err(_) => break,
                    }
                }
                flight.lock().unwrap().0 -= 1;
                let _ = write!(conn, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            });
        }
    });
    (url, (count, flight))
}

#[test]
fn play_callbacks_are_asked_only_for_live_streams_for_head_too_and_capped() {
    use std::sync::atomic::Ordering;
    let (url, (count, flight)) = slow_hook_server(Duration::from_millis(500));
    let (_dir, cfg) = config_file(
        "hook-cap",
        &format!("[auth]\non_play = \"{url}\"\ncallback_timeout_ms = 1500\n[limits]\nmax_concurrent_callbacks = 4\n"),
    );
    let gw = Gateway::start_with(&["--config", &cfg]);
    // 200 requests for a name that is not live: 404 each, and no callback at all
    let statuses: Vec<u16> = (0..200)
        .map(|_| {
            std::thread::spawn({
                let http = gw.http;
                move || http_request(http, "GET", "/live/nobody.flv", 0, Duration::from_secs(5)).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    assert_eq!(count.load(Ordering::SeqCst), 0, "callbacks for a stream that is not live");
    assert_eq!(http_request(gw.http, "HEAD", "/live/nobody.flv", 0, Duration::from_secs(2)).status, 404);

    let _p = publish(&gw.rtmp_url("live/cap"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || gw.log().contains("publishing")));
    // HEAD asks the callback like GET
    let before = count.load(Ordering::SeqCst);
    assert!(wait_until(Duration::from_secs(15), || {
        http_request(gw.http, "HEAD", "/live/cap.flv", 0, Duration::from_secs(3)).status == 200
    }));
    assert!(count.load(Ordering::SeqCst) > before, "HEAD asked the callback");
    // 20 viewers at once with a 500 ms callback, 4 at a time, 1.5 s to get an answer (a
    // second of slack for a loaded machine): at most 4 in flight; the first 4 are answered,
    // those that got a slot late time out (403), those that cannot get a slot in time
    // (at most 12 can in 1.5 s) get 503
    let statuses: Vec<u16> = (0..20)
        .map(|_| {
            std::thread::spawn({
                let http = gw.http;
                move || http_request(http, "GET", "/live/cap.flv", 1000, Duration::from_secs(5)).status
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    let most = flight.lock().unwrap().1;
    println!("callback cap: statuses {statuses:?}, most callbacks in flight {most}");
    assert!(most <= 4, "{most} callbacks in flight");
    assert!(statuses.iter().filter(|s| **s == 200).count() >= 4, "{statuses:?}");
    assert!(statuses.contains(&503), "past the cap: 503 {statuses:?}");
    assert!(statuses.iter().all(|s| [200, 403, 503].contains(s)), "{statuses:?}");
    let m = http_get(gw.http, "/metrics").text();
    assert!(m.contains("livegate_rejected_total{reason=\"callback_busy\"}"), "{m}");
}

/// True when the server closes a fresh connection at once (refused at accept).
fn refused_at_accept(addr: std::net::SocketAddr) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    matches!(s.read_some(&mut buf), Ok(0) | Err(_))
        && {
            // a read timeout is an error too: tell it apart from a close
            let mut s2 = s;
            s2.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
            !matches!(s2.read_some(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut)
        }
}

#[test]
fn rtmp_and_rtmps_share_one_connection_limit_and_per_address_limits_apply() {
    let dir = scratch_dir("shared-limit");
    let (cert, key) = self_signed_cert(&dir);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cfg = dir.join("livegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[rtmp]\nhandshake_timeout_ms = 20000\n[rtmps]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n\
             [limits]\nmax_rtmp_connections = 2\nmax_http_connections_per_ip = 3\n",
            cert.display(),
            key.display()
        ),
    )
    .unwrap();
    let gw = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    assert!(gw.wait_log("RTMPS listening on", Duration::from_secs(5)));
    let rtmps: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    // one RTMP and one RTMPS connection use up the shared limit of 2
    let _plain = TcpStream::connect(gw.rtmp).unwrap();
    let _tls = TcpStream::connect(rtmps).unwrap();
    // (the two listeners accept on their own: give a loaded machine time to take both)
    std::thread::sleep(Duration::from_secs(1));
    assert!(refused_at_accept(gw.rtmp), "a third connection over RTMP is refused");
    assert!(refused_at_accept(rtmps), "a third connection over RTMPS is refused");
    // three HTTP connections from one address fit, the fourth is refused; a request on
    // one that fits is answered
    let idle: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(gw.http).unwrap()).collect();
    std::thread::sleep(Duration::from_secs(1));
    assert!(refused_at_accept(gw.http), "a fourth HTTP connection from the same address is refused");
    drop(idle);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(http_get(gw.http, "/healthz").status, 200);
    let m = http_get(gw.http, "/metrics").text();
    assert!(m.contains("livegate_rejected_total{reason=\"connection_limit\"} 2"), "{m}");
    assert!(m.contains("livegate_rejected_total{reason=\"connection_limit_per_ip\"} 1"), "{m}");
    assert!(gw.log().contains("per-address connection limit reached"));
}

/// The listen backlog of the socket listening on `addr` (`ss`'s Send-Q of a LISTEN socket).
fn listen_backlog(addr: std::net::SocketAddr) -> u32 {
    require_tool("ss");
    let out = std::process::Command::new("ss").args(["-Hltn"]).output().expect("run ss");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(addr.to_string().as_str()))
        .unwrap_or_else(|| panic!("{addr} not listening: {text}"));
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[test]
fn listen_backlogs_default_to_4096_capped_by_somaxconn_and_are_configurable() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    let gw = Gateway::start();
    assert_eq!(listen_backlog(gw.rtmp), 4096.min(somaxconn));
    assert_eq!(listen_backlog(gw.http), 4096.min(somaxconn));
    let (_dir, cfg) = config_file("backlog", "[rtmp]\nbacklog = 64\n[http]\nbacklog = 100\n");
    let gw = Gateway::start_with(&["--config", &cfg]);
    assert_eq!(listen_backlog(gw.rtmp), 64);
    assert_eq!(listen_backlog(gw.http), 100);
}

#[test]
fn http_on_the_rtmp_port_gets_a_status_page_and_rtmp_still_works() {
    let gw = Gateway::in_process("[rtmp]\nhandshake_timeout_ms = 1000\n");
    let publisher = publish(&gw.rtmp_url("live/probe"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || http_get(gw.http, "/api/streams/live/probe").status == 200));
    // what a browser opening http://HOST:1935/ sends, as curl does
    let out = std::process::Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", &format!("http://127.0.0.1:{}/", gw.rtmp.port())])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "curl: {}{text}", String::from_utf8_lossy(&out.stderr));
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("the RTMP server is running") && text.contains("Live streams: 1"), "{text}");
    assert!(text.contains(&format!("http://127.0.0.1:{}/", gw.http.port())), "a link to the HTTP port: {text}");
    // an HTTP request that never finishes its head is closed at the handshake timeout
    let mut slow = TcpStream::connect(gw.rtmp).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    assert!(rest.is_empty() && started.elapsed() < Duration::from_secs(4), "{:?} {rest:?}", started.elapsed());
    // RTMP on the same port is untouched: the publish still plays
    let (ok, text) = ffmpeg9_decode(&gw.rtmp_url("live/probe"), 1);
    assert!(ok && text.contains("Video:"), "{text}");
    drop(publisher);
}

#[test]
fn a_default_start_says_once_that_publishing_is_open_and_nothing_about_its_own_limits() {
    // Issue 28 #10: a fresh install is an open relay and said nothing; on a machine with a
    // 20,000 open-file limit it warned at every start that its own default connection
    // limits (10,000 + 10,000 + 256 kept free) do not fit.
    let gw = Gateway::start_limited(&["--nofile=20000"], &[]);
    // the limits line comes after the publishing check: once it is there, both were logged
    assert!(gw.wait_log("scaled to the open-file limit of 20000", Duration::from_secs(10)), "{}", gw.log());
    let log = gw.log();
    let open: Vec<&str> = log.lines().filter(|l| l.contains("publishing is open to everyone")).collect();
    assert_eq!(open.len(), 1, "one warning: {log}");
    assert!(open[0].contains("WARN") && open[0].contains("[auth] publish_keys"), "names the setting: {}", open[0]);
    let limits: Vec<&str> =
        log.lines().filter(|l| l.contains("WARN") && (l.contains("open-file") || l.contains("limits."))).collect();
    assert!(limits.is_empty(), "a default does not warn about itself: {limits:?}");
    drop(gw);
    // publish keys close it: no warning; an app that opens it again is named
    for (toml, expect) in [
        ("[auth]\npublish_keys = [\"k\"]\n", None),
        ("[auth]\non_publish = \"http://127.0.0.1:9/p\"\n", None),
        ("[auth]\npublish_keys = [\"k\"]\n[apps.open.auth]\npublish_keys = []\n", Some("app(s) open")),
    ] {
        let (_dir, cfg) = config_file("open-publish", toml);
        let gw = Gateway::start_limited(&["--nofile=20000"], &["--config", &cfg]);
        assert!(gw.wait_log("scaled to the open-file limit", Duration::from_secs(10)), "{}", gw.log());
        let log = gw.log();
        let open: Vec<&str> = log.lines().filter(|l| l.contains("publishing is open to everyone")).collect();
        match expect {
            None => assert!(open.is_empty(), "{toml}: {open:?}"),
            Some(app) => assert!(open.len() == 1 && open[0].contains(app), "{toml}: {open:?}"),
        }
    }
}

/// Every URI a playlist names: (the tag naming it, or "" for a URI line; the URI).
fn playlist_uris(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let Some(tag) = line.strip_prefix('#') else {
            out.push((String::new(), line.to_string()));
            continue;
        };
        let name = tag.split(':').next().unwrap_or("");
        for part in tag.split("URI=\"").skip(1) {
            out.push((name.to_string(), part.split('"').next().unwrap_or("").to_string()));
        }
    }
    out
}

#[test]
fn keyed_low_latency_hls_puts_the_key_on_every_uri_a_playlist_names() {
    // Play keys, Low-Latency HLS (the default) and a multitrack publish (a ladder): the
    // multivariant playlist names the variant playlists and the alternate audio
    // (EXT-X-MEDIA); a rendition's playlist its init segment (EXT-X-MAP), parts
    // (EXT-X-PART), the next part (EXT-X-PRELOAD-HINT), segments and the other renditions
    // (EXT-X-RENDITION-REPORT). Each URI, resolved as a player does, is served with the key
    // it carries and refused (401) without it.
    use common::hostile::ladder_publisher;
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_dir, cfg) = config_file("keyed-ll", "[auth]\nplay_keys = [\"v1ew\"]\n");
    let gw = Gateway::in_process_file(&cfg);
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = ladder_publisher(gw.rtmp, "live/lad", stop.clone());
    let mut multivariant = String::new();
    let mut rendition = String::new();
    let ready = wait_until(Duration::from_secs(20), || {
        multivariant = http_get(gw.http, "/live/lad.m3u8?key=v1ew").text();
        rendition = http_get(gw.http, "/live/lad~0.m3u8?key=v1ew").text();
        multivariant.matches("#EXT-X-STREAM-INF:").count() == 2
            && multivariant.contains("#EXT-X-MEDIA:")
            && ["#EXT-X-MAP:", "#EXT-X-PART:", "#EXT-X-PRELOAD-HINT:", "#EXT-X-RENDITION-REPORT:", "#EXTINF:"]
                .iter()
                .all(|tag| rendition.contains(tag))
    });
    assert!(ready, "the ladder:\n{multivariant}\n{rendition}");
    assert_eq!(http_get(gw.http, "/live/lad.m3u8").status, 401);
    let mut kinds = std::collections::BTreeSet::new();
    for (tag, uri) in playlist_uris(&multivariant).into_iter().chain(playlist_uris(&rendition)) {
        let kind =
            if tag.is_empty() { uri.split('?').next().unwrap().rsplit('.').next().unwrap().to_string() } else { tag };
        let bare = uri.strip_suffix("?key=v1ew").unwrap_or_else(|| panic!("{kind} URI {uri} lacks the key"));
        let with = http_get(gw.http, &format!("/live/{uri}"));
        assert_eq!(with.status, 200, "{kind} {uri}");
        assert_eq!(http_get(gw.http, &format!("/live/{bare}")).status, 401, "{kind} {bare} without the key");
        kinds.insert(kind);
    }
    println!("keyed LL-HLS: URI kinds fetched with and without the key: {kinds:?}");
    for kind in
        ["EXT-X-MEDIA", "m3u8", "EXT-X-MAP", "EXT-X-PART", "EXT-X-PRELOAD-HINT", "EXT-X-RENDITION-REPORT", "m4s"]
    {
        assert!(kinds.contains(kind), "no {kind} URI checked: {kinds:?}");
    }
    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
}
