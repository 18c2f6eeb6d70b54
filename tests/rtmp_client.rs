//! livegate's RTMP client flow (`rtmp::ClientSession::start`, what relays are built on)
//! against real servers: Debian's nginx-rtmp (`libnginx-mod-rtmp`) and livegate. It
//! publishes a real H.264/AAC stream to both, which ffmpeg then reads back; it plays from
//! both; a refusal comes back as a value with the server's status code.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::nginx_rtmp::NginxRtmp;
use common::*;
use livegate::flv::file::{read_tags, FileTag};
use livegate::media::MediaKind;
use livegate::rtmp::{ClientConfig, ClientEvent, ClientRole, ClientSession, ClientState, ConnectParams};

/// A blocking driver for the sans-IO client: moves bytes between the socket and the
/// session, passes `now`, collects events.
struct Driver {
    sock: TcpStream,
    client: ClientSession,
    buf: BytesMut,
    events: Vec<ClientEvent>,
}

impl Driver {
    fn start(addr: SocketAddr, role: ClientRole, app: &str, stream: &str) -> Self {
        let sock = TcpStream::connect(addr).expect("connect");
        sock.set_nodelay(true).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut client = ClientSession::new(ClientConfig { rng_seed: 5, ..ClientConfig::default() });
        let tc_url = format!("rtmp://{addr}/{app}");
        client.start(ConnectParams::new(role, tc_url, app, stream), Instant::now());
        let mut d = Driver { sock, client, buf: BytesMut::new(), events: Vec::new() };
        d.flush();
        d
    }

    fn flush(&mut self) {
        while let Some(p) = self.client.poll_transmit() {
            self.sock.write_all(&p).expect("write to the server");
        }
    }

    /// One turn: read what arrived (up to 20 ms), feed it, flush. False once the server closed.
    fn turn(&mut self) -> bool {
        let mut chunk = [0u8; 65536];
        let open = match self.sock.read_some(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => true,
            Err(e) => panic!("read: {e}"),
        };
        let now = Instant::now();
        self.client.receive(&mut self.buf, now).expect("the server speaks valid RTMP");
        self.client.handle_timeout(now);
        self.flush();
        while let Some(e) = self.client.poll_event() {
            self.events.push(e);
        }
        open
    }

    /// Turns until the state is `want` or the flow failed; the state reached.
    fn until_state(&mut self, want: ClientState, timeout: Duration) -> ClientState {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            let open = self.turn();
            let s = self.client.state();
            if s == want || s == ClientState::Failed || !open {
                return s;
            }
        }
        self.client.state()
    }
}

/// The fixture's tags (3 s of 160x120 H.264 + AAC, 1 s GOP).
fn fixture() -> Vec<FileTag> {
    let data = Bytes::from(std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/hls/source.flv")).unwrap());
    read_tags(&data).expect("fixture FLV")
}

/// Publishes the fixture in real time through `d` for `seconds`, looping it with
/// continuing timestamps (metadata and sequence headers once).
fn publish_for(d: &mut Driver, seconds: u64) {
    let tags = fixture();
    let span = tags.last().map(|t| t.timestamp + 67).unwrap();
    let start = Instant::now();
    let mut lap = 0u32;
    'outer: loop {
        for t in &tags {
            let is_config = t.body.len() > 1 && t.body[1] == 0 && matches!(t.tag_type, 8 | 9);
            if lap > 0 && (t.tag_type == 18 || is_config) {
                continue;
            }
            let ts = t.timestamp + lap * span;
            while start.elapsed() < Duration::from_millis(u64::from(ts)) {
                d.turn();
            }
            if start.elapsed() > Duration::from_secs(seconds) {
                break 'outer;
            }
            let r = match t.tag_type {
                8 => d.client.send_media(MediaKind::Audio, ts, t.body.clone()),
                9 => d.client.send_media(MediaKind::Video, ts, t.body.clone()),
                _ => {
                    // "onMetaData", object: what follows the tag's own @setDataFrame, if any
                    d.client.send_metadata(t.body.clone())
                }
            };
            r.expect("publishing");
            d.flush();
        }
        lap += 1;
    }
}

#[test]
fn publishes_to_nginx_rtmp_and_livegate_and_ffmpeg_reads_both_back() {
    let nginx = NginxRtmp::start();
    let gw = Gateway::in_process("");
    for (name, addr) in [("nginx-rtmp", nginx.addr()), ("livegate", gw.rtmp)] {
        let mut d = Driver::start(addr, ClientRole::Publish, "live", "relayed");
        assert_eq!(
            d.until_state(ClientState::Publishing, Duration::from_secs(10)),
            ClientState::Publishing,
            "{name}: {:?}",
            d.events
        );
        assert!(matches!(d.events.first(), Some(ClientEvent::Connected { .. })), "{name}: {:?}", d.events);
        let url = format!("rtmp://{addr}/live/relayed");
        let reader = std::thread::spawn({
            let name = name.to_string();
            move || {
                let r = read_back(&url, &format!("rtmp-client-{name}"), 2);
                (r.video, r.audio, r.codecs)
            }
        });
        publish_for(&mut d, 6);
        let (video, audio, codecs) = reader.join().unwrap();
        // 2 s read: 15 fps video and ~21 AAC frames a second
        assert!(video >= 20 && audio >= 20, "{name}: {video} video / {audio} audio packets ({codecs})");
        assert!(codecs.contains("h264") && codecs.contains("aac"), "{name}: {codecs}");
        d.client.close();
        d.flush();
    }
}

#[test]
fn plays_from_nginx_rtmp_and_refusals_are_values() {
    let nginx = NginxRtmp::start();
    let gw = Gateway::in_process("");
    // a publisher on both (ffmpeg), then our client plays each
    let _pubs: Vec<Ffmpeg> = [nginx.addr(), gw.rtmp]
        .iter()
        .map(|a| {
            publish(&format!("rtmp://{a}/live/src"), Source { width: 320, height: 180, ..Source::default() }, None)
        })
        .collect();
    assert!(wait_live(&gw, "live/src", Duration::from_secs(15)), "ffmpeg did not go live on livegate");
    for (name, addr) in [("nginx-rtmp", nginx.addr()), ("livegate", gw.rtmp)] {
        let end = Instant::now() + Duration::from_secs(20);
        let mut got_video_keyframe = false;
        while !got_video_keyframe && Instant::now() < end {
            let mut d = Driver::start(addr, ClientRole::Play, "live", "src");
            if d.until_state(ClientState::Playing, Duration::from_secs(10)) != ClientState::Playing {
                std::thread::sleep(Duration::from_millis(300)); // nginx: the publisher may not be there yet
                continue;
            }
            let stop = Instant::now() + Duration::from_secs(5);
            while Instant::now() < stop && !got_video_keyframe {
                d.turn();
                got_video_keyframe = d.events.iter().any(|e| {
                    matches!(e, ClientEvent::Media { kind: MediaKind::Video, payload, .. }
                        if payload.len() > 100 && payload[0] >> 4 == 1)
                });
            }
        }
        assert!(got_video_keyframe, "{name}: no keyframe played");
    }

    // a second publisher on livegate's live key is refused: a value with the status code
    let mut d = Driver::start(gw.rtmp, ClientRole::Publish, "live", "src");
    assert_eq!(d.until_state(ClientState::Publishing, Duration::from_secs(10)), ClientState::Failed);
    let failure = d.events.iter().find_map(|e| match e {
        ClientEvent::Failed(f) => Some(f.clone()),
        _ => None,
    });
    let failure = failure.expect("a failure event");
    assert_eq!(failure.code, "NetStream.Publish.BadName", "{failure}");
}
