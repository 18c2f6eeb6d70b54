//! HTTPS (`[https]`): a test CA and a certificate for 127.0.0.1/localhost made with
//! openssl; curl asks over HTTP/2 (ALPN) and HTTP/1.1, LL-HLS requests multiplex on one
//! HTTP/2 connection, ffprobe reads HTTP-FLV over TLS; the binary reloads its certificate on
//! SIGHUP (connections open keep going; a garbage file keeps the old pair); a TCP connection
//! that never starts its handshake is closed by the first-head deadline.

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

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

/// A raw HTTP/2 client over TLS (rustls, trusting the test CA) that writes frames as an
/// attacker would: no flow control, no waiting for the server.
mod raw_h2 {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpStream};
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use tokio_rustls::rustls::{self, ClientConfig, ClientConnection, RootCertStore, StreamOwned};

    pub const HEADERS: u8 = 0x1;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const GOAWAY: u8 = 0x7;
    pub const CONTINUATION: u8 = 0x9;
    pub const END_STREAM: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;

    pub struct H2 {
        pub s: StreamOwned<ClientConnection, TcpStream>,
        /// Bytes of frames written (the preface excluded).
        pub sent: usize,
    }

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A literal header field without indexing, with a literal name.
    pub fn literal(b: &mut Vec<u8>, name: &str, value: &str) {
        b.push(0x00);
        for s in [name, value] {
            assert!(s.len() < 127);
            b.push(s.len() as u8);
            b.extend_from_slice(s.as_bytes());
        }
    }

    /// An HPACK block for an RFC 8441 WebSocket: `CONNECT` with `:protocol websocket`.
    pub fn websocket_connect(path: &str) -> Vec<u8> {
        let mut b = vec![0x02, 7];
        b.extend_from_slice(b"CONNECT");
        literal(&mut b, ":protocol", "websocket");
        b.push(0x87); // :scheme https
        for (index, value) in [(4u8, path), (1u8, "localhost")] {
            b.push(index);
            b.push(value.len() as u8);
            b.extend_from_slice(value.as_bytes());
        }
        literal(&mut b, "sec-websocket-version", "13");
        b
    }

    /// An HPACK block for `GET https://localhost{path}` (static-table names, literal
    /// values without Huffman coding, nothing indexed).
    pub fn get(path: &str) -> Vec<u8> {
        let mut b = vec![0x82, 0x87]; // :method GET, :scheme https
        for (index, value) in [(4u8, path), (1u8, "localhost")] {
            b.push(index); // literal without indexing, indexed name (4-bit prefix)
            assert!(value.len() < 127);
            b.push(value.len() as u8);
            b.extend_from_slice(value.as_bytes());
        }
        b
    }

    impl H2 {
        /// A TLS connection with ALPN h2, the client preface and an empty SETTINGS sent.
        pub fn connect(addr: SocketAddr, ca: &Path) -> H2 {
            use rustls_pki_types::pem::PemObject;
            let mut roots = RootCertStore::empty();
            for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
            let conn = ClientConnection::new(Arc::new(config), name).unwrap();
            let tcp = TcpStream::connect(addr).unwrap();
            tcp.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
            tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut s = StreamOwned::new(conn, tcp);
            s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").unwrap();
            s.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
            s.flush().unwrap();
            assert_eq!(s.conn.alpn_protocol(), Some(&b"h2"[..]), "the server chose h2");
            H2 { s, sent: 0 }
        }

        /// Writes `bytes`; false once the server has closed or stopped reading.
        pub fn send(&mut self, bytes: &[u8]) -> bool {
            let ok = self.s.write_all(bytes).and_then(|_| self.s.flush()).is_ok();
            if ok {
                self.sent += bytes.len();
            }
            ok
        }

        /// Reads frames until `done` says so, `timeout` passes or the server closes: the
        /// frames as (type, stream, payload), and whether the server closed the connection.
        pub fn frames(
            &mut self,
            timeout: Duration,
            mut done: impl FnMut(&[(u8, u32, Vec<u8>)]) -> bool,
        ) -> (Vec<(u8, u32, Vec<u8>)>, bool) {
            let (mut frames, mut buf) = (Vec::new(), Vec::new());
            let deadline = Instant::now() + timeout;
            let mut chunk = [0u8; 16 * 1024];
            while Instant::now() < deadline && !done(&frames) {
                match self.s.read(&mut chunk) {
                    Ok(0) => return (frames, true),
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        continue
                    }
                    Err(_) => return (frames, true),
                }
                while buf.len() >= 9 {
                    let len = (buf[0] as usize) << 16 | (buf[1] as usize) << 8 | buf[2] as usize;
                    if buf.len() < 9 + len {
                        break;
                    }
                    let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                    frames.push((buf[3], stream, buf[9..9 + len].to_vec()));
                    buf.drain(..9 + len);
                }
            }
            (frames, false)
        }

        /// Reads frames for up to `timeout`: (frame types seen, the GOAWAY error code if
        /// one came, whether the server closed the connection).
        pub fn drain(&mut self, timeout: Duration) -> (Vec<u8>, Option<u32>, bool) {
            let (frames, closed) = self.frames(timeout, |_| false);
            let goaway = frames
                .iter()
                .filter(|(t, _, p)| *t == GOAWAY && p.len() >= 8)
                .map(|(_, _, p)| u32::from_be_bytes([p[4], p[5], p[6], p[7]]))
                .next_back();
            (frames.iter().map(|(t, _, _)| *t).collect(), goaway, closed)
        }
    }
}

/// The binary with HTTPS on a free port, and the test CA's file.
fn https_binary(name: &str) -> (Gateway, SocketAddr, std::path::PathBuf) {
    let dir = scratch_dir(name);
    let (cert, key) = ca_signed_cert(&dir, "server", "livegate test");
    let addr = free_port();
    // writes that wait for the client time out after 3 s (not 10 s), to keep the test short
    let toml = format!("{}[http]\nviewer_stall_timeout_ms = 3000\n", https_config(addr, &cert, &key));
    let config = common::hostile::config_file(&format!("{name}-config"), &toml);
    let gw = Gateway::start_with(&["--config", &config]);
    assert!(gw.wait_log("HTTPS listening on", Duration::from_secs(10)), "{}", gw.log());
    (gw, addr, dir.join("ca.pem"))
}

#[test]
fn http2_floods_close_the_attacking_connection_and_stay_within_bounds() {
    use common::hostile::{assert_bounded, MIB};
    use raw_h2::*;
    let (mut gw, addr, ca) = https_binary("h2-attacks");
    let ca2 = ca.clone();
    let honest = move || curl(&ca2, &["--http2"], &format!("https://localhost:{}/healthz", addr.port()));
    // 1. rapid reset (CVE-2023-44487): HEADERS + RST_STREAM, 20,000 pairs a connection
    assert_bounded(&mut gw, "h2 rapid reset", 16 * MIB, 16 * MIB, |gw| {
        let attackers: Vec<_> = (0..4)
            .map(|_| {
                let ca = ca.clone();
                std::thread::spawn(move || {
                    let mut c = H2::connect(addr, &ca);
                    let mut pairs = 0u32;
                    'attack: for batch in 0..200u32 {
                        let mut bytes = Vec::new();
                        for i in 0..100u32 {
                            let id = 1 + 2 * (batch * 100 + i);
                            bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get("/healthz")));
                            bytes.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
                            // CANCEL
                        }
                        if !c.send(&bytes) {
                            break 'attack;
                        }
                        pairs += 100;
                    }
                    let (_, goaway, closed) = c.drain(Duration::from_secs(5));
                    (pairs, goaway, closed)
                })
            })
            .collect();
        let results: Vec<_> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
        println!("rapid reset: (pairs sent, GOAWAY code, closed) per connection: {results:?}");
        assert!(gw.wait_log("HTTP/2 client closed with ENHANCE_YOUR_CALM", Duration::from_secs(5)));
        // GOAWAY (ENHANCE_YOUR_CALM) once the resets pass the bound, then the close (the
        // attacker, still writing, often sees the reset before it can read the GOAWAY)
        assert!(results.iter().all(|(_, _, closed)| *closed), "every attacker is cut off: {results:?}");
    });
    assert_eq!(honest().1, 200);
    // 2. CONTINUATION flood: one header block that never ends
    assert_bounded(&mut gw, "h2 CONTINUATION flood", 16 * MIB, 16 * MIB, |gw| {
        let mut c = H2::connect(addr, &ca);
        let mut block = get("/healthz");
        // a literal header of 100 bytes, repeated in every CONTINUATION
        let mut filler = vec![0x00, 8];
        filler.extend_from_slice(b"x-filler");
        filler.push(90);
        filler.extend_from_slice(&[b'a'; 90]);
        block.extend_from_slice(&filler);
        assert!(c.send(&frame(HEADERS, 0, 1, &block)));
        let one = frame(CONTINUATION, 0, 1, &filler.repeat(160)); // 16,000 bytes a frame
        while c.sent < 64 << 20 && c.send(&one) {}
        let (_, goaway, closed) = c.drain(Duration::from_secs(5));
        println!("CONTINUATION flood: {} bytes sent, GOAWAY {goaway:?}, closed {closed}", c.sent);
        let calm = || gw.log().matches("HTTP/2 client closed with ENHANCE_YOUR_CALM").count();
        assert!(wait_until(Duration::from_secs(5), || calm() >= 1), "closed for the flood: {}", gw.log());
        assert!(goaway.is_some() || closed, "the attacker is cut off");
        // (what the socket buffers of loopback take, a few MiB, is written before the close is seen)
        assert!(c.sent < 16 << 20, "cut off after {} bytes of one header block", c.sent);
    });
    assert_eq!(honest().1, 200);
    // 3. SETTINGS flood: a million SETTINGS frames, never reading the acknowledgements
    assert_bounded(&mut gw, "h2 SETTINGS flood", 16 * MIB, 16 * MIB, |gw| {
        let mut c = H2::connect(addr, &ca);
        // one request first: the connection is past its first-head deadline
        assert!(c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &get("/healthz"))));
        let batch = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]).repeat(10_000);
        let mut frames = 0;
        c.s.sock.set_write_timeout(Some(Duration::from_secs(1))).unwrap();
        while frames < 1_000_000 && c.send(&batch) {
            frames += 10_000;
        }
        println!("SETTINGS flood: {frames} frames written before the server stopped taking them");
        assert!(frames < 1_000_000, "the server kept reading SETTINGS it could not acknowledge");
        // and the connection whose acknowledgements nobody reads is closed by the write stall
        // timeout (viewer_stall_timeout_ms)
        assert!(gw.wait_log("took nothing of a response", Duration::from_secs(20)), "{}", gw.log());
        let t = Instant::now();
        let (_, _, closed) = c.drain(Duration::from_secs(10));
        println!("SETTINGS flood: closed {closed} (read for {:?})", t.elapsed());
        assert!(closed, "the SETTINGS flood's connection is closed");
    });
    assert_eq!(honest().1, 200);
    // 4. 10,000 streams opened at once, each an HTTP-FLV viewer that never reads
    let _enc = publish(&gw.rtmp_url("live/h2"), Source::default(), None);
    assert!(wait_live(&gw, "live/h2", Duration::from_secs(15)));
    assert_bounded(&mut gw, "h2 10,000 streams", 32 * MIB, 16 * MIB, |gw| {
        let mut c = H2::connect(addr, &ca);
        let mut opened = 0u32;
        for batch in 0..100u32 {
            let mut bytes = Vec::new();
            for i in 0..100u32 {
                let id = 1 + 2 * (batch * 100 + i);
                bytes.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get("/live/h2.flv")));
            }
            if !c.send(&bytes) {
                break;
            }
            opened += 100;
        }
        let (kinds, goaway, closed) = c.drain(Duration::from_secs(5));
        let resets = kinds.iter().filter(|k| **k == RST_STREAM).count();
        println!("10,000 streams: {opened} sent, {resets} RST_STREAM, GOAWAY {goaway:?}, closed {closed}");
        // streams past H2_MAX_STREAMS are refused (RST_STREAM), and after 256 refusals the
        // connection is closed (GOAWAY ENHANCE_YOUR_CALM); what the attacker reads of that
        // depends on how much it wrote first, the server's log says it
        assert!(closed, "the connection is closed");
        assert!(gw.wait_log("ENHANCE_YOUR_CALM", Duration::from_secs(5)), "{}", gw.log());
    });
    assert_eq!(honest().1, 200);
    assert!(gw.is_running());
}

#[test]
fn websocket_flv_runs_over_http2_with_extended_connect() {
    // RFC 8441: the server offers SETTINGS_ENABLE_CONNECT_PROTOCOL; a CONNECT with
    // `:protocol websocket` at the FLV URL gets 200 and the stream carries WebSocket
    // binary frames of the FLV, beside other requests on the same connection
    use raw_h2::*;
    let dir = scratch_dir("h2-websocket");
    let (cert, key) = ca_signed_cert(&dir, "server", "livegate test");
    let addr = free_port();
    let gw = Gateway::in_process(&https_config(addr, &cert, &key));
    let _enc = publish(&gw.rtmp_url("live/ws2"), Source::default(), None);
    assert!(wait_live(&gw, "live/ws2", Duration::from_secs(15)));
    let mut c = H2::connect(addr, &dir.join("ca.pem"));
    let (settings, _) = c.frames(Duration::from_secs(5), |f| f.iter().any(|(t, _, _)| *t == SETTINGS));
    let offered = settings
        .iter()
        .filter(|(t, _, _)| *t == SETTINGS)
        .any(|(_, _, p)| p.chunks(6).any(|s| s.len() == 6 && s[..2] == [0, 8] && s[2..] == [0, 0, 0, 1]));
    assert!(offered, "SETTINGS_ENABLE_CONNECT_PROTOCOL = 1: {settings:?}");
    assert!(c.send(&frame(SETTINGS, 0x1, 0, &[]))); // ACK
    assert!(c.send(&frame(HEADERS, END_HEADERS, 1, &websocket_connect("/live/ws2.flv"))));
    assert!(c.send(&frame(HEADERS, END_HEADERS | END_STREAM, 3, &get("/healthz"))));
    let data_of = |frames: &[(u8, u32, Vec<u8>)], id: u32| -> Vec<u8> {
        frames.iter().filter(|(t, s, _)| *t == 0x0 && *s == id).flat_map(|(_, _, p)| p.clone()).collect()
    };
    let (frames, _) = c.frames(Duration::from_secs(10), |f| data_of(f, 1).len() > 4096 && !data_of(f, 3).is_empty());
    // :status 200 is entry 8 of HPACK's static table
    let head = frames.iter().find(|(t, s, _)| *t == HEADERS && *s == 1).map(|(_, _, p)| p.clone()).unwrap_or_default();
    assert_eq!(head.first(), Some(&0x88), "200 to the CONNECT: {head:?}");
    let ws = data_of(&frames, 1);
    // a binary frame (FIN, opcode 2), unmasked, whose payload starts with the FLV header
    assert_eq!(ws.first(), Some(&0x82), "{:?}", &ws[..ws.len().min(16)]);
    let header_len = match ws.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    assert_eq!(&ws[header_len..header_len + 3], b"FLV", "{:?}", &ws[..ws.len().min(16)]);
    assert_eq!(data_of(&frames, 3), b"ok\n", "the other stream of the connection is served");
}
