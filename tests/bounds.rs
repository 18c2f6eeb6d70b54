//! Memory and resource bounds under attack, measured on the real binary (VmHWM, open
//! files, CPU ticks; every gateway runs under a 2 GiB address-space limit): unfinished
//! RTMP messages, pinned buffers, frames sliced out of multitrack messages and ModEx
//! chains, AMF0 amplification, empty NAL units, codec configurations and metadata, frozen
//! timestamps, tiny segments, held playlists, idle and silent sockets, HLS responses nobody
//! reads, waits for a multivariant playlist; the CPU of demuxing multitrack messages. Each
//! memory test also checks that a normal stream still plays after the attack.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// An Enhanced RTMP audio multitrack message (ManyTracks, CodedFrames, `mp4a`): track `i`
/// carries `sizes[i]` bytes of AAC.
fn audio_multitrack_message(sizes: &[usize]) -> Vec<u8> {
    let mut msg = vec![0x95, 0x11]; // ExAudioTagHeader, Multitrack; ManyTracks, CodedFrames
    msg.extend_from_slice(b"mp4a");
    for (track, &size) in sizes.iter().enumerate() {
        msg.push(track as u8);
        msg.extend_from_slice(&(size as u32).to_be_bytes()[1..]);
        msg.resize(msg.len() + size, 0x21);
    }
    msg
}

#[test]
fn small_track_frames_do_not_pin_their_multitrack_messages() {
    // 300 audio multitrack messages of 8 MiB, each a 20-byte AAC frame on track 0 and 8 MiB
    // on track 1 (no configuration: dropped). A frame sliced out of its message kept the
    // 8 MiB alive in the ring and the GOP cache, which counted 20 bytes: 300 × 8 MiB, an
    // abort under the 2 GiB limit after ~250 messages. Each frame is now copied out.
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB; // ring_bytes + GOP max_bytes + two messages in flight
    assert_bounded(&mut gw, "multitrack slices", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "mtpin").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let audio_config = source().configs.iter().find(|t| t.kind == 8).unwrap().clone();
        c.send_tag(&audio_config).unwrap();
        c.set_chunk_size(1 << 20);
        let msg = audio_multitrack_message(&[20, 8 * 1024 * 1024 - 64 - 6 - 2 * 4 - 20]);
        for i in 0..300u32 {
            c.message(4, 8, 1, i * 23, &msg).expect("multitrack message");
        }
        assert!(
            wait_until(Duration::from_secs(10), || stat(gw, "bytes_in", "mtpin") > 2_500_000_000),
            "the messages reached the stream"
        );
        c.unpublish();
    });
}

#[test]
fn small_frames_do_not_pin_their_modex_chains() {
    // 2,100 audio messages of 512 KiB: a ModEx chain of 8 entries of 64 KiB, then a 20-byte
    // AAC frame. Sliced out of its message, each frame kept the chain alive in the ring
    // (2,048 events × 512 KiB: +1 GiB). Each frame is now copied out.
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB; // ring_bytes + GOP max_bytes + two messages in flight
    assert_bounded(&mut gw, "ModEx slices", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "modexpin").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        let audio_config = source().configs.iter().find(|t| t.kind == 8).unwrap().clone();
        c.send_tag(&audio_config).unwrap();
        c.set_chunk_size(1 << 20);
        let mut msg = vec![0x97]; // ExAudioTagHeader, ModEx
        for i in 0..8 {
            msg.extend_from_slice(&[0xFF, 0xFF, 0xFF]); // 65,536 bytes of ModEx data
            msg.resize(msg.len() + 65_536, 0);
            msg.push(if i < 7 { 0x07 } else { 0x01 }); // TimestampOffsetNano; then ModEx, or CodedFrames
        }
        msg.extend_from_slice(b"mp4a");
        msg.extend_from_slice(&[0x21; 20]);
        for i in 0..2100u32 {
            c.message(4, 8, 1, i * 23, &msg).expect("ModEx message");
        }
        assert!(
            wait_until(Duration::from_secs(10), || stat(gw, "bytes_in", "modexpin") > 2100 * 524_288),
            "the messages reached the stream"
        );
        c.unpublish();
    });
}

/// The `hvcC` ffmpeg 9 (libx265) sent for fixtures/ertmp/hevc_opus.flv.
fn hvcc_fixture() -> Vec<u8> {
    let file = std::fs::read(format!("{}/fixtures/ertmp/hevc_opus.flv", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let tags = parse_flv(&file);
    let start = tags.iter().find(|t| t.kind == 9 && t.body.starts_with(b"\x90hvc1")).expect("an hvc1 sequence start");
    start.body[5..].to_vec()
}

#[test]
fn hevc_configurations_of_millions_of_empty_nal_units_are_refused() {
    // 30 `hvc1` sequence starts of 8 MiB, each the fixture's hvcC followed by PPS arrays of
    // ~4 M empty NAL unit entries in all (each one a different count), and a keyframe after
    // each. Parsed, each kept ~145 MiB (a list entry per empty NAL unit) in a configuration
    // event the ring counted as 64 bytes: an abort after 14. An hvcC is now refused past 256
    // NAL units.
    let mut gw = Gateway::start();
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB; // ring_bytes + GOP max_bytes + two messages in flight
    assert_bounded(&mut gw, "hvcC NAL units", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "hvcc").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        c.set_chunk_size(1 << 20);
        let record = hvcc_fixture();
        let max = 8 * 1024 * 1024 - 64;
        let mut keyframe = b"\x93hvc1".to_vec(); // CodedFramesX, keyframe
        keyframe.extend_from_slice(&[0, 0, 0, 3, 0x26, 0x01, 0xAF]);
        for i in 0..30u32 {
            let mut body = b"\x90hvc1".to_vec(); // SequenceStart
            body.extend_from_slice(&record);
            let mut arrays = 0;
            while body.len() + 3 + 2 <= max && arrays < 200 {
                let entries = ((max - body.len() - 3) / 2).min(65_535 - i as usize);
                body.push(34); // PPS
                body.extend_from_slice(&(entries as u16).to_be_bytes());
                body.resize(body.len() + 2 * entries, 0);
                arrays += 1;
            }
            body[5 + 22] += arrays; // numOfArrays
            c.message(6, 9, 1, i * 40, &body).expect("sequence start");
            c.message(6, 9, 1, i * 40, &keyframe).expect("keyframe");
        }
        assert!(
            wait_until(Duration::from_secs(10), || stat(gw, "bytes_in", "hvcc") > 30 * 8_000_000),
            "the messages reached the stream"
        );
        assert!(gw.wait_log("hvcC has more than 256 NAL units", Duration::from_secs(10)), "the refusal is logged");
        c.unpublish();
    });
}

#[test]
fn codec_configurations_and_video_metadata_weigh_what_they_hold() {
    // One stream: 150 AAC sequence headers of 8 MiB (each different) with an AAC frame after
    // each, then 150 Enhanced RTMP video Metadata messages of 8 MiB with a video frame after
    // each. Each change is a configuration event in the ring, which counted it as 64 bytes
    // whatever it held: 300 × 8 MiB, an abort after ~240. Configurations and metadata now
    // weigh their decoded size.
    let mut gw = Gateway::start();
    // ring_bytes + GOP max_bytes + two messages in flight + the configuration in use (held
    // by the demuxer, the stream and HLS) + the initialization segments HLS keeps (4 × 8 MiB)
    // and the one it is building
    let bound = 32 * MIB + 16 * MIB + 2 * 8 * MIB + 8 * MIB + 4 * 8 * MIB + 16 * MIB;
    assert_bounded(&mut gw, "configurations", bound, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "configs").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
        c.send_configs(0);
        let first = frames_from(0).next().unwrap();
        c.send_tag(&first).unwrap();
        c.set_chunk_size(1 << 20);
        let max = 8 * 1024 * 1024 - 64;
        let mut ts = 40;
        for i in 0..150u32 {
            let mut aac = vec![0xAF, 0x00, 0x12, 0x10]; // AAC sequence header: LC, 44.1 kHz, stereo
            aac.resize(max, 0);
            aac[4..8].copy_from_slice(&i.to_be_bytes());
            c.message(4, 8, 1, ts, &aac).expect("AAC sequence header");
            c.message(4, 8, 1, ts, &[0xAF, 0x01, 0x21, 0x10, 0x04]).expect("AAC frame");
            ts += 23;
        }
        for i in 0..150u32 {
            let mut meta = b"\x94avc1".to_vec(); // Enhanced RTMP video Metadata
            meta.extend(amf_str("colorInfo"));
            meta.resize(max, 0);
            meta[20..24].copy_from_slice(&i.to_be_bytes());
            c.message(6, 9, 1, ts, &meta).expect("video metadata");
            c.send_tag(&Tag { kind: 9, ts, body: tiny_video(false) }).expect("video frame");
            ts += 40;
        }
        assert!(
            wait_until(Duration::from_secs(10), || stat(gw, "bytes_in", "configs") > 300 * 8_000_000),
            "the messages reached the stream"
        );
        c.unpublish();
    });
}

/// A video multitrack message (ManyTracks, CodedFrames, `avc1`) of `tracks` tracks, each a
/// `size`-byte inter frame.
fn video_multitrack_message(tracks: u8, size: usize) -> Vec<u8> {
    let mut msg = vec![0xA6, 0x11]; // ExVideoTagHeader (inter frame), Multitrack; ManyTracks, CodedFrames
    msg.extend_from_slice(b"avc1");
    for t in 0..tracks {
        msg.push(t);
        msg.extend_from_slice(&(size as u32).to_be_bytes()[1..]);
        let nal = size - 3 - 4;
        msg.extend_from_slice(&[0, 0, 0]); // composition time
        msg.extend_from_slice(&(nal as u32).to_be_bytes());
        msg.push(0x41);
        msg.resize(msg.len() + nal - 1, 0x5A);
    }
    msg
}

/// Server CPU ticks taken by publishing `rounds` × `messages` (a round per 20 ms of media)
/// on `key` after `start` (tag type, body) and a keyframe, once the server has read them all
/// and gone quiet.
fn publish_cpu(gw: &Gateway, key: &str, start: &[(u8, Vec<u8>)], messages: &[(u8, Vec<u8>)], rounds: u32) -> u64 {
    let (app, name) = key.split_once('/').unwrap();
    let mut c = Rtmp::publish(gw.rtmp, app, name).expect("publish");
    c.s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    for (kind, body) in start {
        c.send_tag(&Tag { kind: *kind, ts: 0, body: body.clone() }).unwrap();
    }
    c.send_tag(&frames_from(0).next().unwrap()).unwrap();
    c.set_chunk_size(1 << 20);
    // (at most 10 s: the server is idle but for what it was sent)
    let settle = |gw: &Gateway| {
        let mut last = cpu_ticks(gw.pid());
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(300));
            let now = cpu_ticks(gw.pid());
            if now == last {
                break;
            }
            last = now;
        }
        last
    };
    let before = settle(gw);
    let mut sent = 0;
    for r in 0..rounds {
        for (kind, body) in messages {
            c.message(if *kind == 8 { 4 } else { 6 }, *kind, 1, 40 + r * 20, body).expect("send");
            sent += body.len() as u64;
        }
    }
    assert!(
        wait_until(Duration::from_secs(30), || stat(gw, "bytes_in", name) > sent),
        "the messages reached the stream"
    );
    let ticks = settle(gw) - before;
    c.unpublish();
    ticks
}

#[test]
fn a_multitrack_message_is_demuxed_once_for_all_its_track_streams() {
    // A publish of 64-track video messages and 63-track audio messages (every track a small
    // frame) starts 7 video and 7 audio track streams. Each track stream demuxed every
    // message again: 15 passes over 64 entries. Only video track 0 and audio track 63 (in
    // no message after its sequence start) are configured, so every stream but the
    // publish's own drops what it gets, and what is compared is demuxing: server CPU time
    // (not wall time) against the same number of messages of the same sizes sent as
    // single-track frames (with no audio configuration), with a wide margin.
    let gw = Gateway::start();
    let video = video_multitrack_message(64, 64);
    let audio = audio_multitrack_message(&[64; 63]);
    let video_config = source().configs.iter().find(|t| t.kind == 9).unwrap().body.clone();
    // a OneTrack AAC sequence start for audio track 63
    let audio_config = b"\x95\x00mp4a\x3f\x12\x10".to_vec();
    let mut plain_video = vec![0x27, 1, 0, 0, 0];
    plain_video.extend_from_slice(&((video.len() - 9) as u32).to_be_bytes());
    plain_video.push(0x41);
    plain_video.resize(video.len(), 0x5A);
    let mut plain_audio = vec![0xAF, 0x01];
    plain_audio.resize(audio.len(), 0x21);
    let rounds = 30_000;
    let plain =
        publish_cpu(&gw, "live/plain", &[(9, video_config.clone())], &[(9, plain_video), (8, plain_audio)], rounds);
    let multi =
        publish_cpu(&gw, "live/multi", &[(9, video_config), (8, audio_config)], &[(9, video), (8, audio)], rounds);
    let tracks = |key: &str| {
        let v: serde_json::Value =
            serde_json::from_slice(&http_get(gw.http, &format!("/api/streams/{key}")).body).unwrap_or_default();
        (v["tracks"].as_array().map_or(0, Vec::len), v["audio_tracks"].as_array().map_or(0, Vec::len))
    };
    println!(
        "{rounds} × (video + audio) messages of ~4.5 KB: server CPU {plain} ticks as single-track frames, {multi} ticks \
         as 64-track messages; track streams {:?}",
        tracks("live/multi")
    );
    assert_eq!(tracks("live/multi"), (7, 7), "the multitrack publish serves 7 + 7 track streams");
    assert!(multi < 10 * plain + 100, "64-track messages took {multi} ticks, single-track ones {plain}");
}

#[test]
fn silent_http_connections_are_closed_at_the_header_deadline_on_every_path() {
    // The whole max_http_connections (300 here) taken by sockets that send nothing, but for
    // one that sends a byte 8 s in: while they last every other client of the HTTP port is
    // refused. The first request head is due 10 s after a connection came, whichever path
    // waits for it (the peek before hyper, or hyper after a partial head): every one of
    // them is closed then, and /healthz answers again.
    let cfg = config_file("bounds-silent-http", "[limits]\nmax_http_connections = 300\n");
    let mut gw = Gateway::start_with(&["--config", &cfg]);
    assert_bounded(&mut gw, "silent HTTP connections", 16 * MIB, 32 * MIB, |gw| {
        let opened = Instant::now();
        let mut silent: Vec<TcpStream> = (0..299).map(|_| TcpStream::connect(gw.http).unwrap()).collect();
        let mut late = TcpStream::connect(gw.http).unwrap();
        std::thread::sleep(Duration::from_secs(8).saturating_sub(opened.elapsed()));
        late.write_all(b"G").unwrap();
        // due at 10 s; 4 s of slack for a loaded machine (a deadline that restarted with the
        // byte would close it at 18 s)
        let late_closed = closed_by_server(&mut late, Duration::from_secs(14).saturating_sub(opened.elapsed()));
        let late_secs = opened.elapsed().as_secs_f64();
        // (after 14 s, each gets 0.2 s more: a server that keeps them keeps them for good)
        let not_closed =
            silent.iter_mut().map(|s| closed_by_server(s, Duration::from_millis(200))).filter(|c| !c).count();
        println!(
            "silent HTTP connections: the late byte's connection closed {late_closed} ({late_secs:.1} s after connect); \
             {not_closed} of 299 silent ones still open {:.1} s after connect",
            opened.elapsed().as_secs_f64()
        );
        assert!(late_closed, "a connection that sent one byte 8 s in was still open after {late_secs:.1} s");
        assert_eq!(not_closed, 0, "{not_closed} of 299 silent connections still open after 10 s");
        assert_eq!(http_get(gw.http, "/healthz").status, 200, "the HTTP port answers again");
        assert!(metric(gw, "livegate_limit_hits_total{limit=\"http_header_timeout\"}") >= 300);
    });
}

#[test]
fn stalled_hls_responses_are_closed_and_free_the_segments_they_hold() {
    // A publisher of 1 MiB frames with a frozen timestamp fills a 16 MiB segment (cut at
    // max_segment_bytes) every ~0.4 s; the store keeps 64 MiB of them and drops the oldest.
    // Four clients fetch each new segment and never read. Unbounded, each response held its
    // segment for as long as its client stayed (here all ~25 segments, 400 MiB, long after
    // the store dropped them). With the write stall timeout (1 s here) a response holds its
    // segment at most that long after its client last took a byte: the bound is the frozen
    // timestamps' one plus what is published within the stall timeout and a second.
    let cfg = config_file("bounds-stalled-hls", "[http]\nviewer_stall_timeout_ms = 1000\n");
    let mut gw = Gateway::start_with(&["--config", &cfg]);
    // pacing: 1 MiB per 25 ms = 40 MiB/s
    let frozen = 64 * MIB + 16 * MIB + 32 * MIB + 16 * MIB + 16 * MIB + 16 * MIB;
    let bound = frozen + 2 * 40 * MIB;
    assert_bounded(&mut gw, "stalled HLS responses", bound, 32 * MIB, |gw| {
        let stop = Arc::new(AtomicBool::new(false));
        let (http, stop2) = (gw.http, stop.clone());
        let attacker = std::thread::spawn(move || {
            let mut seen = std::collections::HashSet::new();
            let mut stalled: Vec<TcpStream> = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let pl = http_get(http, "/live/stall.m3u8");
                for uri in pl.text().lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
                    if seen.insert(uri.to_string()) {
                        for _ in 0..4 {
                            stalled.push(never_reading_get(http, &format!("/live/{uri}")));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            stalled
        });
        let mut c = Rtmp::publish(gw.rtmp, "live", "stall").expect("publish");
        c.s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        c.send_configs(0);
        c.send_tag(&frames_from(0).next().unwrap()).unwrap();
        c.set_chunk_size(1 << 20);
        let mut frame = vec![0x27, 1, 0, 0, 0];
        let nal = 1024 * 1024 - 64;
        frame.extend_from_slice(&(nal as u32).to_be_bytes());
        frame.push(0x41);
        frame.resize(5 + 4 + nal, 0x5A);
        for _ in 0..400 {
            c.message(6, 9, 1, 40, &frame).expect("frozen frame");
            std::thread::sleep(Duration::from_millis(25));
        }
        // (the last segment fetched may be new: its fetches are due to stall out too)
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let mut stalled = attacker.join().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let fetched = stalled.len();
        let open = stalled.iter_mut().map(|s| closed_by_server(s, Duration::from_millis(200))).filter(|c| !c).count();
        let closes = metric(gw, "livegate_limit_hits_total{limit=\"http_write_stall\"}");
        println!("stalled HLS responses: {fetched} segment fetches that read nothing, {open} still open, {closes} closed for stalling");
        c.unpublish();
        assert!(fetched >= 40, "the attack fetched only {fetched} segments");
        assert_eq!(open, 0, "{open} of {fetched} stalled segment fetches still open");
        assert!(closes as usize >= fetched * 9 / 10, "stall closes counted: {closes}");
        assert!(gw.wait_log("took nothing of a response", Duration::from_secs(5)), "the close is logged");
    });
}

/// A GET of `path` that never reads the answer, on a socket whose receive buffer is small
/// (the server's writes block at once).
fn never_reading_get(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr.into()).unwrap();
    let mut s: TcpStream = s.into();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    s
}

#[test]
fn waits_for_a_multivariant_playlist_count_against_max_blocked_requests() {
    // A multitrack publish whose tracks have no segment yet (one keyframe): a request for its multivariant
    // playlist waits for the ladder, up to 3 target durations (6 s). With
    // max_blocked_requests = 20, of 100 such requests at once 20 wait and the rest get 503
    // at once (unbounded, all 100 waited).
    let cfg = config_file("bounds-ladder-wait", "[hls]\nmax_blocked_requests = 20\n");
    let mut gw = Gateway::start_with(&["--config", &cfg]);
    assert_bounded(&mut gw, "multivariant waits", 16 * MIB, 32 * MIB, |gw| {
        let mut c = Rtmp::publish(gw.rtmp, "live", "ladder").expect("publish");
        c.send_configs(0);
        // video track 1 (E-RTMP multitrack, one track: avc1, sequence start): the publish is a ladder
        let config = source().configs.iter().find(|t| t.kind == 9).expect("video config");
        c.send_tag(&Tag { kind: 9, ts: 0, body: as_video_track(&config.body, 1) }).unwrap();
        // one keyframe: the stream has video, no segment is complete
        c.send_tag(&frames_from(0).next().unwrap()).unwrap();
        assert!(
            gw.wait_log("track served as its own stream", Duration::from_secs(3)),
            "track 1 is served as a stream of its own"
        );
        let http = gw.http;
        let requests: Vec<_> = (0..100)
            .map(|_| {
                std::thread::spawn(move || {
                    http_request(http, "GET", "/live/ladder.m3u8", usize::MAX, Duration::from_secs(20)).status
                })
            })
            .collect();
        let statuses: Vec<u16> = requests.into_iter().map(|t| t.join().unwrap()).collect();
        let busy = statuses.iter().filter(|&&s| s == 503).count();
        let hits = metric(gw, "livegate_limit_hits_total{limit=\"hls_blocked_requests\"}");
        println!("multivariant waits: {busy} of 100 requests refused with 503 (limit 20); {hits} limit hits counted");
        c.unpublish();
        assert!(busy >= 80, "only {busy} of 100 waiting requests were refused: {statuses:?}");
        assert!(hits >= 80, "refusals counted: {hits}");
    });
}

#[test]
fn a_thousand_consoles_that_never_read_and_a_hammered_keyframe_endpoint_stay_bounded() {
    // 1,000 `/api/events` connections that never read a byte, while a stream publishes
    // (stats every 2 s to each), and 4,000 keyframe requests from 8 threads: the consoles
    // share one backlog (each is a cursor), keyframes are muxed once per keyframe.
    let mut gw = Gateway::start();
    let _publisher =
        publish(&gw.rtmp_url("live/kf"), common::Source { width: 320, height: 240, ..common::Source::default() }, None);
    assert!(wait_live(&gw, "live/kf", Duration::from_secs(10)));
    assert!(wait_until(Duration::from_secs(10), || http_get(gw.http, "/api/streams/live/kf/keyframe").status == 200));
    let addr = gw.http;
    assert_bounded(&mut gw, "1,000 consoles and a keyframe flood", 48 * MIB, 16 * MIB, |gw| {
        let consoles: Vec<TcpStream> = (0..1000)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                write!(s, "GET /api/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
                s
            })
            .collect();
        let open = wait_until(Duration::from_secs(10), || {
            let stats: serde_json::Value =
                serde_json::from_slice(&http_get(addr, "/api/stats").body).unwrap_or_default();
            stats["server"]["consoles"].as_u64() == Some(1000)
        });
        assert!(open, "the server counts 1,000 open consoles");
        let started = Instant::now();
        let flood: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    (0..500).filter(|_| http_get(addr, "/api/streams/live/kf/keyframe").status == 200).count()
                })
            })
            .collect();
        let served: usize = flood.into_iter().map(|t| t.join().unwrap()).sum();
        let rate = served as f64 / started.elapsed().as_secs_f64();
        println!("keyframe flood: {served} of 4000 served, {rate:.0}/s");
        assert_eq!(served, 4000);
        // the consoles' stats went on meanwhile; the stream is still fine
        assert!(gw.log().is_empty() || !gw.log().contains("panicked"));
        drop(consoles);
    });
    let gone = wait_until(Duration::from_secs(10), || {
        let stats: serde_json::Value = serde_json::from_slice(&http_get(addr, "/api/stats").body).unwrap_or_default();
        stats["server"]["consoles"].as_u64() == Some(0)
    });
    assert!(gone, "closed consoles are no longer counted");
}
