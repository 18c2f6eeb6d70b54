//! HTTP-FLV served off hyper (a whole plain GET in the first read) and by hyper (a head that
//! arrives in pieces): the same stream and the same answers either way; refusals, client
//! bytes on an HTTP-FLV connection, and the viewer slot freed when the player goes.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::hostile::{closed_by_server, config_file};
use common::*;

/// Sends the request in `parts` (`gap` apart) and reads for `time`: the response head and
/// the de-chunked body.
fn raw_get(addr: SocketAddr, parts: &[&str], gap: Duration, time: Duration) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        s.write_all(p.as_bytes()).unwrap();
    }
    s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    let start = Instant::now();
    while start.elapsed() < time {
        match s.read_some(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(_) => {}
        }
    }
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..end]).to_lowercase();
    let body = if head.contains("transfer-encoding: chunked") { dechunk(&raw[end..]) } else { raw[end..].to_vec() };
    (head, body)
}

fn viewers(gw: &Gateway, name: &str) -> u64 {
    let r = http_get(gw.http, &format!("/api/streams/live/{name}"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
    v["viewers"]["http_flv"].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn http_flv_is_the_same_off_hyper_and_through_it() {
    // the binary: its log is checked
    let cfg = config_file("http-flv", "[auth]\nplay_keys = [\"v\"]\n");
    let gw = Gateway::start_with(&["--config", &cfg]);
    let _pub = publish(&gw.rtmp_url("live/h"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || http_get(gw.http, "/api/streams/live/h").status == 200));
    let whole = ["GET /live/h.flv?key=v HTTP/1.1\r\nHost: x\r\nUser-Agent: test\r\n\r\n"];
    // the head in three pieces, 100 ms apart: hyper's
    let pieces = ["GET /live/h.flv?ke", "y=v HTTP/1.1\r\nHost: x\r\n", "User-Agent: test\r\n\r\n"];
    for (how, parts) in [("direct", &whole[..]), ("hyper", &pieces[..])] {
        let (head, body) = raw_get(gw.http, parts, Duration::from_millis(100), Duration::from_secs(3));
        println!("{how}: {} bytes of FLV in 3 s; head:\n{head}", body.len());
        assert!(head.starts_with("http/1.1 200"), "{how}: {head}");
        for h in ["content-type: video/x-flv", "transfer-encoding: chunked", "access-control-allow-origin: *", "date: "]
        {
            assert!(head.contains(h), "{how}: no {h} in {head}");
        }
        assert!(body.starts_with(b"FLV\x01"), "{how}: not an FLV body");
        assert!(body.len() > 100_000, "{how}: {} bytes in 3 s", body.len());
    }
    // the viewer slots went with the players
    assert!(wait_until(Duration::from_secs(5), || viewers(&gw, "h") == 0), "viewers left: {}", viewers(&gw, "h"));

    // refusals are answered whole, with a length, and the connection closes
    for (path, status) in [("/live/h.flv", "401"), ("/live/none.flv?key=v", "404"), ("/live/h.flv?key=bad", "401")] {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let (head, body) = raw_get(gw.http, &[&req], Duration::ZERO, Duration::from_secs(2));
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{path}: {head}");
        assert!(head.contains("content-length: ") && head.contains("connection: close"), "{path}: {head}");
        assert!(!body.is_empty() && body.len() < 100, "{path}: body {body:?}");
    }

    // A player that keeps sending after its request: what it sends is dropped up to a budget
    // (256 KiB), and its first byte past the budget closes the connection, the server says
    // how many it took. How much the client's writes get into the kernel before it sees the
    // close depends on when the server runs and on the socket buffers, not on the server:
    // at most the server's bytes and what both buffers hold (not 1 MiB, as this test had,
    // which a busy machine let the client reach).
    const BUDGET: u64 = 256 * 1024;
    let buffers = tcp_buffer_max("tcp_rmem") + tcp_buffer_max("tcp_wmem");
    let mut s = TcpStream::connect(gw.http).unwrap();
    s.write_all(b"GET /live/h.flv?key=v HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s.set_write_timeout(Some(Duration::from_millis(200))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
    let junk = vec![b'x'; 64 * 1024];
    let mut buf = vec![0u8; 65536];
    let (mut sent, mut refused) = (0u64, None);
    let start = Instant::now();
    while sent <= BUDGET + 1 + buffers && start.elapsed() < Duration::from_secs(20) {
        match s.write(&junk) {
            Ok(n) => sent += n as u64,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
        // keep reading so only the client's bytes can end this
        let _ = s.read_some(&mut buf);
    }
    println!("the client wrote {sent} bytes before the server's close reached it: {refused:?}");
    assert!(sent <= BUDGET + 1 + buffers, "the client wrote {sent} bytes and the connection is open");
    assert!(closed_by_server(&mut s, Duration::from_secs(5)), "still open after {sent} bytes");
    // the log reaches the test through a pipe: give it a moment
    let line = format!("HTTP-FLV client sent {} bytes, over {BUDGET}; closing", BUDGET + 1);
    assert!(
        wait_until(Duration::from_secs(5), || gw.log().contains(&line)),
        "no '{line}' for the chatty client:\n{}",
        gw.log().lines().filter(|l| l.contains("HTTP-FLV client")).collect::<Vec<_>>().join("\n")
    );
}

/// The most a TCP socket's receive (`tcp_rmem`) or send (`tcp_wmem`) buffer grows to, in
/// bytes (the kernel's autotuning limit).
fn tcp_buffer_max(which: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/sys/net/ipv4/{which}")).unwrap();
    text.split_whitespace().nth(2).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{which}: {text}"))
}
