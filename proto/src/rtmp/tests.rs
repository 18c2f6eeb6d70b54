//! Session-level tests: an in-memory test client against `ServerSession`, plus a captured
//! ffmpeg publish (`fixtures/rtmp/ffmpeg_publish.bin`, see `fixtures/rtmp/capture.py`).

use bytes::{Bytes, BytesMut};

use super::amf0::{self, Amf0Value};
use super::message as msg;
use super::testclient::{bytes_in, drive, receive, receive_commands, request_id};
use super::{ClientConfig, ClientSession};
use super::{MediaKind, PlayControl, RtmpError, ServerSession, SessionConfig, SessionEvent};

fn server() -> ServerSession {
    ServerSession::new(SessionConfig::default())
}

fn metadata_body() -> Bytes {
    amf0::encode_all(&[
        Amf0Value::string("onMetaData"),
        Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(320.0)),
            ("height".into(), Amf0Value::Number(240.0)),
        ]),
    ])
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

/// (kind, timestamp, payload) of the media in `publish_stream`.
fn publish_media() -> Vec<(MediaKind, u32, Vec<u8>)> {
    let mut v = Vec::new();
    v.push((MediaKind::Video, 0, payload(40, 1))); // "sequence header"
    v.push((MediaKind::Audio, 0, payload(7, 2)));
    for i in 0..6u32 {
        v.push((MediaKind::Video, 40 * i, payload(if i == 0 { 700 } else { 300 }, i as u8)));
        v.push((MediaKind::Audio, 23 * i, payload(20, 9))); // same length: fmt 2/3 headers
    }
    // Extended timestamps: fmt 0 (type changes) / fmt 2 (delta >= 0xFFFFFF) / fmt 3 with ext.
    v.push((MediaKind::Video, 0x0100_0000, payload(500, 3)));
    v.push((MediaKind::Video, 0x0200_0000, payload(500, 4)));
    v.push((MediaKind::Video, 0x0300_0000, payload(500, 5)));
    v.push((MediaKind::Video, 0x0300_0028, payload(260, 6)));
    v
}

/// A whole publish session as a client would send it.
fn publish_stream(c: &mut ClientSession) -> Vec<u8> {
    let mut w = c.handshake();
    w.extend(c.connect("live"));
    w.extend(c.command(0, "releaseStream", &[Amf0Value::Null, Amf0Value::string("x")]));
    w.extend(c.command(0, "FCPublish", &[Amf0Value::Null, Amf0Value::string("x")]));
    w.extend(c.create_stream());
    w.extend(c.publish(1, "x?k=v"));
    w.extend(c.set_chunk_size(200));
    let meta = amf0::encode_all(&[
        Amf0Value::string("@setDataFrame"),
        Amf0Value::string("onMetaData"),
        Amf0Value::EcmaArray(vec![
            ("width".into(), Amf0Value::Number(320.0)),
            ("height".into(), Amf0Value::Number(240.0)),
        ]),
    ]);
    w.extend(c.message(5, msg::DATA_AMF0, 1, 0, &meta));
    for (kind, ts, p) in publish_media() {
        w.extend(c.media(1, kind, ts, &p));
    }
    w.extend(c.command(0, "FCUnpublish", &[Amf0Value::Null, Amf0Value::string("x")]));
    w.extend(c.command(0, "deleteStream", &[Amf0Value::Null, Amf0Value::Number(1.0)]));
    w
}

fn expected_publish_events(events: &[SessionEvent]) {
    assert_eq!(
        events[0],
        SessionEvent::Connected {
            app: "live".into(),
            tc_url: Some("rtmp://127.0.0.1/live".into()),
            caps: Default::default()
        }
    );
    let req = request_id(&events[1]).unwrap();
    assert_eq!(
        events[1],
        SessionEvent::PublishRequested { req, stream_id: 1, app: "live".into(), name: "x".into(), query: "k=v".into() }
    );
    assert_eq!(events[2], SessionEvent::Metadata { payload: metadata_body() });
    let media: Vec<_> = publish_media()
        .into_iter()
        .map(|(kind, timestamp, p)| SessionEvent::Media { kind, timestamp, payload: Bytes::from(p) })
        .collect();
    assert_eq!(&events[3..3 + media.len()], &media[..]);
    assert_eq!(&events[3 + media.len()..], &[SessionEvent::Unpublished]);
}

#[test]
fn publish_session_events_and_replies() {
    let mut c = ClientSession::new(ClientConfig::default());
    let wire = publish_stream(&mut c);
    let mut s = server();
    let events = drive(&mut s, [&wire[..]]);
    expected_publish_events(&events);
    // Header forms actually exercised by the client: fmt 1, 2, 3 all appear.
    let fmts: std::collections::HashSet<u8> = wire[3073..].iter().map(|b| b >> 6).collect();
    assert!(fmts.len() == 4, "{fmts:?}");
}

#[test]
fn publish_session_both_ext_timestamp_conventions() {
    for repeat in [true, false] {
        let mut c = ClientSession::new(ClientConfig::default());
        c.config.repeat_ext_on_continuation = repeat;
        let wire = publish_stream(&mut c);
        expected_publish_events(&drive(&mut server(), [&wire[..]]));
        let mut c = ClientSession::new(ClientConfig::default());
        c.config.repeat_ext_on_continuation = repeat;
        c.config.compress = false;
        let wire = publish_stream(&mut c);
        expected_publish_events(&drive(&mut server(), [&wire[..]]));
    }
}

#[test]
fn publish_session_every_split_point_and_byte_by_byte() {
    let mut c = ClientSession::new(ClientConfig::default());
    let wire = publish_stream(&mut c);
    let reference = drive(&mut server(), [&wire[..]]);
    for k in 0..=wire.len() {
        let events = drive(&mut server(), [&wire[..k], &wire[k..]]);
        assert_eq!(events, reference, "split at {k}");
    }
    let events = drive(&mut server(), wire.chunks(1));
    assert_eq!(events, reference);
}

#[test]
fn server_replies_to_connect_create_stream_and_publish() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = server();
    let mut input = BytesMut::new();
    input.extend_from_slice(&c.handshake());
    input.extend_from_slice(&c.connect("live"));
    input.extend_from_slice(&c.create_stream());
    input.extend_from_slice(&c.publish(1, "x"));
    s.handle_input(&mut input).unwrap();
    assert!(s.is_handshake_done());
    let msgs = receive(&mut c, &mut s);
    let types: Vec<u8> = msgs.iter().map(|m| m.type_id).collect();
    assert_eq!(&types[..3], &[msg::WINDOW_ACK_SIZE, msg::SET_PEER_BANDWIDTH, msg::SET_CHUNK_SIZE]);
    assert_eq!(&msgs[2].payload[..], &65536u32.to_be_bytes());
    let cmd = msg::Command::parse(msgs[3].type_id, &msgs[3].payload).unwrap();
    assert_eq!((cmd.name.as_str(), cmd.transaction_id), ("_result", 1.0));
    assert_eq!(cmd.object.get("fmsVer").and_then(Amf0Value::as_str), Some("FMS/3,0,1,123"));
    assert_eq!(cmd.object.get("capabilities").and_then(Amf0Value::as_number), Some(31.0));
    let info = &cmd.args[0];
    assert_eq!(info.get("code").and_then(Amf0Value::as_str), Some("NetConnection.Connect.Success"));
    assert_eq!(info.get("objectEncoding").and_then(Amf0Value::as_number), Some(0.0));
    let cs = msg::Command::parse(msgs[4].type_id, &msgs[4].payload).unwrap();
    assert_eq!((cs.name.as_str(), cs.transaction_id, cs.arg_number(0)), ("_result", 2.0, Some(1.0)));

    assert!(matches!(s.poll_event(), Some(SessionEvent::Connected { .. })));
    let req = request_id(&s.poll_event().unwrap()).unwrap();
    s.accept(req);
    let replies = receive(&mut c, &mut s);
    assert!(replies.iter().any(|m| m.type_id == msg::USER_CONTROL && m.payload[..2] == [0, 0]));
    let status = replies.iter().find(|m| m.type_id == msg::COMMAND_AMF0).unwrap();
    assert_eq!(status.stream_id, 1);
    let st = msg::Command::parse(status.type_id, &status.payload).unwrap();
    assert_eq!(st.name, "onStatus");
    assert_eq!(st.args[0].get("code").and_then(Amf0Value::as_str), Some("NetStream.Publish.Start"));
}

#[test]
fn media_before_accept_waits_and_rejected_publish_gets_error_status() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = server();
    let mut input = BytesMut::new();
    input.extend_from_slice(&c.handshake());
    input.extend_from_slice(&c.connect("live"));
    input.extend_from_slice(&c.create_stream());
    input.extend_from_slice(&c.publish(1, "bad"));
    input.extend_from_slice(&c.media(1, MediaKind::Video, 0, &[1, 2, 3]));
    s.handle_input(&mut input).unwrap();
    assert!(!input.is_empty(), "input after a pending publish is left for later");
    let _connected = s.poll_event();
    let req = request_id(&s.poll_event().unwrap()).unwrap();
    assert_eq!(s.poll_event(), None);
    receive(&mut c, &mut s);
    s.reject(req, "NetStream.Publish.BadName", "no such key");
    s.handle_input(&mut input).unwrap();
    assert!(input.is_empty());
    assert_eq!(s.poll_event(), None, "media of a rejected publish is dropped");
    let cmds = receive_commands(&mut c, &mut s);
    let info = &cmds[0].args[0];
    assert_eq!(info.get("level").and_then(Amf0Value::as_str), Some("error"));
    assert_eq!(info.get("code").and_then(Amf0Value::as_str), Some("NetStream.Publish.BadName"));
}

#[test]
fn interleaved_chunk_streams() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut wire = c.handshake();
    wire.extend(c.connect("live"));
    wire.extend(c.create_stream());
    wire.extend(c.publish(1, "x"));
    let audio = payload(1000, 1);
    let video = payload(2000, 2);
    let a = c.chunks(4, msg::AUDIO, 1, 10, &audio);
    let v = c.chunks(6, msg::VIDEO, 1, 20, &video);
    for i in 0..a.len().max(v.len()) {
        if let Some(x) = v.get(i) {
            wire.extend(x);
        }
        if let Some(x) = a.get(i) {
            wire.extend(x);
        }
    }
    let events = drive(&mut server(), [&wire[..]]);
    assert_eq!(
        &events[2..],
        &[
            SessionEvent::Media { kind: MediaKind::Audio, timestamp: 10, payload: Bytes::from(audio) },
            SessionEvent::Media { kind: MediaKind::Video, timestamp: 20, payload: Bytes::from(video) },
        ]
    );
}

fn published(c: &mut ClientSession) -> Vec<u8> {
    let mut w = c.handshake();
    w.extend(c.connect("live"));
    w.extend(c.create_stream());
    w.extend(c.publish(1, "x"));
    w
}

#[test]
fn timestamp_deltas_wrap_at_32_bits() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = published(&mut c);
    // fmt 0, csid 4, ts = 0xFFFFFF (extended) 0xFFFFFFF0, len 1, audio, stream 1
    w.extend([0x04, 0xFF, 0xFF, 0xFF, 0, 0, 1, 8, 1, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xF0, 0xAA]);
    // fmt 2, delta 0x20
    w.extend([0x84, 0, 0, 0x20, 0xBB]);
    // fmt 3: same delta again
    w.extend([0xC4, 0xCC]);
    let events = drive(&mut server(), [&w[..]]);
    let ts: Vec<u32> = events
        .iter()
        .filter_map(|e| match e {
            SessionEvent::Media { timestamp, .. } => Some(*timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(ts, vec![0xFFFF_FFF0, 0x10, 0x30]);
}

/// An FLV-style sub-message of an Aggregate: tag header, body, back pointer.
fn sub_message(type_id: u8, ts: u32, body: &[u8]) -> Vec<u8> {
    let n = body.len() as u32;
    let mut t = vec![type_id, (n >> 16) as u8, (n >> 8) as u8, n as u8, (ts >> 16) as u8, (ts >> 8) as u8, ts as u8];
    t.extend([(ts >> 24) as u8, 0, 0, 0]);
    t.extend_from_slice(body);
    t.extend((11 + n).to_be_bytes());
    t
}

#[test]
fn aggregate_messages_are_split_into_their_media() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = published(&mut c);
    // sub-message timestamps are rebased onto the aggregate's (5000): 1000 → 5000, 1033 → 5033
    let mut agg = sub_message(msg::VIDEO, 1000, &[0x17, 1, 0, 0, 0, 9]);
    agg.extend(sub_message(msg::AUDIO, 1010, &[0xaf, 1, 7]));
    agg.extend(sub_message(msg::AGGREGATE, 1020, &sub_message(msg::VIDEO, 0, &[1]))); // nested: ignored
    agg.extend(sub_message(msg::VIDEO, 1033, &[0x27, 1, 0, 0, 0, 8]));
    w.extend(c.message(6, msg::AGGREGATE, 1, 5000, &agg));
    let media: Vec<(MediaKind, u32, Vec<u8>)> = drive(&mut server(), [&w[..]])
        .into_iter()
        .filter_map(|e| match e {
            SessionEvent::Media { kind, timestamp, payload } => Some((kind, timestamp, payload.to_vec())),
            _ => None,
        })
        .collect();
    assert_eq!(
        media,
        vec![
            (MediaKind::Video, 5000, vec![0x17, 1, 0, 0, 0, 9]),
            (MediaKind::Audio, 5010, vec![0xaf, 1, 7]),
            (MediaKind::Video, 5033, vec![0x27, 1, 0, 0, 0, 8]),
        ]
    );
    // more parts than any encoder sends is an error (one message must not become 500k events)
    let many: Vec<u8> =
        (0..=msg::MAX_AGGREGATE_PARTS as u32).flat_map(|i| sub_message(msg::AUDIO, i, &[0xaf])).collect();
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = server();
    drive(&mut s, [&published(&mut c)[..]]);
    let r = s.handle_input(&mut BytesMut::from(&c.message(6, msg::AGGREGATE, 1, 0, &many)[..]));
    assert!(matches!(r, Err(RtmpError::MalformedMessage("Aggregate (too many parts)"))), "{r:?}");
    // a sub-message running past the end is an error, at every truncation
    let whole_parts = [21, 39, 70]; // ends of sub-messages: a valid, shorter aggregate
    for cut in (1..agg.len()).filter(|c| !whole_parts.contains(c)) {
        let mut c = ClientSession::new(ClientConfig::default());
        let mut s = server();
        drive(&mut s, [&published(&mut c)[..]]);
        let r = s.handle_input(&mut BytesMut::from(&c.message(6, msg::AGGREGATE, 1, 0, &agg[..cut])[..]));
        assert!(matches!(r, Err(RtmpError::MalformedMessage("Aggregate"))), "cut {cut}: {r:?}");
    }
}

#[test]
fn three_byte_basic_header_chunk_stream() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = published(&mut c);
    w.extend(c.message(40_000, msg::VIDEO, 1, 5, &payload(300, 1)));
    let events = drive(&mut server(), [&w[..]]);
    assert_eq!(
        events[2],
        SessionEvent::Media { kind: MediaKind::Video, timestamp: 5, payload: Bytes::from(payload(300, 1)) }
    );
}

fn expect_error(wire: &[u8], err: RtmpError) {
    let mut s = server();
    let mut input = BytesMut::from(wire);
    let mut result = Ok(());
    for _ in 0..4 {
        result = s.handle_input(&mut input);
        while let Some(ev) = s.poll_event() {
            if let Some(req) = request_id(&ev) {
                s.accept(req);
            }
        }
        if result.is_err() {
            break;
        }
    }
    assert_eq!(result, Err(err));
}

#[test]
fn bad_chunk_sizes_are_errors() {
    for (size, err) in [(0u32, RtmpError::ChunkSizeZero), (0x8000_0000, RtmpError::ChunkSizeTooLarge(0x8000_0000))] {
        let mut c = ClientSession::new(ClientConfig::default());
        let mut w = published(&mut c);
        w.extend(c.message(2, msg::SET_CHUNK_SIZE, 0, 0, &size.to_be_bytes()));
        expect_error(&w, err);
    }
}

#[test]
fn huge_message_length_is_an_error() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = published(&mut c);
    w.extend([0x06, 0, 0, 0, 0xFF, 0xFF, 0xFF, 9, 1, 0, 0, 0]);
    expect_error(&w, RtmpError::MessageTooLarge(0xFF_FFFF));
}

#[test]
fn deeply_nested_amf_command_is_an_error() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = published(&mut c);
    let mut p = BytesMut::new();
    amf0::encode(&mut p, &Amf0Value::string("connect"));
    amf0::encode(&mut p, &Amf0Value::Number(9.0));
    for _ in 0..100_000 {
        p.extend_from_slice(&[0x03, 0, 1, b'a']);
    }
    w.extend(c.set_chunk_size(1 << 20));
    w.extend(c.message(3, msg::COMMAND_AMF0, 0, 0, &p));
    expect_error(&w, RtmpError::AmfTooDeep(amf0::MAX_DEPTH));
}

#[test]
fn bad_handshake_version_is_an_error() {
    expect_error(&[0x06, 0, 0, 0], RtmpError::BadHandshakeVersion(6));
}

#[test]
fn ping_unknown_command_ack_and_amf3_command() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = ServerSession::new(SessionConfig { window_ack_size: 1000, ..SessionConfig::default() });
    let mut w = c.handshake();
    w.extend(c.connect("live"));
    w.extend(c.message(2, msg::WINDOW_ACK_SIZE, 0, 0, &100u32.to_be_bytes()));
    w.extend(c.message(2, msg::USER_CONTROL, 0, 0, &[0, 6, 0, 0, 0x12, 0x34]));
    w.extend(c.command(0, "noSuchCommand", &[Amf0Value::Null]));
    let mut amf3 = vec![0u8];
    amf3.extend_from_slice(&msg::command_payload("createStream", 42.0, &[Amf0Value::Null]));
    w.extend(c.message(3, msg::COMMAND_AMF3, 0, 0, &amf3));
    w.extend(c.message(3, 99, 0, 0, b"unknown message type"));
    let mut input = BytesMut::from(&w[..]);
    s.handle_input(&mut input).unwrap();
    assert!(input.is_empty());
    let msgs = receive(&mut c, &mut s);
    assert!(msgs.iter().any(|m| m.type_id == msg::USER_CONTROL && m.payload[..] == [0, 7, 0, 0, 0x12, 0x34]));
    let ack = msgs.iter().find(|m| m.type_id == msg::ACKNOWLEDGEMENT).expect("ack after window");
    assert_eq!(&ack.payload[..], &(w.len() as u32).to_be_bytes());
    let cmds: Vec<_> = msgs
        .iter()
        .filter(|m| m.type_id == msg::COMMAND_AMF0)
        .map(|m| msg::Command::parse(m.type_id, &m.payload).unwrap())
        .collect();
    let err = cmds.iter().find(|c| c.name == "_error").unwrap();
    assert_eq!(err.args[0].get("code").and_then(Amf0Value::as_str), Some("NetConnection.Call.Failed"));
    assert!(cmds.iter().any(|c| c.name == "_result" && c.transaction_id == 42.0));
}

#[test]
fn publish_before_connect_does_not_panic() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut w = c.handshake();
    w.extend(c.publish(1, "x"));
    w.extend(c.media(1, MediaKind::Audio, 0, &[1]));
    let mut s = server();
    let mut input = BytesMut::from(&w[..]);
    s.handle_input(&mut input).unwrap();
    assert_eq!(s.poll_event(), None);
    let cmds = receive_commands(&mut c, &mut s);
    assert_eq!(cmds[0].args[0].get("level").and_then(Amf0Value::as_str), Some("error"));
}

#[test]
fn play_session_round_trip_zero_copy() {
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = ServerSession::new(SessionConfig { out_chunk_size: 4096, ..SessionConfig::default() });
    let mut w = c.handshake();
    w.extend(c.connect("live?tok=1"));
    w.extend(c.create_stream());
    w.extend(c.command(0, "getStreamLength", &[Amf0Value::Null, Amf0Value::string("x")]));
    w.extend(c.play(1, "x"));
    let mut input = BytesMut::from(&w[..]);
    s.handle_input(&mut input).unwrap();
    assert_eq!(
        s.poll_event(),
        Some(SessionEvent::Connected {
            app: "live".into(),
            tc_url: Some("rtmp://127.0.0.1/live?tok=1".into()),
            caps: Default::default()
        })
    );
    let ev = s.poll_event().unwrap();
    let req = request_id(&ev).unwrap();
    assert_eq!(
        ev,
        SessionEvent::PlayRequested { req, stream_id: 1, app: "live".into(), name: "x".into(), query: "tok=1".into() }
    );
    receive(&mut c, &mut s);
    s.accept(req);
    let codes: Vec<String> = receive_commands(&mut c, &mut s)
        .iter()
        .filter_map(|c| c.args.first().and_then(|a| a.get("code")).and_then(Amf0Value::as_str).map(String::from))
        .collect();
    assert_eq!(codes, vec!["NetStream.Play.Reset", "NetStream.Play.Start"]);

    let media = vec![
        (MediaKind::Video, 0u32, Bytes::from(payload(10_000, 1))),
        (MediaKind::Audio, 0, Bytes::from(payload(300, 2))),
        (MediaKind::Video, 0x00FF_FFFF, Bytes::from(payload(9_000, 3))),
        (MediaKind::Audio, 0xFFFF_FFFF, Bytes::from(payload(5000, 4))),
        (MediaKind::Video, 40, Bytes::from(payload(0, 5))),
    ];
    s.send_metadata(1, metadata_body());
    let mut pieces = Vec::new();
    for (kind, ts, p) in &media {
        s.send_media(1, *kind, *ts, p.clone());
        let mut shared = 0;
        while let Some(piece) = s.poll_transmit() {
            if bytes_in(&piece, p) {
                shared += piece.len();
            }
            pieces.push(piece);
        }
        assert_eq!(shared, p.len(), "payload is sent as slices of itself");
    }
    s.send_end_of_stream(1);
    while let Some(piece) = s.poll_transmit() {
        pieces.push(piece);
    }
    let mut decoder = super::chunk::ChunkDecoder::new(1 << 24);
    decoder.set_chunk_size(4096).unwrap();
    let mut buf = BytesMut::new();
    for p in &pieces {
        buf.extend_from_slice(p);
    }
    let mut got = Vec::new();
    while let Some(m) = decoder.decode(&mut buf).unwrap() {
        got.push(m);
    }
    assert!(buf.is_empty());
    assert_eq!((got[0].type_id, &got[0].payload), (msg::DATA_AMF0, &metadata_body()));
    for (m, (kind, ts, p)) in got[1..].iter().zip(&media) {
        let t = if *kind == MediaKind::Audio { msg::AUDIO } else { msg::VIDEO };
        assert_eq!((m.type_id, m.stream_id, m.timestamp, &m.payload), (t, 1, *ts, p));
    }
    let tail = &got[1 + media.len()..];
    let st = msg::Command::parse(tail[0].type_id, &tail[0].payload).unwrap();
    assert_eq!(st.args[0].get("code").and_then(Amf0Value::as_str), Some("NetStream.Play.UnpublishNotify"));
    assert_eq!(&tail[1].payload[..], &[0, 1, 0, 0, 0, 1]);

    // play control on the playing stream becomes events; without its argument or on a
    // stream that is not playing, nothing
    let mut w = Vec::new();
    w.extend(c.command(1, "pause", &[Amf0Value::Null, Amf0Value::Boolean(true), Amf0Value::Number(5.0)]));
    w.extend(c.command(1, "receiveAudio", &[Amf0Value::Null, Amf0Value::Number(0.0)]));
    w.extend(c.command(1, "receiveVideo", &[Amf0Value::Null, Amf0Value::Boolean(true)]));
    w.extend(c.command(1, "seek", &[Amf0Value::Null, Amf0Value::Number(1000.0)]));
    w.extend(c.command(1, "pause", &[Amf0Value::Null]));
    w.extend(c.command(7, "pause", &[Amf0Value::Null, Amf0Value::Boolean(true)]));
    let mut input = BytesMut::from(&w[..]);
    s.handle_input(&mut input).unwrap();
    let controls: Vec<_> = std::iter::from_fn(|| s.poll_event()).collect();
    let control = |control| SessionEvent::PlayControl { stream_id: 1, control };
    assert_eq!(
        controls,
        vec![
            control(PlayControl::Pause(true)),
            control(PlayControl::ReceiveAudio(false)),
            control(PlayControl::ReceiveVideo(true)),
            control(PlayControl::Seek(1000.0)),
        ]
    );

    // closeStream from the viewer ends the play.
    let mut input = BytesMut::from(&c.command(1, "closeStream", &[Amf0Value::Null])[..]);
    s.handle_input(&mut input).unwrap();
    assert_eq!(s.poll_event(), Some(SessionEvent::PlayStopped));
}

// ---- captured ffmpeg publish ----

const FIXTURE: &[u8] = include_bytes!("../../../fixtures/rtmp/ffmpeg_publish.bin");

fn check_ffmpeg_events(events: &[SessionEvent]) {
    assert!(matches!(&events[0], SessionEvent::Connected { app, .. } if app == "live"));
    assert!(matches!(
        &events[1],
        SessionEvent::PublishRequested { app, name, query, stream_id: 1, .. } if app == "live" && name == "x" && query.is_empty()
    ));
    let SessionEvent::Metadata { payload } = &events[2] else { panic!("metadata expected, got {:?}", events[2]) };
    let vals = amf0::decode_all(payload).unwrap();
    assert_eq!(vals[0].as_str(), Some("onMetaData"));
    assert_eq!(vals[1].get("width").and_then(Amf0Value::as_number), Some(320.0));

    let mut first_video = None;
    let mut first_audio = None;
    let mut last_video_ts = 0;
    let (mut nvideo, mut naudio) = (0, 0);
    for ev in &events[3..] {
        match ev {
            SessionEvent::Media { kind: MediaKind::Video, timestamp, payload } => {
                first_video.get_or_insert_with(|| payload.clone());
                assert!(*timestamp >= last_video_ts, "video timestamps never decrease");
                last_video_ts = *timestamp;
                nvideo += 1;
            }
            SessionEvent::Media { kind: MediaKind::Audio, payload, .. } => {
                first_audio.get_or_insert_with(|| payload.clone());
                naudio += 1;
            }
            SessionEvent::Unpublished => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let v = first_video.unwrap();
    assert_eq!(&v[..2], &[0x17, 0x00], "AVC sequence header first");
    let a = first_audio.unwrap();
    assert_eq!((a[0] >> 4, a[1]), (10, 0), "AAC sequence header first");
    assert!(nvideo >= 40 && naudio >= 60, "{nvideo} video, {naudio} audio");
    assert!(last_video_ts >= 1500);
}

#[test]
fn ffmpeg_fixture_whole() {
    let events = drive(&mut server(), [FIXTURE]);
    check_ffmpeg_events(&events);
}

#[test]
fn ffmpeg_fixture_split_points_and_byte_by_byte() {
    let reference = drive(&mut server(), [FIXTURE]);
    let splits = (0..8192.min(FIXTURE.len())).chain((8192..FIXTURE.len()).step_by(97));
    for k in splits {
        assert_eq!(drive(&mut server(), [&FIXTURE[..k], &FIXTURE[k..]]), reference, "split at {k}");
    }
    assert_eq!(drive(&mut server(), FIXTURE.chunks(1)), reference);
}

#[test]
fn ffmpeg_fixture_uses_the_digest_handshake() {
    let mut c1 = [0u8; super::handshake::HANDSHAKE_SIZE];
    c1.copy_from_slice(&FIXTURE[1..1537]);
    assert!(super::handshake::find_digest(&c1, super::handshake::FP_KEY_TEXT).is_some());
}

/// Drives `session` over a real socket until the peer closes, calling `on_event` for every
/// event (a stand-in for the ingest edge). Returns the events.
fn serve_socket(
    sock: &mut std::net::TcpStream,
    s: &mut ServerSession,
    mut on_event: impl FnMut(&mut ServerSession, &SessionEvent),
) -> Vec<SessionEvent> {
    use std::io::{Read, Write};
    sock.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let mut input = BytesMut::new();
    let mut buf = [0u8; 65536];
    let mut events = Vec::new();
    loop {
        let n = match sock.read(&mut buf) {
            Ok(0) | Err(_) => break, // ffmpeg may reset the connection with unread data
            Ok(n) => n,
        };
        input.extend_from_slice(&buf[..n]);
        loop {
            s.handle_input(&mut input).unwrap();
            let mut decided = false;
            while let Some(ev) = s.poll_event() {
                if let Some(req) = request_id(&ev) {
                    s.accept(req);
                    decided = true;
                }
                on_event(s, &ev);
                events.push(ev);
            }
            if !decided {
                break;
            }
        }
        while let Some(b) = s.poll_transmit() {
            if sock.write_all(&b).is_err() {
                return events;
            }
        }
    }
    events
}

fn spawn_ffmpeg(args: &[&str]) -> std::process::Child {
    std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-hide_banner", "-loglevel", "error", "-y"])
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ffmpeg on PATH")
}

/// End to end against a real player: ffmpeg connects over TCP (digest handshake, verifying
/// our S1 digest and S2 signature), plays, and receives the fixture's media re-sent with
/// `send_metadata` / `send_media`, then stops at `send_end_of_stream`.
#[test]
#[ignore = "needs ffmpeg on PATH; run with: cargo test --lib rtmp -- --ignored"]
fn ffmpeg_plays_from_session() {
    let media = drive(&mut server(), [FIXTURE]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let out_path = std::env::temp_dir().join(format!("livegate-rtmp-play-{}.flv", std::process::id()));
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let out = out_path.to_string_lossy().to_string();
    let mut child = spawn_ffmpeg(&["-i", &url, "-c", "copy", "-f", "flv", &out]);
    let (mut sock, _) = listener.accept().unwrap();
    serve_socket(&mut sock, &mut server(), |s, ev| {
        if let SessionEvent::PlayRequested { stream_id, name, .. } = ev {
            assert_eq!(name, "x");
            for e in &media {
                match e {
                    SessionEvent::Metadata { payload } => s.send_metadata(*stream_id, payload.clone()),
                    SessionEvent::Media { kind, timestamp, payload } => {
                        s.send_media(*stream_id, *kind, *timestamp, payload.clone())
                    }
                    _ => {}
                }
            }
            s.send_end_of_stream(*stream_id);
        }
    });
    let status = child.wait().unwrap();
    let size = std::fs::metadata(&out_path).map(|m| m.len()).unwrap_or(0);
    let _ = std::fs::remove_file(&out_path);
    assert!(status.success(), "ffmpeg failed: {status}");
    assert!(size > 20_000, "ffmpeg wrote only {size} bytes");
}

/// End to end against a real publisher: ffmpeg publishes live over TCP and the session
/// yields the expected events.
#[test]
#[ignore = "needs ffmpeg on PATH; run with: cargo test --lib rtmp -- --ignored"]
fn ffmpeg_publishes_to_session() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let url = format!("rtmp://127.0.0.1:{port}/live/x");
    let mut child = spawn_ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=320x240:rate=25",
        "-f",
        "lavfi",
        "-i",
        "sine",
        "-t",
        "2",
        "-c:v",
        "libx264",
        "-g",
        "25",
        "-bf",
        "2",
        "-c:a",
        "aac",
        "-f",
        "flv",
        &url,
    ]);
    let (mut sock, _) = listener.accept().unwrap();
    let events = serve_socket(&mut sock, &mut server(), |_, _| {});
    let status = child.wait().unwrap();
    assert!(status.success(), "ffmpeg failed: {status}");
    check_ffmpeg_events(&events);
    assert_eq!(events.last(), Some(&SessionEvent::Unpublished));
}

/// Cheap fuzzing: corrupted copies of the fixture and random garbage after a valid session
/// start must never panic (errors are fine).
#[test]
fn mutated_inputs_never_panic() {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let feed = |data: &[u8], step: usize| {
        let mut s = server();
        let mut input = BytesMut::new();
        for piece in data.chunks(step.max(1)) {
            input.extend_from_slice(piece);
            loop {
                if s.handle_input(&mut input).is_err() {
                    return;
                }
                let mut decided = false;
                while let Some(ev) = s.poll_event() {
                    if let Some(req) = request_id(&ev) {
                        s.accept(req);
                        decided = true;
                    }
                }
                if !decided {
                    break;
                }
            }
            while s.poll_transmit().is_some() {}
        }
    };
    for i in 0..1000 {
        let mut data = FIXTURE.to_vec();
        for _ in 0..1 + next() % 8 {
            // Mostly corrupt the command/metadata-heavy start, sometimes anywhere.
            let range = if i % 2 == 0 { 6000 } else { data.len() };
            let pos = 1 + (next() as usize) % (range - 1);
            data[pos] = next() as u8;
        }
        feed(&data, 1 + (next() as usize) % 4096);
    }
    let mut c = ClientSession::new(ClientConfig::default());
    let start = published(&mut c);
    for _ in 0..500 {
        let mut data = start.clone();
        data.extend((0..(next() % 2000)).map(|_| next() as u8));
        feed(&data, 1 + (next() as usize) % 64);
    }
}

#[test]
fn media_parts_prefix_and_shared_payload_decode_as_one_message() {
    for chunk_size in [4u32, 128, 4096] {
        let mut enc = super::chunk::ChunkEncoder::default();
        enc.set_chunk_size(chunk_size);
        let header = [0x17u8, 1, 0, 0, 0x50];
        let body = Bytes::from(payload(1000, 9));
        let mut shared = 0;
        let mut buf = BytesMut::new();
        enc.write_zero_copy_in(
            &mut BytesMut::new(),
            |piece| {
                if bytes_in(&piece, &body) {
                    shared += piece.len();
                }
                buf.extend_from_slice(&piece);
            },
            6,
            0x0100_0000,
            msg::VIDEO,
            1,
            &header,
            body.clone(),
        );
        assert_eq!(shared, body.len(), "payload sent as slices of itself");
        let mut decoder = super::chunk::ChunkDecoder::new(1 << 24);
        decoder.set_chunk_size(chunk_size).unwrap();
        let m = decoder.decode(&mut buf).unwrap().expect("one message");
        assert!(buf.is_empty());
        let mut expect = header.to_vec();
        expect.extend_from_slice(&body);
        assert_eq!((m.timestamp, &m.payload[..]), (0x0100_0000, &expect[..]), "chunk size {chunk_size}");
    }
}

#[test]
fn enhanced_rtmp_capabilities_are_read_from_connect_and_announced_in_the_result() {
    use crate::rtmp::session::{ClientCapabilities, CAPS_EX_MULTITRACK};
    let mut c = ClientSession::new(ClientConfig::default());
    let mut s = ServerSession::new(SessionConfig::default());
    let mut w = c.handshake();
    w.extend(c.connect_with(
        "live",
        vec![
            ("fourCcList".into(), Amf0Value::StrictArray(vec![Amf0Value::string("hvc1"), Amf0Value::string("Opus")])),
            (
                "videoFourCcInfoMap".into(),
                Amf0Value::object([("av01", Amf0Value::Number(1.0)), ("vp09", Amf0Value::Number(2.0))]),
            ),
            ("capsEx".into(), Amf0Value::Number(3.0)),
        ],
    ));
    let mut input = BytesMut::from(&w[..]);
    s.handle_input(&mut input).unwrap();
    let Some(SessionEvent::Connected { caps, .. }) = s.poll_event() else { panic!() };
    assert_eq!(
        caps,
        ClientCapabilities { codecs: Some(vec!["hvc1".into(), "Opus".into(), "av01".into()]), caps_ex: 3 }
    );
    assert_eq!((caps.announced(b"hvc1"), caps.announced(b"vp09")), (Some(true), Some(false)));
    assert_eq!(ClientCapabilities::default().announced(b"hvc1"), None);
    // the _result's properties list what the server forwards
    let mut out = BytesMut::new();
    while let Some(t) = s.poll_transmit() {
        out.extend_from_slice(&t);
    }
    let mut msgs = Vec::new();
    c.handle_input(&mut out, &mut msgs).unwrap();
    let result = msgs.iter().find(|m| m.type_id == msg::COMMAND_AMF0).expect("_result");
    let values = amf0::decode_all(&result.payload).unwrap();
    assert_eq!(values[0].as_str(), Some("_result"));
    let Some(Amf0Value::StrictArray(list)) = values[2].get("fourCcList") else { panic!("{:?}", values[2]) };
    assert!(list.iter().any(|v| v.as_str() == Some("hvc1")) && list.iter().any(|v| v.as_str() == Some("Opus")));
    let caps_ex = values[2].get("capsEx").and_then(Amf0Value::as_number).unwrap() as u32;
    assert_ne!(caps_ex & CAPS_EX_MULTITRACK, 0);
    assert_ne!(caps_ex & super::session::CAPS_EX_RECONNECT, 0, "the server sends reconnect requests");
    // a reconnect request, with a target
    s.send_reconnect_request(Some("rtmp://other.example/live"), "server going down");
    let mut out = BytesMut::new();
    while let Some(b) = s.poll_transmit() {
        out.extend_from_slice(&b);
    }
    let mut msgs = Vec::new();
    c.handle_input(&mut out, &mut msgs).unwrap();
    let values = amf0::decode_all(&msgs[0].payload).unwrap();
    assert_eq!((values[0].as_str(), msgs[0].stream_id), (Some("onStatus"), 0));
    assert_eq!(values[3].get("code").and_then(Amf0Value::as_str), Some("NetConnection.Connect.ReconnectRequest"));
    assert_eq!(values[3].get("tcUrl").and_then(Amf0Value::as_str), Some("rtmp://other.example/live"));
}
