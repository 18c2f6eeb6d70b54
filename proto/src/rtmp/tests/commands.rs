//! Commands besides publish: ping, unknown commands, acks and AMF3, commands out of order,
//! a play session round trip (zero copy) and the Enhanced RTMP capabilities of connect.

use super::*;

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
    let mut decoder = crate::rtmp::chunk::ChunkDecoder::new(1 << 24);
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
    assert_ne!(caps_ex & crate::rtmp::session::CAPS_EX_RECONNECT, 0, "the server sends reconnect requests");
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
