//! Memory and resource bounds under attack, measured on the real binary (VmHWM, open
//! files, CPU ticks; every gateway runs under a 2 GiB address-space limit): unfinished
//! RTMP messages, pinned buffers, AMF0 amplification, empty NAL units, frozen timestamps,
//! tiny segments, held playlists, idle sockets. Each test also checks that a normal
//! stream still plays after the attack.

mod common;

use std::net::TcpStream;
use std::time::Duration;

use common::hostile::*;
use common::*;

#[test]
fn unfinished_rtmp_messages_are_bounded_per_connection_and_per_process() {
    // Six connections right after the handshake each start messages of the maximum size on
    // every chunk stream, sending all but the last chunk: unbounded, that is 61 × 8 MiB per
    // connection. Each may hold 2 × max_message_size; together (none publishes) they may
    // hold limits.unpublished_message_bytes.
    let mut gw = Gateway::start();
    let addr = gw.rtmp;
    let max = 8 * 1024 * 1024;
    // the unpublished budget (64 MiB), reserved message by message: exact
    let bound = 64 * MIB;
    assert_bounded(&mut gw, "unfinished messages", bound, 32 * MIB, |gw| {
        let attackers: Vec<_> = (0..6)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut c = Rtmp::connect(addr);
                    c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                    c.set_chunk_size(65_536);
                    let mut started = 0;
                    for csid in 3..64u8 {
                        if c.partial_message(csid, 9, max, max - 65_536).is_err() {
                            break;
                        }
                        started += 1;
                    }
                    (started, closed_by_server(&mut c.s, Duration::from_secs(5)))
                })
            })
            .collect();
        let results: Vec<(u32, bool)> = attackers.into_iter().map(|t| t.join().unwrap()).collect();
        println!("unfinished messages: (messages started, closed by server) per connection: {results:?}");
        assert!(results.iter().all(|(_, closed)| *closed), "every attacking connection is closed: {results:?}");
        assert!(results.iter().all(|(n, _)| *n <= 3), "no connection got far: {results:?}");
        // (the log reaches the test through a pipe and a reader thread: wait for the lines)
        let closes = || {
            let log = gw.log();
            log.matches("past the buffer budget").count() + log.matches("shared budget of unfinished messages").count()
        };
        assert!(
            wait_until(Duration::from_secs(5), || closes() >= 6),
            "each close is logged with its reason ({})",
            closes()
        );
        let metrics = http_get(gw.http, "/metrics").text();
        assert!(metrics.contains("livegate_limit_hits_total{limit=\"rtmp_message_buffer\"} 6"), "{metrics}");
    });
}

#[test]
fn small_frames_do_not_pin_the_buffers_of_big_ignored_messages() {
    // A publisher with a huge chunk size sends, 100 times, an ignored 8 MiB message and right
    // behind it a 20-byte audio frame. A frame sliced out of the same read buffer would keep
    // the 8 MiB alive while it sits in the ring (100 × 8 MiB against ring_bytes = 32 MiB).
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB; // ring_bytes + GOP max_bytes + two messages in flight
    assert_bounded(&mut gw, "pinned buffers", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "pin").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let audio_config = source().configs.iter().find(|t| t.kind == 8).unwrap().clone();
        c.send_tag(&audio_config).unwrap();
        c.set_chunk_size(0x7FFF_FFFF);
        let junk = vec![0u8; 8 * 1024 * 1024 - 64];
        for i in 0..100u32 {
            c.message(5, 0x55, 1, i * 23, &junk).expect("ignored message");
            let mut frame = vec![0xAF, 0x01];
            frame.extend_from_slice(&[0x21; 18]);
            c.message(4, 8, 1, i * 23, &frame).expect("audio frame");
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(stat(gw, "bytes_in", "pin") > 800_000_000, "the frames reached the stream");
        c.unpublish();
    });
}

#[test]
fn amf0_commands_cannot_amplify_before_auth() {
    // Right after the handshake: a connect whose arguments are a strict array of ~8 M
    // one-byte Nulls (unbounded: 32 bytes decoded per byte sent), then one of 64 nested strict
    // arrays each declaring as many elements as the message could hold (unbounded: gigabytes
    // of address space reserved from one message, an abort under the 2 GiB limit).
    let mut gw = Gateway::start();
    let max = 8 * 1024 * 1024 - 64;
    let bound = 2 * 8 * MIB; // the message itself, assembled
    assert_bounded(&mut gw, "AMF0 amplification", bound, 32 * MIB, |gw| {
        let mut nulls = amf_str("connect");
        nulls.extend(amf_num(1.0));
        nulls.push(0x0A);
        let count = max - nulls.len() - 4;
        nulls.extend_from_slice(&(count as u32).to_be_bytes());
        nulls.resize(max, AMF_NULL);
        let mut nested = amf_str("connect");
        nested.extend(amf_num(1.0));
        for _ in 0..64 {
            nested.push(0x0A);
            nested.extend_from_slice(&((max - nested.len()) as u32).to_be_bytes());
        }
        nested.resize(max, AMF_NULL);
        for (name, payload) in [("nulls", nulls), ("nested", nested)] {
            let mut c = Rtmp::connect(gw.rtmp);
            c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
            c.set_chunk_size(65_536);
            let _ = c.message(3, 20, 0, 0, &payload);
            assert!(closed_by_server(&mut c.s, Duration::from_secs(10)), "{name}: connection closed");
        }
        let log = gw.log();
        assert!(log.contains("AMF0 message decodes to more than 16384 values"), "reason logged");
    });
}

#[test]
fn frames_of_millions_of_empty_nal_units_are_dropped() {
    // avcC with 1-byte NAL lengths, then 8 MiB keyframes of zero bytes: 8 Mi empty NAL units
    // each. Collected into a list per frame in the TS path, that was 256 MiB per frame.
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB; // ring_bytes + GOP max_bytes + two messages in flight
    assert_bounded(&mut gw, "empty NAL units", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "nals").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut video_config = source().configs.iter().find(|t| t.kind == 9).unwrap().clone();
        video_config.body[9] = 0xFC; // avcC lengthSizeMinusOne = 0
        c.send_tag(&video_config).unwrap();
        c.set_chunk_size(1 << 20);
        let mut frame = vec![0x17, 0x01, 0, 0, 0];
        frame.resize(8 * 1024 * 1024 - 64, 0);
        for i in 0..20u32 {
            c.message(6, 9, 1, i * 40, &frame).expect("video frame");
        }
        assert!(
            gw.wait_log("access unit has more than 1024 NAL units", Duration::from_secs(10)),
            "the dropped frames are logged"
        );
        c.unpublish();
    });
}

#[test]
fn hls_segments_are_bounded_in_bytes_when_timestamps_stand_still() {
    // One keyframe, then 400 MiB of frames whose timestamp never moves: by media time the
    // open segment never ends. It is cut at hls.max_segment_bytes (16 MiB) and the stream's
    // segments stay within hls.max_stream_bytes (64 MiB).
    let mut gw = Gateway::start();
    let key = "live/frozen";
    // hls.max_stream_bytes + the open segment + ring_bytes + GOP max_bytes + two messages,
    // and (fMP4, the default Low-Latency variant) the open segment's frames, which the
    // muxer holds until it writes them out once
    let bound = 64 * MIB + 16 * MIB + 32 * MIB + 16 * MIB + 16 * MIB + 16 * MIB;
    assert_bounded(&mut gw, "frozen timestamps", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "frozen").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        c.send_configs(0);
        let first = frames_from(0).next().unwrap();
        c.send_tag(&first).unwrap();
        c.set_chunk_size(1 << 20);
        let mut frame = vec![0x27, 1, 0, 0, 0];
        let nal = 1024 * 1024 - 64;
        frame.extend_from_slice(&(nal as u32).to_be_bytes());
        frame.push(0x41);
        frame.resize(5 + 4 + nal, 0x5A);
        for _ in 0..400 {
            c.message(6, 9, 1, 40, &frame).expect("frozen frame");
            // paced like a (very high bitrate) encoder, so HLS keeps up and sees every frame
            std::thread::sleep(Duration::from_millis(15));
        }
        assert!(
            wait_until(Duration::from_secs(10), || metric(
                gw,
                "livegate_limit_hits_total{limit=\"hls_segment_bytes\"}"
            ) >= 20),
            "segments cut at the byte bound are counted"
        );
        c.unpublish();
        std::thread::sleep(Duration::from_millis(500));
        let pl = playlist(gw, key).expect("playlist");
        let uris: Vec<&str> = pl.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
        assert!(!uris.is_empty());
        let mut total = 0;
        for uri in &uris {
            let seg = http_get(gw.http, &format!("/live/{uri}"));
            if seg.status == 200 {
                assert!(seg.body.len() <= 16 * 1024 * 1024, "{uri} has {} bytes", seg.body.len());
                total += seg.body.len();
            }
        }
        println!("frozen timestamps: {} segments listed, {total} bytes downloadable", uris.len());
        assert!(total <= 64 * 1024 * 1024, "listed segments hold {total} bytes");
        assert!(gw.log().contains("segment reached its byte bound"), "the cut is logged");
    });
}

#[test]
fn tiny_segments_do_not_pile_up_in_the_window() {
    // 3,000 keyframes, each 11 s after the last (a timestamp jump: a new segment with a
    // discontinuity each time), make 3,000 segments of one frame (33 ms). Sized by media
    // time the window would list 180 of them; it lists at most window_segments + 2 × 3 + 1
    // = 13.
    let mut gw = Gateway::start();
    let mut c = Rtmp::publish(gw.rtmp, "live", "tiny").expect("publish");
    c.send_configs(0);
    let cpu_before = cpu_ticks(gw.pid());
    for i in 0..3000u32 {
        c.send_tag(&Tag { kind: 9, ts: i * 11_000, body: tiny_video(true) }).expect("keyframe");
        // paced, so that HLS keeps up and sees every frame
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        wait_until(Duration::from_secs(20), || playlist(&gw, "live/tiny")
            .is_some_and(|pl| media_sequence(&pl) + pl.matches("#EXTINF").count() as u64 >= 2990)),
        "the segments were made: {:?}",
        playlist(&gw, "live/tiny")
    );
    let pl = playlist(&gw, "live/tiny").unwrap();
    let listed = pl.lines().filter(|l| l.starts_with("#EXTINF")).count();
    let cpu = cpu_ticks(gw.pid()) - cpu_before;
    println!("tiny segments: {listed} listed after 3,000; server CPU {cpu} ticks (1/100 s) for the attack");
    assert!(listed <= 13, "{listed} segments listed");
    c.unpublish();
    assert_a_normal_stream_plays(&gw, "live/after");
    assert!(gw.is_running());
}

#[test]
fn ended_playlists_held_are_bounded_by_max_streams() {
    // Publish/leave churn over 40 new names with max_streams = 10: each ended playlist is
    // held for hold_time_ms (60 s), but no more of them than max_streams.
    let cfg = config_file(
        "hostile-held",
        "[limits]\nmax_streams = 10\n[hls]\nendlist_delay_ms = 0\n[hub]\nreconnect_grace_ms = 0\n",
    );
    let mut gw = Gateway::start_with(&["--config", &cfg]);
    for i in 0..40 {
        let mut c = Rtmp::publish(gw.rtmp, "live", &format!("churn{i}")).expect("publish");
        c.send_configs(0);
        send_media(&mut c, 0, 300, 100.0, |t| t);
        c.unpublish();
        let name = format!("live/churn{i}");
        assert!(wait_until(Duration::from_secs(5), || playlist(&gw, &name).is_some()), "{name} made a playlist");
    }
    let held: Vec<usize> = (0..40).filter(|i| playlist(&gw, &format!("live/churn{i}")).is_some()).collect();
    println!("held playlists after churn over 40 names with max_streams = 10: {held:?}");
    assert!(held.len() <= 10, "{} ended playlists held", held.len());
    assert!(held.contains(&39) && !held.contains(&0), "the oldest go first: {held:?}");
    assert!(metric(&gw, "livegate_limit_hits_total{limit=\"hls_held_streams\"}") >= 30);
    assert!(gw.is_running());
}

#[test]
fn streams_waiting_for_their_publisher_take_no_live_slot_and_are_bounded_per_address() {
    // Issue 28 #5: with max_streams = 20, a client publishing a new name and leaving, over
    // and over, kept all 20 slots taken (each stream waited out the 10 s reconnect grace)
    // and honest publishes were refused; one multitrack publish took 15 slots. Now a
    // waiting stream holds a waiting slot (at most max_waiting_streams_per_ip per address:
    // the oldest ends early) and a multitrack publish counts once.
    let cfg = config_file(
        "waiting-streams",
        "[limits]\nmax_streams = 20\nmax_waiting_streams_per_ip = 3\n[hub]\nreconnect_grace_ms = 60000\n\
         [hls]\nenabled = false\n",
    );
    let gw = Gateway::start_with(&["--config", &cfg]);
    let streams = |gw: &Gateway| -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_slice(&http_get(gw.http, "/api/streams").body).expect("api json");
        v["streams"].as_array().cloned().unwrap_or_default()
    };
    let waiting = |gw: &Gateway| streams(gw).iter().filter(|s| s["waiting_for_publisher_ms"].is_u64()).count();
    let mut attacks = 0;
    for i in 0..30 {
        if let Ok(mut c) = Rtmp::publish(gw.rtmp, "live", &format!("ghost{i}")) {
            c.send_configs(0);
            attacks += 1;
        } // dropped: the connection closes and the stream waits for its publisher
    }
    println!("{attacks} of 30 publish-and-leave cycles accepted");
    assert_eq!(attacks, 30, "a waiting stream takes no live slot");
    let ended = |gw: &Gateway| metric(gw, "livegate_limit_hits_total{limit=\"waiting_streams_per_ip\"}");
    assert!(
        wait_until(Duration::from_secs(10), || waiting(&gw) == 3 && ended(&gw) == 27),
        "{} streams wait, {} ended early",
        waiting(&gw),
        ended(&gw)
    );
    assert!(gw.wait_log("a stream waiting for its publisher ends early", Duration::from_secs(5)), "logged");
    // a multitrack publish with 7 more video and 7 more audio tracks: 15 streams, one publish
    let mut multi = Rtmp::publish(gw.rtmp, "live", "multi").expect("the multitrack publish");
    for (file, kind, magic) in [("multi.flv", 9u8, [0x96u8, 0x00]), ("multi_audio.flv", 8, [0x95, 0x00])] {
        let flv = std::fs::read(format!("{}/fixtures/ertmp/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let tags = parse_flv(&flv);
        let start = tags.iter().find(|t| t.kind == kind && t.body.starts_with(&magic)).expect("a track sequence start");
        // (the first track id is the publish's own track; the other 7 get streams)
        for track in 1..=8u8 {
            let mut body = start.body.to_vec();
            body[6] = track;
            multi.message(if kind == 9 { 6 } else { 4 }, kind, 1, 0, &body).expect("send");
        }
    }
    let names =
        |gw: &Gateway| streams(gw).iter().map(|s| s["name"].as_str().unwrap_or("").to_string()).collect::<Vec<_>>();
    assert!(wait_until(Duration::from_secs(10), || streams(&gw).len() == 3 + 15), "{:?}", names(&gw));
    // 19 more honest publishes of new names fit (all 20 live at once), the next does not
    let honest: Vec<Rtmp> = (0..19)
        .map(|i| Rtmp::publish(gw.rtmp, "live", &format!("honest{i}")).unwrap_or_else(|e| panic!("honest{i}: {e}")))
        .collect();
    let refused = Rtmp::publish(gw.rtmp, "live", "one-too-many").err().expect("max_streams still bounds publishes");
    assert!(refused.contains("NetStream.Publish.Rejected"), "{refused}");
    drop((honest, multi));
    // (the log reaches the test through a pipe and a reader thread: wait for the line)
    assert!(gw.wait_log("limit of 20 live streams", Duration::from_secs(5)), "the refusal is logged");
}

#[test]
fn idle_http_sockets_cannot_use_up_the_files_publishers_need() {
    // With an open-file limit of 512 the default limits (10,000 + 10,000) do not fit: they
    // are scaled to 128 + 128, logged at start. 400 idle HTTP sockets then take at most 128
    // files, and a publisher still gets in.
    let mut gw = Gateway::start_limited(&["--nofile=512:512"], &[]);
    assert!(gw.wait_log("scaled to the open-file limit of 512", Duration::from_secs(5)), "{}", gw.log());
    let idle: Vec<TcpStream> = (0..400).filter_map(|_| TcpStream::connect(gw.http).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    let open_fds = std::fs::read_dir(format!("/proc/{}/fd", gw.pid())).unwrap().count();
    println!("fd limit 512: {} idle HTTP sockets opened, server holds {open_fds} files", idle.len());
    assert!(open_fds < 400, "the server holds {open_fds} files");
    assert_a_normal_stream_plays_over_rtmp(&gw, "live/fds");
    drop(idle);
    assert!(gw.is_running());
}

#[test]
fn metadata_without_any_codec_configuration_is_not_hoarded() {
    // A publisher that sends only onMetaData, 100 × 8 MiB, and never a sequence header:
    // the HLS task waits for the first configuration before it starts a playlist and must
    // keep just the latest metadata meanwhile (800 MiB if it kept them all).
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB + 8 * MIB; // ring + GOP + messages in flight + the one kept
    assert_bounded(&mut gw, "metadata before a configuration", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "meta").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        c.set_chunk_size(1 << 20);
        let mut body = amf_str("@setDataFrame");
        body.extend(amf_str("onMetaData"));
        body.extend_from_slice(&[0x08, 0, 0, 0, 1]); // ECMA array of one entry
        body.extend_from_slice(&[0, 3]);
        body.extend_from_slice(b"pad");
        let len = 8 * 1024 * 1024 - 256 - body.len();
        body.push(0x0C); // long string
        body.extend_from_slice(&(len as u32).to_be_bytes());
        body.resize(body.len() + len, b'x');
        body.extend_from_slice(&[0, 0, 9]);
        for i in 0..100u32 {
            c.message(5, 18, 1, i, &body).expect("metadata");
        }
        std::thread::sleep(Duration::from_millis(500));
        assert!(stat(gw, "bytes_in", "meta") > 800_000_000, "the metadata reached the stream");
        c.unpublish();
    });
}
