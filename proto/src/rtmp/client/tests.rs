//! The client flow against livegate's own `ServerSession`, in memory: the same bytes a
//! socket would carry, in both directions, with the server's decisions made by the test.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::*;
use crate::rtmp::amf0::{self, Amf0Value};
use crate::rtmp::session::CAPS_EX_MULTITRACK;
use crate::rtmp::{ServerSession, SessionConfig, SessionEvent};

struct Pair {
    client: ClientSession,
    server: ServerSession,
    now: Instant,
    events: Vec<ClientEvent>,
    server_events: Vec<SessionEvent>,
    /// Bytes the client put on the wire.
    client_sent: usize,
}

impl Pair {
    fn new(config: SessionConfig, params: ConnectParams) -> Self {
        let now = Instant::now();
        let mut client = ClientSession::new(ClientConfig { rng_seed: 3, ..ClientConfig::default() });
        client.start(params, now);
        Self { client, server: ServerSession::new(config), now, events: vec![], server_events: vec![], client_sent: 0 }
    }

    /// Moves bytes both ways until neither side has anything to say.
    fn pump(&mut self) {
        loop {
            let mut to_server = BytesMut::new();
            while let Some(p) = self.client.poll_transmit() {
                to_server.extend_from_slice(&p);
            }
            self.client_sent += to_server.len();
            let mut moved = !to_server.is_empty();
            self.server.handle_input(&mut to_server).expect("the server takes the client's bytes");
            while let Some(e) = self.server.poll_event() {
                self.server_events.push(e);
            }
            let mut to_client = BytesMut::new();
            while let Some(p) = self.server.poll_transmit() {
                to_client.extend_from_slice(&p);
            }
            moved |= !to_client.is_empty();
            self.client.receive(&mut to_client, self.now).expect("the client takes the server's bytes");
            assert!(to_client.is_empty(), "whole messages");
            while let Some(e) = self.client.poll_event() {
                self.events.push(e);
            }
            if !moved {
                return;
            }
        }
    }

    fn request(&self) -> RequestId {
        self.server_events
            .iter()
            .rev()
            .find_map(|e| match e {
                SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } => Some(*req),
                _ => None,
            })
            .expect("a publish or play request")
    }
}

use crate::rtmp::RequestId;

fn publish_params() -> ConnectParams {
    let mut p = ConnectParams::new(ClientRole::Publish, "rtmp://127.0.0.1/live", "live", "demo?key=k");
    p.fourcc_list = vec!["hvc1".into(), "av01".into()];
    p.caps_ex = CAPS_EX_MULTITRACK;
    p
}

#[test]
fn publish_flow_connects_creates_and_publishes_with_zero_copy_media() {
    let mut t = Pair::new(SessionConfig::default(), publish_params());
    assert_eq!(t.client.state(), ClientState::Handshaking);
    t.pump();
    // the server saw connect (with the E-RTMP announcement) and a publish request
    let SessionEvent::Connected { app, tc_url, caps } = &t.server_events[0] else { panic!("{:?}", t.server_events) };
    assert_eq!((app.as_str(), tc_url.as_deref()), ("live", Some("rtmp://127.0.0.1/live")));
    assert_eq!(caps.codecs.as_deref(), Some(&["hvc1".to_string(), "av01".to_string()][..]));
    assert_eq!(caps.caps_ex, CAPS_EX_MULTITRACK);
    let SessionEvent::PublishRequested { name, query, stream_id, .. } = &t.server_events[1] else { panic!() };
    assert_eq!((name.as_str(), query.as_str(), *stream_id), ("demo", "key=k", 1));
    assert_eq!(t.client.state(), ClientState::Starting);
    // the client learned the server's codecs
    let ClientEvent::Connected { server, fms_ver } = &t.events[0] else { panic!("{:?}", t.events) };
    assert!(server.announced(b"hvc1") == Some(true) && server.announced(b"Opus") == Some(true));
    assert!(fms_ver.as_deref().is_some_and(|v| v.starts_with("FMS")));
    assert_eq!(
        t.client.send_media(MediaKind::Video, 0, Bytes::from_static(b"x")),
        Err(NotPublishing(ClientState::Starting))
    );

    let req = t.request();
    t.server.accept(req);
    t.pump();
    assert_eq!(t.events.last(), Some(&ClientEvent::Publishing { stream_id: 1 }));
    assert_eq!(t.client.state(), ClientState::Publishing);
    assert_eq!(t.client.poll_timeout(), None, "nothing awaited while publishing");

    // media: the big payload goes out as itself (a piece sharing its allocation)
    let big = Bytes::from(vec![7u8; 10_000]);
    let meta = amf0::encode_all(&[
        Amf0Value::string("onMetaData"),
        Amf0Value::EcmaArray(vec![("width".into(), Amf0Value::Number(640.0))]),
    ]);
    t.client.send_metadata(meta.clone()).unwrap();
    t.client.send_media_parts(MediaKind::Video, 40, &[0x17, 1, 0, 0, 0], big.clone()).unwrap();
    t.client.send_media(MediaKind::Audio, 41, Bytes::from_static(&[0xaf, 1, 9])).unwrap();
    let pieces: Vec<Piece> = std::iter::from_fn(|| t.client.poll_transmit()).collect();
    assert!(
        pieces.iter().any(|p| matches!(p, Piece::Shared(b) if b.len() == 4096 - 5 && b.as_ptr() == big.as_ptr())),
        "the first chunk of the payload is a slice of the caller's buffer, not a copy"
    );
    let mut wire = BytesMut::new();
    for p in &pieces {
        wire.extend_from_slice(p);
    }
    t.server.handle_input(&mut wire).unwrap();
    let got: Vec<SessionEvent> = std::iter::from_fn(|| t.server.poll_event()).collect();
    let mut video = vec![0x17, 1, 0, 0, 0];
    video.extend_from_slice(&big);
    assert_eq!(
        got,
        vec![
            SessionEvent::Metadata { payload: meta },
            SessionEvent::Media { kind: MediaKind::Video, timestamp: 40, payload: Bytes::from(video) },
            SessionEvent::Media { kind: MediaKind::Audio, timestamp: 41, payload: Bytes::from_static(&[0xaf, 1, 9]) },
        ]
    );

    // closing sends FCUnpublish + deleteStream: the server ends the publish
    t.client.close();
    t.pump();
    assert!(t.server_events.contains(&SessionEvent::Unpublished));
    assert_eq!(t.client.state(), ClientState::Ended);
}

#[test]
fn a_refused_publish_is_a_failure_value_with_the_servers_code() {
    let mut t = Pair::new(SessionConfig::default(), publish_params());
    t.pump();
    let req = t.request();
    t.server.reject(req, "NetStream.Publish.BadName", "already publishing");
    t.pump();
    let want = ClientFailure {
        stage: ClientStage::Publish,
        code: "NetStream.Publish.BadName".into(),
        description: "already publishing".into(),
    };
    assert_eq!(t.events.last(), Some(&ClientEvent::Failed(want.clone())));
    assert_eq!(t.client.state(), ClientState::Failed);
    assert_eq!(want.to_string(), "publish: NetStream.Publish.BadName (already publishing)");
}

#[test]
fn play_flow_delivers_media_and_the_end() {
    let params = ConnectParams::new(ClientRole::Play, "rtmp://127.0.0.1/live", "live", "demo");
    let mut t = Pair::new(SessionConfig::default(), params);
    t.pump();
    let req = t.request();
    assert!(matches!(&t.server_events[1], SessionEvent::PlayRequested { name, .. } if name == "demo"));
    t.server.accept(req);
    t.pump();
    assert_eq!(t.client.state(), ClientState::Playing);
    let meta = amf0::encode_all(&[Amf0Value::string("onMetaData"), Amf0Value::EcmaArray(vec![])]);
    t.server.send_metadata(1, meta.clone());
    t.server.send_media(1, MediaKind::Video, 1000, Bytes::from(vec![1u8; 70_000]));
    t.server.send_end_of_stream(1);
    t.pump();
    let tail: Vec<&ClientEvent> = t.events.iter().skip_while(|e| !matches!(e, ClientEvent::Playing { .. })).collect();
    assert_eq!(tail[0], &ClientEvent::Playing { stream_id: 1 });
    assert_eq!(tail[1], &ClientEvent::Metadata { payload: meta });
    assert!(
        matches!(tail[2], ClientEvent::Media { kind: MediaKind::Video, timestamp: 1000, payload } if payload.len() == 70_000)
    );
    assert_eq!(tail[3], &ClientEvent::Ended { code: "NetStream.Play.UnpublishNotify".into() });
    assert_eq!(t.client.state(), ClientState::Ended);
}

#[test]
fn window_acknowledgements_go_both_ways() {
    // the server asks for an acknowledgement every 10 kB; the client announces 20 kB
    let config = SessionConfig { window_ack_size: 10_000, peer_bandwidth: 20_000, ..SessionConfig::default() };
    let params = ConnectParams::new(ClientRole::Play, "rtmp://127.0.0.1/live", "live", "demo");
    let mut t = Pair::new(config, params);
    t.pump();
    let req = t.request();
    t.server.accept(req);
    t.pump();
    for i in 0..10 {
        t.server.send_media(1, MediaKind::Video, i * 40, Bytes::from(vec![0u8; 5000]));
    }
    // what the client sends back must carry Acknowledgements with growing sequence numbers
    let mut to_client = BytesMut::new();
    while let Some(p) = t.server.poll_transmit() {
        to_client.extend_from_slice(&p);
    }
    t.client.receive(&mut to_client, t.now).unwrap();
    let mut back = BytesMut::new();
    while let Some(p) = t.client.poll_transmit() {
        back.extend_from_slice(&p);
    }
    let mut decoder = crate::rtmp::chunk::ChunkDecoder::new(1 << 20);
    let mut acks = vec![];
    while let Some(m) = decoder.decode(&mut back).unwrap() {
        if m.type_id == msg::ACKNOWLEDGEMENT {
            acks.push(msg::read_u32(&m.payload, "ack").unwrap());
        }
    }
    assert!(acks.len() >= 4, "50 kB received with a 10 kB window: {acks:?}");
    assert!(acks.windows(2).all(|w| w[1] >= w[0] + 10_000), "{acks:?}");
    // and the server acknowledges the client's bytes: send 25 kB of media the other way
    let mut params = publish_params();
    params.window_ack_size = 10_000;
    let mut pub_t = Pair::new(SessionConfig::default(), params);
    pub_t.pump();
    let req = pub_t.request();
    pub_t.server.accept(req);
    pub_t.pump();
    for i in 0..5 {
        pub_t.client.send_media(MediaKind::Video, i * 40, Bytes::from(vec![0u8; 5000])).unwrap();
    }
    pub_t.pump();
    assert!(pub_t.client.peer_acknowledged() > 20_000, "server acked {}", pub_t.client.peer_acknowledged());
    assert!(pub_t.client.peer_acknowledged() as usize <= pub_t.client_sent);
}

#[test]
fn pings_are_answered() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = ClientSession::new(ClientConfig::default()); // encodes the "server's" ping
    let mut input = BytesMut::from(&[3u8; 1 + 2 * HANDSHAKE_SIZE][..]);
    c.handle_input(&mut input, &mut Vec::new()).unwrap();
    let _c2 = c.poll_transmit().expect("C2");
    let ping = s.message(2, msg::USER_CONTROL, 0, 0, &[0, 6, 0, 0, 1, 2]);
    let mut input = BytesMut::from(&ping[..]);
    c.handle_input(&mut input, &mut Vec::new()).unwrap();
    let mut back = BytesMut::new();
    while let Some(p) = c.poll_transmit() {
        back.extend_from_slice(&p);
    }
    let m = crate::rtmp::chunk::ChunkDecoder::new(1 << 20).decode(&mut back).unwrap().expect("a pong");
    assert_eq!((m.type_id, &m.payload[..]), (msg::USER_CONTROL, &[0u8, 7, 0, 0, 1, 2][..]));
}

#[test]
fn a_server_that_never_answers_fails_the_step_it_was_in() {
    let now = Instant::now();
    let mut c = ClientSession::new(ClientConfig::default());
    let mut params = publish_params();
    params.response_timeout = Duration::from_secs(5);
    c.start(params, now);
    assert_eq!(c.poll_timeout(), Some(now + Duration::from_secs(5)));
    c.handle_timeout(now + Duration::from_secs(4));
    assert_eq!(c.state(), ClientState::Handshaking);
    c.handle_timeout(now + Duration::from_secs(5));
    assert_eq!(c.state(), ClientState::Failed);
    let Some(ClientEvent::Failed(f)) = c.poll_event() else { panic!() };
    assert_eq!((f.stage, f.code.as_str()), (ClientStage::Handshake, "timeout"));

    // a server that completes the handshake and then says nothing: connect times out
    let mut t = Pair::new(SessionConfig::default(), publish_params());
    let mut wire = BytesMut::new();
    while let Some(p) = t.client.poll_transmit() {
        wire.extend_from_slice(&p);
    }
    t.server.handle_input(&mut wire).unwrap();
    let mut s0s1s2 = BytesMut::new();
    while let Some(p) = t.server.poll_transmit() {
        s0s1s2.extend_from_slice(&p);
    }
    let later = t.now + Duration::from_secs(1);
    t.client.receive(&mut s0s1s2, later).unwrap();
    assert_eq!(t.client.state(), ClientState::Connecting);
    assert_eq!(t.client.poll_timeout(), Some(later + Duration::from_secs(10)));
    t.client.handle_timeout(later + Duration::from_secs(10));
    let failure = std::iter::from_fn(|| t.client.poll_event()).find_map(|e| match e {
        ClientEvent::Failed(f) => Some(f),
        _ => None,
    });
    assert_eq!(failure.map(|f| f.stage), Some(ClientStage::Connect));
}

#[test]
fn connect_errors_and_reconnect_requests_are_events() {
    // a server answering connect with _error (nginx-rtmp does for an unknown app)
    let now = Instant::now();
    let mut c = ClientSession::new(ClientConfig::default());
    c.start(publish_params(), now);
    let mut hs = BytesMut::from(&[3u8; 1 + 2 * HANDSHAKE_SIZE][..]);
    c.receive(&mut hs, now).unwrap();
    let mut server = ClientSession::new(ClientConfig::default()); // only to encode
    let status = msg::status_object("error", "NetConnection.Connect.Rejected", "no such app");
    let tx = 1.0; // connect is the first command
    let p = msg::command_payload("_error", tx, &[Amf0Value::Null, status]);
    let mut input = BytesMut::from(&server.message(3, msg::COMMAND_AMF0, 0, 0, &p)[..]);
    c.receive(&mut input, now).unwrap();
    let failed = std::iter::from_fn(|| c.poll_event()).last();
    assert_eq!(
        failed,
        Some(ClientEvent::Failed(ClientFailure {
            stage: ClientStage::Connect,
            code: "NetConnection.Connect.Rejected".into(),
            description: "no such app".into()
        }))
    );

    let mut t = Pair::new(SessionConfig::default(), publish_params());
    t.pump();
    let req = t.request();
    t.server.accept(req);
    t.pump();
    t.server.send_reconnect_request(Some("rtmp://other/live"), "moving");
    t.pump();
    assert_eq!(t.events.last(), Some(&ClientEvent::ReconnectRequest { tc_url: Some("rtmp://other/live".into()) }));
    assert_eq!(t.client.state(), ClientState::Publishing, "the driver decides when to move");
}
