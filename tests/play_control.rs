//! RTMP play control with livegate's own client session: pause and resume at the live
//! edge, receiveAudio / receiveVideo, seek on a live stream, closeStream and a second play
//! on the same connection, and a viewer spamming pause within a bound.

mod common;

use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::hostile::{background_publisher, metric, Rtmp};
use common::*;
use livegate::rtmp::amf0::Amf0Value;
use livegate::rtmp::chunk::RawMessage;

/// A viewer that decodes what the server sends (from the first byte: the server's chunk
/// size is part of it).
struct Viewer {
    c: Rtmp,
    buf: BytesMut,
    /// Messages decoded after the one an `until` stopped at (they came in the same read),
    /// for the next `until`.
    pending: VecDeque<Got>,
}

/// A message as the test looks at it: its type and, for commands, the status code.
#[derive(Debug)]
enum Got {
    Status(String),
    Video { config: bool, key: bool },
    Audio,
    Other,
}

fn classify(m: &RawMessage) -> Got {
    match m.type_id {
        9 => {
            let b = &m.payload;
            // legacy AVC: frame type in the high nibble, AVC packet type 0 = sequence header
            Got::Video { config: b.len() > 1 && b[1] == 0, key: !b.is_empty() && b[0] >> 4 == 1 }
        }
        8 => Got::Audio,
        20 => {
            let text = String::from_utf8_lossy(&m.payload);
            match text.find("NetStream.") {
                Some(i) => Got::Status(text[i..].split(|c: char| c.is_control()).next().unwrap_or("").to_string()),
                None => Got::Other,
            }
        }
        _ => Got::Other,
    }
}

impl Viewer {
    fn play(gw: &Gateway, key: &str) -> Viewer {
        let (app, name) = key.split_once('/').unwrap();
        let mut c = Rtmp::connect_app(gw.rtmp, app);
        let m = c.client.play(1, name);
        c.s.write_all(&m).unwrap();
        let mut v = Viewer { buf: BytesMut::from(&c.seen[..]), c, pending: VecDeque::new() };
        let got = v.until(Duration::from_secs(10), |g| matches!(g, Got::Status(s) if s == "NetStream.Play.Start"));
        assert!(got.iter().any(|g| matches!(g, Got::Status(s) if s == "NetStream.Play.Start")), "{got:?}");
        v
    }

    fn command(&mut self, name: &str, args: &[Amf0Value]) {
        let mut values = vec![Amf0Value::Null];
        values.extend_from_slice(args);
        let m = self.c.client.command(1, name, &values);
        self.c.s.write_all(&m).unwrap();
    }

    /// Reads for `time`, or until `stop` matches a message; what came, in order.
    fn until(&mut self, time: Duration, mut stop: impl FnMut(&Got) -> bool) -> Vec<Got> {
        let start = Instant::now();
        let mut out = Vec::new();
        let mut read = [0u8; 16384];
        self.c.s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        loop {
            let mut msgs = Vec::new();
            self.c.client.handle_input(&mut self.buf, &mut msgs).expect("valid RTMP from the server");
            self.pending.extend(msgs.iter().map(classify));
            while let Some(g) = self.pending.pop_front() {
                let done = stop(&g);
                out.push(g);
                if done {
                    return out;
                }
            }
            if start.elapsed() > time {
                return out;
            }
            match self.c.s.read_some(&mut read) {
                Ok(0) => return out,
                Ok(n) => self.buf.extend_from_slice(&read[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => panic!("viewer read: {e}"),
            }
        }
    }

    fn read_for(&mut self, time: Duration) -> Vec<Got> {
        self.until(time, |_| false)
    }

    fn status(&mut self, code: &str) -> Vec<Got> {
        let got = self.until(Duration::from_secs(5), |g| matches!(g, Got::Status(s) if s == code));
        assert!(matches!(got.last(), Some(Got::Status(s)) if s == code), "no {code}: {got:?}");
        got
    }
}

fn count(got: &[Got], f: impl Fn(&Got) -> bool) -> usize {
    got.iter().filter(|g| f(g)).count()
}

fn video(g: &Got) -> bool {
    matches!(g, Got::Video { .. })
}

fn audio(g: &Got) -> bool {
    matches!(g, Got::Audio)
}

#[test]
fn pause_resume_track_switches_seek_and_a_second_play_on_one_connection() {
    let gw = Gateway::in_process("");
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = background_publisher(gw.rtmp, "live/ctl", 1.0, stop.clone());
    assert!(wait_until(Duration::from_secs(10), || gw_stream_live(&gw, "live/ctl")));
    let mut v = Viewer::play(&gw, "live/ctl");
    let got = v.read_for(Duration::from_millis(1500));
    assert!(count(&got, video) > 10 && count(&got, audio) > 10, "media before pausing: {got:?}");

    // pause: answered, then nothing until the resume
    v.command("pause", &[Amf0Value::Boolean(true), Amf0Value::Number(1500.0)]);
    v.status("NetStream.Pause.Notify");
    let got = v.read_for(Duration::from_millis(1500));
    assert_eq!(count(&got, |g| video(g) || audio(g)), 0, "media while paused: {got:?}");

    // resume at the live edge: sequence headers first, then a keyframe
    v.command("pause", &[Amf0Value::Boolean(false), Amf0Value::Number(1500.0)]);
    v.status("NetStream.Unpause.Notify");
    let got = v.read_for(Duration::from_millis(1200));
    let first = got.iter().find(|g| video(g));
    assert!(matches!(first, Some(Got::Video { config: true, .. })), "sequence header first after resuming: {got:?}");
    let first_frame = got.iter().find(|g| matches!(g, Got::Video { config: false, .. }));
    assert!(matches!(first_frame, Some(Got::Video { key: true, .. })), "a keyframe first: {got:?}");
    assert!(count(&got, video) > 10 && count(&got, audio) > 10, "media after resuming: {got:?}");

    // video off: audio only; video on again: from a keyframe
    v.command("receiveVideo", &[Amf0Value::Boolean(false)]);
    v.read_for(Duration::from_millis(300));
    let got = v.read_for(Duration::from_millis(1200));
    assert!(count(&got, video) == 0 && count(&got, audio) > 10, "receiveVideo false: {got:?}");
    v.command("receiveVideo", &[Amf0Value::Boolean(true)]);
    let got = v.until(Duration::from_secs(5), video);
    assert!(matches!(got.last(), Some(Got::Video { key: true, .. })), "video back from a keyframe: {got:?}");
    // audio off
    v.command("receiveAudio", &[Amf0Value::Boolean(false)]);
    v.read_for(Duration::from_millis(300));
    let got = v.read_for(Duration::from_millis(1200));
    assert!(count(&got, audio) == 0 && count(&got, video) > 10, "receiveAudio false: {got:?}");
    v.command("receiveAudio", &[Amf0Value::Boolean(true)]);
    // seek on a live stream: a status saying so, and it plays on
    v.command("seek", &[Amf0Value::Number(0.0)]);
    v.status("NetStream.Seek.Notify");
    let got = v.read_for(Duration::from_millis(1000));
    assert!(count(&got, video) > 5 && count(&got, audio) > 5, "playing on after seek: {got:?}");

    // closeStream frees the viewer slot; the connection plays again
    v.command("closeStream", &[]);
    assert!(wait_until(Duration::from_secs(5), || viewers(&gw, "live/ctl") == 0), "viewer slot freed");
    let m = v.c.client.play(1, "ctl");
    v.c.s.write_all(&m).unwrap();
    v.status("NetStream.Play.Start");
    let got = v.read_for(Duration::from_millis(1000));
    assert!(count(&got, video) > 5, "second play on the same connection: {got:?}");
    assert_eq!(viewers(&gw, "live/ctl"), 1);

    // a viewer spamming pause/resume: a bounded number are followed, the connection stays
    for i in 0..500 {
        v.command("pause", &[Amf0Value::Boolean(i % 2 == 0), Amf0Value::Number(0.0)]);
    }
    v.read_for(Duration::from_millis(1500));
    // the last of each second's allowed ones may have paused it: resume (a new second)
    v.command("pause", &[Amf0Value::Boolean(false), Amf0Value::Number(0.0)]);
    let got = v.read_for(Duration::from_millis(1500));
    assert!(count(&got, video) > 5, "playing after the spam: {got:?}");
    assert!(metric(&gw, "livegate_limit_hits_total{limit=\"rtmp_play_control\"}") >= 1);
    let statuses = count(&got, |g| matches!(g, Got::Status(_)));
    assert!(statuses < 20, "answers bounded: {statuses}");

    stop.store(true, Ordering::Relaxed);
    publisher.join().unwrap();
}

fn gw_stream_live(gw: &Gateway, key: &str) -> bool {
    http_get(gw.http, &format!("/api/streams/{key}")).status == 200
}

fn viewers(gw: &Gateway, key: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_slice(&http_get(gw.http, &format!("/api/streams/{key}")).body).unwrap_or_default();
    v["viewers"]["rtmp"].as_u64().unwrap_or(u64::MAX)
}
