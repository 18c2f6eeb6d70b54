//! Fuzz target bodies, shared by the `cargo fuzz` targets in `fuzz/` and by
//! the corpus replay test below, so the committed seeds and every regression
//! input run in plain `cargo test` on the stable toolchain. Compiled only for
//! tests and under `cargo fuzz` (which sets `--cfg fuzzing`): not product code.
//!
//! Each function takes arbitrary bytes, drives one sans-IO component and
//! panics only when an invariant breaks (never on bad input: bad input must
//! come back as an error). Not part of the gateway's API.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::flv::Demuxed;
use crate::flv::{audio_config_body, audio_tag_header, demux_audio, demux_video, video_config_body, video_tag_header};
use crate::hls::{Container, Playlist, PlaylistConfig, SegmentInfo, Segmenter, SegmenterConfig};
use crate::media::Event as HubEvent;
use crate::media::{
    AacConfig, AudioCodec, AudioConfig, AudioFrame, AvcConfig, CodecConfig, Frame, OpusConfig, Unwrapper, VideoCodec,
    VideoConfig, VideoFrame,
};
use crate::rtmp::amf0;
use crate::rtmp::chunk::RawMessage;
use crate::rtmp::handshake::HANDSHAKE_SIZE;
use crate::rtmp::message as msg;
use crate::rtmp::{ClientConfig, ClientSession};
use crate::rtmp::{MediaKind, ServerSession, SessionConfig, SessionEvent};

/// A fuzz target body.
pub type Target = fn(&[u8]);

/// The fuzz targets by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("handshake", handshake),
    ("session", session),
    ("amf0", amf0_round_trip),
    ("flv_demux", flv_demux),
    ("segmenter", segmenter),
];

/// The bytes a plain-handshake client sends before its first chunk: C0, C1, C2.
pub fn handshake_prefix() -> Vec<u8> {
    ClientSession::new(ClientConfig { rng_seed: 7, ..ClientConfig::default() }).handshake()
}

fn small_config() -> SessionConfig {
    // A small message limit keeps the fuzzer from spending its time on huge allocations.
    SessionConfig { max_message_size: 256 * 1024, ..SessionConfig::default() }
}

/// Checks the server's output after the handshake reply: it must decode as a
/// chunk stream (as a client would decode it), and the media and metadata we
/// queued must come back byte for byte, in order, with their timestamps.
struct OutputChecker {
    buf: BytesMut,
    client: ClientSession,
    messages: Vec<RawMessage>,
    expected: VecDeque<(u8, u32, Bytes)>,
}

impl OutputChecker {
    fn new() -> Self {
        let mut client = ClientSession::new(ClientConfig { max_message_size: u32::MAX, ..ClientConfig::default() });
        let _ = client.handshake(); // C2 "went out": the reply's S1 is not echoed again
        Self { buf: BytesMut::new(), client, messages: Vec::new(), expected: VecDeque::new() }
    }

    fn take(&mut self, s: &mut ServerSession) {
        while let Some(b) = s.poll_transmit() {
            self.buf.extend_from_slice(&b);
        }
        assert_eq!(s.pending_transmit_bytes(), 0);
        self.messages.clear();
        if let Err(e) = self.client.handle_input(&mut self.buf, &mut self.messages) {
            panic!("server output does not decode: {e}");
        }
        for m in self.messages.drain(..) {
            match m.type_id {
                msg::AUDIO | msg::VIDEO | msg::DATA_AMF0 => {
                    let (ty, ts, payload) = self.expected.pop_front().expect("unexpected media message");
                    assert_eq!((m.type_id, m.timestamp), (ty, ts));
                    assert_eq!(m.payload, payload);
                }
                msg::COMMAND_AMF0 => {
                    msg::Command::parse(m.type_id, &m.payload).expect("server commands parse");
                }
                _ => {}
            }
        }
    }
}

/// A fresh session fed arbitrary bytes (from C0 on) in pieces whose size the
/// first input byte chooses. The handshake reply comes once, is S0+S1+S2, and
/// echoes C1 unless the client used the digest handshake.
pub fn handshake(data: &[u8]) {
    let Some((&step, rest)) = data.split_first() else { return };
    let step = usize::from(step) * 16 + 1;
    let mut s = ServerSession::new(small_config());
    let mut input = BytesMut::new();
    let mut fed = 0usize;
    let mut replied = false;
    for piece in rest.chunks(step) {
        input.extend_from_slice(piece);
        fed += piece.len();
        let before_done = s.is_handshake_done();
        let result = s.handle_input(&mut input);
        while let Some(out) = s.poll_transmit() {
            if !replied {
                replied = true;
                assert_eq!(out.len(), 1 + 2 * HANDSHAKE_SIZE, "S0+S1+S2 in one piece");
                assert_eq!(out[0], 3);
                let c1 = &rest[1..1 + HANDSHAKE_SIZE];
                let digest =
                    crate::rtmp::handshake::find_digest(c1.try_into().unwrap(), b"Genuine Adobe Flash Player 001");
                if digest.is_none() {
                    assert_eq!(&out[1 + HANDSHAKE_SIZE..], c1, "plain handshake echoes C1");
                }
            }
        }
        if !before_done && s.is_handshake_done() {
            assert!(fed - input.len() > 2 * HANDSHAKE_SIZE);
        }
        if result.is_err() {
            return;
        }
        while s.poll_event().is_some() {}
    }
    if fed > HANDSHAKE_SIZE && rest[0] == 3 {
        assert!(replied, "C0+C1 complete but no reply");
    }
}

/// Arbitrary chunk-stream bytes after a valid plain handshake. Control byte 0
/// decides accept/reject per request (bit i for the i-th), byte 1 the piece
/// size. Accepted plays get media queued (exercising the chunk encoder with
/// sizes and timestamps from the input, extended ones included) and the whole
/// output must decode back.
pub fn session(data: &[u8]) {
    if data.len() < 2 {
        return;
    }
    let policy = data[0];
    let step = usize::from(data[1]) * 8 + 1;
    let body = &data[2..];
    let mut s = ServerSession::new(small_config());
    let mut check = OutputChecker::new();
    let mut input = BytesMut::from(&handshake_prefix()[..]);
    s.handle_input(&mut input).expect("valid handshake");
    assert!(s.is_handshake_done());
    check.take(&mut s);
    let mut requests = 0u32;
    let mut playing: Vec<u32> = Vec::new();
    let mut pieces = body.chunks(step);
    loop {
        let piece = pieces.next();
        if let Some(p) = piece {
            input.extend_from_slice(p);
        }
        // Decide every request, then let the session go on with what is buffered.
        loop {
            if s.handle_input(&mut input).is_err() {
                check.take(&mut s);
                return;
            }
            let mut decided = false;
            while let Some(ev) = s.poll_event() {
                match ev {
                    SessionEvent::PublishRequested { req, .. } | SessionEvent::PlayRequested { req, .. } => {
                        let accept = policy & (1 << (requests % 8)) != 0;
                        requests += 1;
                        let play_sid = match ev {
                            SessionEvent::PlayRequested { stream_id, .. } => Some(stream_id),
                            _ => None,
                        };
                        if accept {
                            s.accept(req);
                            playing.extend(play_sid);
                        } else {
                            s.reject(req, "NetStream.Publish.BadName", "fuzz");
                        }
                        decided = true;
                    }
                    SessionEvent::Media { payload, .. } | SessionEvent::Metadata { payload } => {
                        let _ = payload.len();
                    }
                    _ => {}
                }
            }
            if !decided {
                break;
            }
        }
        // Send some media to the viewers: the piece itself, at a timestamp taken from it.
        if let Some(p) = piece {
            for &sid in &playing {
                let ts = p.iter().take(4).fold(0u32, |acc, &b| acc << 8 | u32::from(b));
                let payload = Bytes::copy_from_slice(p);
                match p.first().map(|b| b % 3) {
                    Some(0) => {
                        s.send_media(sid, MediaKind::Video, ts, payload.clone());
                        check.expected.push_back((msg::VIDEO, ts, payload));
                    }
                    Some(1) => {
                        let (head, tail) = p.split_at(p.len().min(2));
                        s.send_media_parts(sid, MediaKind::Audio, ts, head, Bytes::copy_from_slice(tail));
                        check.expected.push_back((msg::AUDIO, ts, payload));
                    }
                    _ => {
                        s.send_metadata(sid, payload.clone());
                        check.expected.push_back((msg::DATA_AMF0, 0, payload));
                    }
                }
            }
        }
        check.take(&mut s);
        if piece.is_none() {
            break;
        }
    }
    for &sid in &playing {
        s.send_end_of_stream(sid);
    }
    check.take(&mut s);
    assert!(check.expected.is_empty(), "queued media never came out");
}

/// Decodes arbitrary bytes as AMF0 values; what decodes must re-encode to
/// bytes that decode to the same value (compared by re-encoding, so NaN counts
/// as equal to itself).
pub fn amf0_round_trip(data: &[u8]) {
    let mut buf = data;
    while !buf.is_empty() {
        let Ok(v) = amf0::decode(&mut buf) else { return };
        let enc = amf0::encode_all(std::slice::from_ref(&v));
        let mut slice = &enc[..];
        let back = amf0::decode(&mut slice).expect("re-encoded value decodes");
        assert!(slice.is_empty(), "trailing bytes after re-decoding {v:?}");
        assert_eq!(amf0::encode_all(&[back]), enc);
    }
    // Commands and metadata parse the same bytes through their own paths.
    let _ = msg::Command::parse(msg::COMMAND_AMF0, data);
    let _ = msg::Command::parse(msg::COMMAND_AMF3, data);
    let _ = msg::metadata_payload(msg::DATA_AMF0, &Bytes::copy_from_slice(data));
}

/// FLV tag bodies: byte 0 picks audio or video, bytes 1..9 the timestamp, the
/// rest is the body. What demuxes must re-mux to a body that demuxes the same.
pub fn flv_demux(data: &[u8]) {
    if data.len() < 9 {
        return;
    }
    let ts = i64::from_be_bytes(data[1..9].try_into().unwrap()) >> (data[0] % 32);
    let body = Bytes::copy_from_slice(&data[9..]);
    let mut out = Vec::new();
    let video = data[0] & 0x80 == 0;
    let r = if video { demux_video(ts, body, &mut out) } else { demux_audio(ts, body, &mut out) };
    if r.is_err() {
        return;
    }
    assert!(out.len() <= crate::flv::MAX_TRACKS_PER_MESSAGE, "tracks per message are bounded");
    let remux = |body: Vec<u8>| {
        let mut again = Vec::new();
        let r = if video {
            demux_video(ts, Bytes::from(body), &mut again)
        } else {
            demux_audio(ts, Bytes::from(body), &mut again)
        };
        r.expect("re-muxed body demuxes");
        assert_eq!(again.len(), 1);
        again.remove(0).1
    };
    for (_, item) in out {
        match item {
            Demuxed::VideoConfig(c) => {
                assert!(video, "audio demuxed to video");
                assert_eq!(remux(video_config_body(&c)), Demuxed::VideoConfig(c));
            }
            Demuxed::AudioConfig(c) => {
                assert!(!video, "video demuxed to audio");
                assert_eq!(remux(audio_config_body(&c)), Demuxed::AudioConfig(c));
            }
            Demuxed::Video(codec, v) => {
                assert!(video && v.dts == ts && !v.data.is_empty());
                // composition times survive only where the codec carries them
                let v =
                    if matches!(codec, VideoCodec::Avc | VideoCodec::Hevc) { v } else { VideoFrame { cts: 0, ..v } };
                let (h, len) = video_tag_header(&v, Some(codec));
                assert_eq!(remux([&h[..len], &v.data[..]].concat()), Demuxed::Video(codec, v));
            }
            Demuxed::Audio(codec, a) => {
                assert!(!video && a.pts == ts && !a.data.is_empty());
                let (h, len) = audio_tag_header(Some(codec));
                assert_eq!(remux([&h[..len], &a.data[..]].concat()), Demuxed::Audio(codec, a));
            }
            Demuxed::VideoMetadata(_) => assert!(video),
            Demuxed::Skip => {}
        }
    }
}

/// OpusHead, mono, 48 kHz.
const OPUS_HEAD: &[u8] = b"OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00";

/// avcC from x264, 320x240 High profile.
const AVCC_320X240: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10,
    0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb,
    0xe3, 0xcb, 0x22, 0xc0,
];

/// Reads the fuzz input as a little program.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }
    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.u8()?, self.u8()?]))
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from(self.u16()?) << 16 | u32::from(self.u16()?))
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

/// An access unit of `n` NAL units with types from the input, or raw bytes.
fn video_payload(r: &mut Reader, keyframe: bool) -> Option<Bytes> {
    let shape = r.u8()?;
    let size = usize::from(r.u16()? % 8192);
    if shape & 0x80 != 0 {
        return Some(Bytes::copy_from_slice(r.bytes(size)));
    }
    let mut out = Vec::with_capacity(size + 16);
    let nals = usize::from(shape % 4) + 1;
    for i in 0..nals {
        let ty = if i == nals - 1 {
            if keyframe {
                5
            } else {
                1
            }
        } else {
            r.u8()? % 32
        };
        let len = (size / nals).max(1);
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.push(0x60 | ty);
        out.extend(std::iter::repeat_n(0x88u8, len - 1));
    }
    Some(Bytes::from(out))
}

fn codec_config(r: &mut Reader, generation: u32) -> Option<CodecConfig> {
    let kind = r.u8()?;
    let video = match kind % 4 {
        0 => None,
        1 | 2 => Some(AvcConfig::parse(Bytes::from_static(AVCC_320X240)).expect("valid avcC")),
        _ => {
            let mut rec = AVCC_320X240.to_vec();
            let at = usize::from(r.u8()?) % rec.len();
            rec[at] ^= r.u8()?;
            rec.truncate(usize::from(r.u8()?).max(1));
            AvcConfig::parse(Bytes::from(rec)).ok()
        }
    };
    let audio = match (kind >> 2) % 4 {
        0 => None,
        1 | 2 => Some(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).expect("valid ASC")),
        _ => AacConfig::parse(Bytes::copy_from_slice(r.bytes(2))).ok(),
    };
    let video = video.map(|v| Arc::new(VideoConfig::Avc(v)));
    // the other audio codecs go through the fMP4 muxer's per-codec frame lengths
    let audio = match (kind >> 4) % 4 {
        1 => Some(AudioConfig::Opus(OpusConfig::parse(Bytes::from_static(OPUS_HEAD)).expect("valid OpusHead"))),
        2 => AudioConfig::from_frame(AudioCodec::Ac3, &[0x0b, 0x77, 0, 0, 0x04, 0x40, 0x00, 0x00]),
        _ => audio.map(AudioConfig::Aac),
    }
    .map(Arc::new);
    Some(CodecConfig { video, audio, generation, ..Default::default() })
}

/// A hand-rolled interpreter turns the input into hub events (configs valid
/// and garbage-derived, frames with arbitrary timestamps, flags and sizes,
/// discontinuities) for a segmenter, whose segments then feed a playlist.
/// Invariants: TS output is whole 188-byte packets with 0x47 sync, fMP4 output is
/// `moof` + `mdat` (and its initialization segment `ftyp` + `moov`) whose box sizes tile
/// it exactly; sequence
/// numbers increase by one; the target duration never changes once fixed.
/// Panics unless `data` is exactly the top-level boxes `kinds`, in order.
fn assert_boxes(mut data: &[u8], kinds: &[&[u8; 4]]) {
    for kind in kinds {
        assert!(data.len() >= 8, "truncated box");
        let size = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
        assert!(size >= 8 && size <= data.len(), "box size {size} of {} bytes", data.len());
        assert_eq!(&data[4..8], *kind);
        data = &data[size..];
    }
    assert!(data.is_empty(), "{} bytes after the last box", data.len());
}

pub fn segmenter(data: &[u8]) {
    let mut r = Reader(data);
    let Some(cfg) = r.u8() else { return };
    let container = if cfg & 0x80 != 0 { Container::Fmp4 } else { Container::MpegTs };
    let parts = container == Container::Fmp4 && cfg & 0x40 != 0;
    let config = SegmenterConfig {
        container,
        part_target_ms: parts.then_some(200),
        target_duration_ms: 500 + u64::from(cfg % 16) * 500,
        max_audio_pes_ms: 20 + u64::from((cfg >> 4) & 3) * 20,
        // small, so that fuzzed inputs reach the byte bound
        max_segment_bytes: 64 * 1024,
    };
    let mut seg = Segmenter::new(config, 0);
    let mut playlist = Playlist::new(PlaylistConfig::default(), seg.target_duration_secs());
    let mut next_seq = 0u64;
    let mut locked_target: Option<u64> = None;
    let mut video_clock = Unwrapper::new();
    let mut audio_clock = Unwrapper::new();
    let (mut vts, mut ats) = (0u32, 0u32);
    let mut wall = 1_700_000_000_000i64;
    let mut generation = 0;

    let mut open_parts: Vec<crate::hls::Part> = Vec::new();
    let mut check = |s: Option<crate::hls::Segment>, seg: &mut Segmenter, playlist: &mut Playlist| {
        while let Some(p) = seg.poll_part() {
            assert!(parts, "a part without a part target");
            assert_boxes(&p.data, &[b"moof", b"mdat"]);
            open_parts.push(p);
        }
        if let Some(s) = s {
            if container == Container::MpegTs {
                assert_eq!(s.data.len() % 188, 0, "segment of {} bytes", s.data.len());
                assert!(s.data.chunks(188).all(|p| p[0] == 0x47), "TS packet without sync byte");
            } else {
                let n = if parts { open_parts.iter().filter(|p| p.sequence == s.sequence).count() } else { 1 };
                let pairs: Vec<&[u8; 4]> = (0..n).flat_map(|_| [b"moof", b"mdat"]).collect();
                assert_boxes(&s.data, &pairs);
                let init = s.init.as_ref().expect("an fMP4 segment names its initialization segment");
                assert_boxes(&init.data, &[b"ftyp", b"moov"]);
            }
            if parts {
                let mine: Vec<u8> =
                    open_parts.iter().filter(|p| p.sequence == s.sequence).flat_map(|p| p.data.to_vec()).collect();
                assert_eq!(mine, s.data.to_vec(), "a segment is its parts, in order");
                open_parts.retain(|p| p.sequence > s.sequence);
            }
            assert_eq!(s.sequence, next_seq);
            next_seq += 1;
            let target = seg.target_duration_secs();
            assert_eq!(*locked_target.get_or_insert(target), target, "target duration changed");
            if playlist.next_sequence() == 0 {
                playlist.set_target_duration(target);
            }
            playlist.push(&SegmentInfo::from(&s));
            let text = playlist.render(false, |n| format!("{n}.ts"), |n| format!("{n}.mp4"));
            assert!(text.starts_with(b"#EXTM3U"));
        }
    };

    // Op byte: low nibble = action, high bits = flags (0x80 absolute timestamp,
    // 0x40 keyframe / large audio frame, 0x30 how far to shrink the cts).
    while let Some(op) = r.u8() {
        wall += i64::from(op % 64);
        let ev = match op & 0x0f {
            0 => {
                generation += 1;
                let Some(c) = codec_config(&mut r, generation) else { break };
                HubEvent::Config(c)
            }
            1..=5 => {
                let Some(step) = r.u16() else { break };
                // Mostly small steps; sometimes anything (the unwrapper makes jumps of up to ±2^31).
                vts = if op & 0x80 != 0 { r.u32().unwrap_or(0) } else { vts.wrapping_add(u32::from(step % 100)) };
                let cts = i32::from(r.u16().unwrap_or(0) as i16) >> (((op >> 4) & 3) * 4);
                let keyframe = op & 0x40 != 0;
                let Some(data) = video_payload(&mut r, keyframe) else { break };
                HubEvent::Frame(Frame::Video(VideoFrame { dts: video_clock.unwrap(vts), cts, keyframe, data }))
            }
            6..=10 => {
                let Some(step) = r.u16() else { break };
                ats = if op & 0x80 != 0 { r.u32().unwrap_or(0) } else { ats.wrapping_add(u32::from(step % 50)) };
                let len = if op & 0x40 != 0 { usize::from(step) } else { usize::from(step % 512) };
                let data = Bytes::from(vec![0x21; len]);
                HubEvent::Frame(Frame::Audio(AudioFrame { pts: audio_clock.unwrap(ats), data }))
            }
            11 => HubEvent::Discontinuity,
            12 => HubEvent::Metadata(Bytes::from_static(b"meta")),
            13 => HubEvent::EndOfStream,
            14 => {
                if op & 0x80 != 0 {
                    seg.mark_discontinuity();
                } else {
                    seg.lock_target_duration(u64::from(op >> 4));
                }
                continue;
            }
            _ => {
                let s = seg.flush();
                check(s, &mut seg, &mut playlist);
                continue;
            }
        };
        if let Ok(s) = seg.push(&ev, wall) {
            check(s, &mut seg, &mut playlist);
        }
    }
    let s = seg.flush();
    check(s, &mut seg, &mut playlist);
    let _ = playlist.render(true, |n| format!("{n}.ts"), |n| format!("{n}.mp4"));
}

#[cfg(test)]
mod corpus {
    use std::path::Path;

    /// Replays the committed fuzz seeds (`fuzz/seeds/TARGET/`) and crash reproducers
    /// (`fixtures/regress/TARGET/`) through every target; `scripts/fuzz.sh` does the
    /// actual fuzzing.
    #[test]
    fn committed_fuzz_inputs_pass_every_target() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for &(name, target) in super::TARGETS {
            let mut count = 0;
            for dir in [root.join("fuzz/seeds").join(name), root.join("fixtures/regress").join(name)] {
                let Ok(entries) = std::fs::read_dir(&dir) else { continue };
                let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
                files.sort();
                for file in files {
                    let data = std::fs::read(&file).unwrap();
                    let run = std::panic::catch_unwind(|| target(&data));
                    assert!(run.is_ok(), "fuzz target {name} fails on {}", file.display());
                    count += 1;
                }
            }
            assert!(count > 0, "no seeds for fuzz target {name}");
            println!("{name}: {count} inputs");
        }
    }
}
