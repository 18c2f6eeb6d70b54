//! The chunk layer and hostile input: interleaved chunk streams, timestamp wraps, aggregate
//! messages, 3-byte basic headers, bad chunk sizes, huge lengths, nested AMF, a bad
//! handshake, mutated inputs, zero-copy media parts.

use super::*;

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
    // a codec header's prefix (its chunk header held inline) and a long one (a header
    // piece of its own)
    let long: Vec<u8> = (0..40).collect();
    for (chunk_size, header) in [
        (4u32, &[0x17u8, 1, 0, 0, 0x50][..]),
        (128, &[0x17, 1, 0, 0, 0x50]),
        (4096, &[0x17, 1, 0, 0, 0x50]),
        (4, &long[..]),
        (16, &long[..]),
    ] {
        let mut enc = crate::rtmp::chunk::ChunkEncoder::default();
        enc.set_chunk_size(chunk_size);
        let body = Bytes::from(payload(1000, 9));
        let mut shared = 0;
        let mut buf = BytesMut::new();
        enc.write_zero_copy(
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
            header,
            body.clone(),
        );
        assert_eq!(shared, body.len(), "payload sent as slices of itself");
        let mut decoder = crate::rtmp::chunk::ChunkDecoder::new(1 << 24);
        decoder.set_chunk_size(chunk_size).unwrap();
        let m = decoder.decode(&mut buf).unwrap().expect("one message");
        assert!(buf.is_empty());
        let mut expect = header.to_vec();
        expect.extend_from_slice(&body);
        assert_eq!((m.timestamp, &m.payload[..]), (0x0100_0000, &expect[..]), "chunk size {chunk_size}");
    }
}
