//! The captured ffmpeg publish (`fixtures/rtmp/ffmpeg_publish.bin`, see
//! `fixtures/rtmp/capture.py`) and, ignored by default, ffmpeg itself over a socket.

use super::*;

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
    let mut c1 = [0u8; crate::rtmp::handshake::HANDSHAKE_SIZE];
    c1.copy_from_slice(&FIXTURE[1..1537]);
    assert!(crate::rtmp::handshake::find_digest(&c1, crate::rtmp::handshake::FP_KEY_TEXT).is_some());
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
            // a read with a timeout is not restarted after a signal (signal(7))
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
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
