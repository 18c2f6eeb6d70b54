//! HTTPS (`[https]`): a test CA and a certificate for 127.0.0.1/localhost made with
//! openssl; curl asks over HTTP/2 (ALPN) and HTTP/1.1, LL-HLS requests multiplex on one
//! HTTP/2 connection, ffprobe reads HTTP-FLV over TLS; the binary reloads its certificate on
//! SIGHUP (connections open keep going; a garbage file keeps the old pair); a TCP connection
//! that never starts its handshake is closed by the first-head deadline.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// curl (`args` first), with the test CA: (HTTP version, status, body).
fn curl(ca: &Path, args: &[&str], url: &str) -> (String, u16, String) {
    let out = Command::new(require_tool("curl"))
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(args)
        .args(["-w", "\n%{http_version} %{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, tail) = text.rsplit_once('\n').unwrap_or(("", ""));
    let (version, code) = tail.split_once(' ').unwrap_or(("", "0"));
    (version.to_string(), code.trim().parse().unwrap_or(0), body.to_string())
}

fn https_config(addr: SocketAddr, cert: &Path, key: &Path) -> String {
    format!("[https]\nlisten = \"{addr}\"\ncert = \"{}\"\nkey = \"{}\"\n", cert.display(), key.display())
}

#[test]
fn every_route_answers_over_https_with_http2_and_http1_and_ll_hls_multiplexes() {
    let dir = scratch_dir("https");
    let (cert, key) = ca_signed_cert(&dir, "server", "livegate test");
    let ca = dir.join("ca.pem");
    let addr = free_port();
    let gw = Gateway::in_process(&https_config(addr, &cert, &key));
    let base = format!("https://localhost:{}", addr.port());
    assert_eq!(curl(&ca, &["--http2"], &format!("{base}/healthz")), ("2".into(), 200, "ok\n".into()));
    assert_eq!(curl(&ca, &["--http1.1"], &format!("{base}/healthz")).0, "1.1");
    let _enc = publish(&gw.rtmp_url("live/demo"), Source::default(), None);
    assert!(wait_live(&gw, "live/demo", Duration::from_secs(15)));
    // the API, the console, the playlist: HTTP/2
    let (version, status, body) = curl(&ca, &["--http2"], &format!("{base}/api/streams/live/demo"));
    assert_eq!((version.as_str(), status), ("2", 200), "{body}");
    assert!(body.contains("\"live/demo\"") || body.contains("\"demo\""), "{body}");
    assert_eq!(curl(&ca, &["--http2"], &format!("{base}/")).1, 200);
    let mut playlist = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        let (v, s, b) = curl(&ca, &["--http2"], &format!("{base}/live/demo.m3u8"));
        playlist = b;
        v == "2" && s == 200 && playlist.contains("#EXT-X-PART:")
    });
    assert!(ok, "{playlist}");
    // LL-HLS blocking reloads and parts, six at once on one HTTP/2 connection
    let msn: u64 = playlist
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:"))
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    let segments = playlist.lines().filter(|l| l.starts_with("#EXTINF")).count() as u64;
    let mut args: Vec<String> = vec!["-sS".into(), "--cacert".into(), ca.display().to_string(), "--http2".into()];
    args.extend(["--parallel", "--parallel-max", "6", "--max-time", "20"].map(String::from));
    args.extend([
        "-w".into(),
        "%{http_version} %{http_code} %{num_connects}\n".into(),
        "-o".into(),
        "/dev/null".into(),
    ]);
    for i in 0..6 {
        let blocking = format!("{base}/live/demo.m3u8?_HLS_msn={}&_HLS_part=0&n={i}", msn + segments + 1);
        args.push(blocking);
        args.push("-o".into());
        args.push("/dev/null".into());
    }
    args.pop();
    args.pop();
    let out = Command::new(require_tool("curl")).args(&args).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.len(), 6, "{report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(lines.iter().all(|l| l.starts_with("2 200 ")), "{report}");
    let connections: u32 = lines.iter().filter_map(|l| l.rsplit(' ').next()?.parse::<u32>().ok()).sum();
    assert_eq!(connections, 1, "six blocking requests on one connection: {report}");
    // HTTP-FLV over TLS, read by ffprobe (HTTP/1.1)
    let v = ffprobe(&format!("https://127.0.0.1:{}/live/demo.flv", addr.port()), &["-show_streams"]);
    let codecs: Vec<&str> =
        v["streams"].as_array().into_iter().flatten().filter_map(|s| s["codec_name"].as_str()).collect();
    assert!(codecs.contains(&"h264"), "{v}");
    // plain HTTP is unchanged beside it
    assert_eq!(http_get(gw.http, "/healthz").status, 200);
}

/// The certificate the server at `addr` shows (PEM), through openssl s_client.
fn served_certificate(addr: SocketAddr) -> String {
    let out = Command::new(require_tool("openssl"))
        .args(["s_client", "-connect", &addr.to_string(), "-servername", "localhost"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find(|l| l.starts_with("subject=")).unwrap_or("").to_string()
}

#[test]
fn the_certificate_reloads_on_sighup_and_a_garbage_one_keeps_the_old() {
    let dir = scratch_dir("https-reload");
    let (cert, key) = ca_signed_cert(&dir, "first", "first certificate");
    let (live_cert, live_key) = (dir.join("live.pem"), dir.join("live.key"));
    std::fs::copy(&cert, &live_cert).unwrap();
    std::fs::copy(&key, &live_key).unwrap();
    let addr = free_port();
    let config = common::hostile::config_file("https-reload-config", &https_config(addr, &live_cert, &live_key));
    let mut gw = Gateway::start_with(&["--config", &config]);
    assert!(gw.wait_log("HTTPS listening on", Duration::from_secs(10)));
    assert!(served_certificate(addr).contains("first certificate"), "{}", served_certificate(addr));
    // a connection that stays open across the reload
    let _enc = publish(&gw.rtmp_url("live/r"), Source::default(), None);
    assert!(wait_live(&gw, "live/r", Duration::from_secs(15)));

    let (cert2, key2) = ca_signed_cert(&dir, "second", "second certificate");
    std::fs::copy(&cert2, &live_cert).unwrap();
    std::fs::copy(&key2, &live_key).unwrap();
    // SAFETY: a plain syscall on the child's pid
    unsafe { libc::kill(gw.pid() as i32, libc::SIGHUP) };
    assert!(gw.wait_log("HTTPS certificate reloaded", Duration::from_secs(5)), "{}", gw.log());
    assert!(served_certificate(addr).contains("second certificate"), "{}", served_certificate(addr));

    std::fs::write(&live_cert, "not a certificate").unwrap();
    unsafe { libc::kill(gw.pid() as i32, libc::SIGHUP) };
    assert!(gw.wait_log("HTTPS certificate not reloaded", Duration::from_secs(5)), "{}", gw.log());
    assert!(served_certificate(addr).contains("second certificate"), "the good pair stays");
    assert!(gw.is_running());

    // a TCP connection that never starts its handshake is closed by the head deadline
    let mut idle = TcpStream::connect(addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let t = Instant::now();
    let mut b = [0u8; 1];
    let _ = idle.read(&mut b);
    assert!(t.elapsed() < Duration::from_secs(13), "closed after {:?}", t.elapsed());
    assert!(t.elapsed() >= Duration::from_secs(9), "closed after {:?}", t.elapsed());
}
