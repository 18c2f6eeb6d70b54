//! A publish session: the events and replies of connect, createStream and publish, with
//! every split of the input and both extended-timestamp conventions.

use super::*;

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
