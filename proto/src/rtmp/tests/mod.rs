//! Session-level tests: an in-memory test client against `ServerSession`, plus a captured
//! ffmpeg publish (`fixtures/rtmp/ffmpeg_publish.bin`, see `fixtures/rtmp/capture.py`).
//! The helpers shared by the tests are here; the tests are split by concern.

mod chunks;
mod commands;
mod ffmpeg;
mod publish;

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

fn published(c: &mut ClientSession) -> Vec<u8> {
    let mut w = c.handshake();
    w.extend(c.connect("live"));
    w.extend(c.create_stream());
    w.extend(c.publish(1, "x"));
    w
}

const FIXTURE: &[u8] = include_bytes!("../../../../fixtures/rtmp/ffmpeg_publish.bin");
