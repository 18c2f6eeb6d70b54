//! WebSocket-FLV at the HTTP-FLV URL: the upgrade, FLV in binary frames, ping/pong, client
//! data ignored within a budget, an oversized frame closing the connection, the same keys
//! and viewer limit as HTTP-FLV.

mod common;

use std::io::{ErrorKind, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

/// A frame the server sent: opcode and payload.
type Got = (OpCode, Vec<u8>);

impl Ws {
    /// Upgrades `path`; the status line and headers of the answer, and the client when it is 101.
    fn open(addr: SocketAddr, path: &str) -> (String, Option<Ws>) {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read_some(&mut byte) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&byte[..n]),
            }
        }
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n").map_or(buf.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let rest = buf[end..].to_vec();
        let ok = head.starts_with("HTTP/1.1 101");
        (head, ok.then(|| Ws { s, buf: rest }))
    }

    fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let mask = [7, 1, 3, 9];
        let mut out = Vec::new();
        FrameHeader { opcode, mask: Some(mask), ..FrameHeader::default() }
            .format(payload.len() as u64, &mut out)
            .unwrap();
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.s.write_all(&out);
    }

    /// Frames until `stop` matches one, `time` passes or the server closes the socket
    /// (then `closed` is true).
    fn frames(&mut self, time: Duration, mut stop: impl FnMut(&Got) -> bool) -> (Vec<Got>, bool) {
        let start = Instant::now();
        let mut out = Vec::new();
        self.s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let mut chunk = [0u8; 65536];
        loop {
            loop {
                let mut cur = std::io::Cursor::new(&self.buf[..]);
                let Ok(Some((h, len))) = FrameHeader::parse(&mut cur) else { break };
                let at = cur.position() as usize;
                if self.buf.len() < at + len as usize {
                    break;
                }
                assert!(h.mask.is_none(), "server frames are unmasked");
                let payload = self.buf[at..at + len as usize].to_vec();
                self.buf.drain(..at + len as usize);
                let got = (h.opcode, payload);
                let done = stop(&got);
                out.push(got);
                if done {
                    return (out, false);
                }
            }
            if start.elapsed() > time {
                return (out, false);
            }
            match self.s.read_some(&mut chunk) {
                Ok(0) => return (out, true),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => return (out, true),
            }
        }
    }
}

#[test]
fn websocket_flv_streams_the_flv_and_handles_the_client() {
    let gw = Gateway::in_process("[auth]\nplay_keys = [\"v\"]\n");
    let _pub = publish(&gw.rtmp_url("live/ws"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || http_get(gw.http, "/api/streams/live/ws").status == 200));
    // the same keys as HTTP-FLV
    let (head, ws) = Ws::open(gw.http, "/live/ws.flv");
    assert!(ws.is_none() && head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, ws) = Ws::open(gw.http, "/live/nope.flv?key=v");
    assert!(ws.is_none() && head.starts_with("HTTP/1.1 404"), "{head}");
    let (head, ws) = Ws::open(gw.http, "/live/ws.flv?key=v");
    // RFC 6455's example key and its accept value
    assert!(head.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    let mut ws = ws.expect("101");
    let (got, closed) = ws.frames(Duration::from_secs(3), |_| false);
    assert!(!closed);
    let flv: Vec<u8> =
        got.iter().filter(|(op, _)| *op == OpCode::Data(Data::Binary)).flat_map(|(_, p)| p.clone()).collect();
    assert!(flv.starts_with(b"FLV\x01"), "an FLV stream in binary frames");
    assert!(flv.len() > 100_000, "{} bytes in 3 s", flv.len());
    println!("WebSocket-FLV: {} bytes in {} binary frames in 3 s", flv.len(), got.len());
    assert_eq!(api_viewers(&gw), 1);
    // ping → pong with the same payload; client data is ignored
    ws.send(OpCode::Data(Data::Text), b"hello from the player");
    ws.send(OpCode::Control(Control::Ping), b"are you there");
    let (got, _) = ws.frames(Duration::from_secs(3), |(op, _)| *op == OpCode::Control(Control::Pong));
    assert_eq!(got.last().map(|(_, p)| p.as_slice()), Some(&b"are you there"[..]));
    // an oversized frame: a close with 1009, then the connection ends
    ws.send(OpCode::Data(Data::Binary), &vec![0u8; 20_000]);
    let (got, _) = ws.frames(Duration::from_secs(3), |(op, _)| *op == OpCode::Control(Control::Close));
    let close = got.last().expect("a close frame");
    assert_eq!((close.0, &close.1[..2]), (OpCode::Control(Control::Close), &1009u16.to_be_bytes()[..]));
    let (_, closed) = ws.frames(Duration::from_secs(3), |_| false);
    assert!(closed, "the server closed the connection");
    assert!(wait_until(Duration::from_secs(3), || api_viewers(&gw) == 0), "the viewer slot is freed");
    // a client close is answered and ends the play
    let (_, ws) = Ws::open(gw.http, "/live/ws.flv?key=v");
    let mut ws = ws.expect("101");
    ws.send(OpCode::Control(Control::Close), &1000u16.to_be_bytes());
    let (got, _) = ws.frames(Duration::from_secs(3), |(op, _)| *op == OpCode::Control(Control::Close));
    assert!(got.iter().any(|(op, _)| *op == OpCode::Control(Control::Close)), "close answered");
    // the HTTP-FLV URL still serves plain HTTP-FLV
    let r = http_request(gw.http, "GET", "/live/ws.flv?key=v", 20_000, Duration::from_secs(5));
    assert!(r.status == 200 && r.body.starts_with(b"FLV"));
}

fn api_viewers(gw: &Gateway) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&http_get(gw.http, "/api/streams/live/ws?key=v").body).unwrap_or_default();
    // WebSocket-FLV viewers are counted apart from HTTP-FLV ones (of which there are none)
    match (v["viewers"]["ws_flv"].as_u64(), v["viewers"]["http_flv"].as_u64()) {
        (Some(ws), Some(0)) => ws,
        _ => u64::MAX,
    }
}
