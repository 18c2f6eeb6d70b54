//! Unit tests of `segmenter`.

use super::*;
use crate::hls::testutil::*;
use crate::hls::ts::{PID_AUDIO, PID_VIDEO, STREAM_TYPE_AAC_ADTS, STREAM_TYPE_H264};
use crate::media::VideoFrame;

const WALL0: i64 = 1_700_000_000_000;

/// Runs events through a segmenter; wall clock = WALL0 + media time.
fn run(seg: &mut Segmenter, events: &[Event]) -> Vec<Segment> {
    let mut out = Vec::new();
    for ev in events {
        let wall = match ev {
            Event::Frame(f) => WALL0 + f.dts(),
            _ => WALL0,
        };
        out.extend(seg.push(ev, wall).unwrap());
    }
    out.extend(seg.flush());
    out
}

fn events(config: CodecConfig, frames: Vec<Frame>) -> Vec<Event> {
    std::iter::once(Event::Config(config)).chain(frames.into_iter().map(Event::Frame)).collect()
}

fn rounded_secs(ms: u64) -> u64 {
    (ms + 500) / 1000
}

/// Every segment starts with PAT, PMT, then an IDR access unit carrying a PCR.
fn assert_starts_with_idr(seg: &Segment) {
    let ts = parse_ts(&seg.data);
    let first = &ts.pes[0];
    assert_eq!(first.stream_id, 0xe0, "segment {} starts with video", seg.sequence);
    assert!(ts.packets[first.first_packet].random_access);
    assert!(ts.packets[first.first_packet].pcr.is_some());
    assert_eq!(&annexb_types(&first.payload)[..4], &[9, 7, 8, 5]);
}

/// 30 fps video with B-frames (cts pattern), keyframe every `gop` frames, plus audio.
fn av_bframes(n: usize, gop: usize) -> Vec<Frame> {
    let mut frames: Vec<Frame> = (0..n)
        .map(|i| {
            let dts = (i as i64 * 100) / 3;
            let cts = [0, 100, 33, 33][i % 4];
            Frame::Video(video_frame(dts, cts, i % gop == 0))
        })
        .collect();
    frames.extend(audio_frames(0, (n as i64 * 100 / 3 * 44_100 / 1024 / 1000) as usize));
    frames.sort_by_key(|f| (f.dts(), !f.is_video()));
    frames
}

#[test]
fn frozen_timestamps_are_cut_at_the_byte_bound() {
    // one keyframe, then 2,000 frames whose timestamps stand still: by media time the
    // segment never ends; by bytes it is cut before it passes max_segment_bytes
    let max = 64 * 1024;
    let mut s = Segmenter::new(SegmenterConfig { max_segment_bytes: max, ..SegmenterConfig::default() }, 0);
    let mut frames = vec![Frame::Video(video_frame(0, 0, true))];
    frames.extend((0..2000).map(|_| Frame::Video(video_frame(33, 0, false))));
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    assert!(segs.len() > 10, "{} segments", segs.len());
    assert_eq!(s.byte_limited_cuts(), segs.len() as u64 - 1, "all but the flushed one cut at the bound");
    for seg in &segs {
        assert!(seg.data.len() <= max, "segment {} has {} bytes", seg.sequence, seg.data.len());
        assert_eq!(seg.data.len() % 188, 0);
    }
    assert!(segs[0].independent && !segs[1].independent, "a cut at a non-key frame is marked");
    assert!(segs[..segs.len() - 1].iter().all(|s| s.byte_limited));
    // an ordinary stream never reaches the bound
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
    assert_eq!(s.byte_limited_cuts(), 0);
    assert!(segs.iter().all(|s| !s.byte_limited));
}

#[test]
fn cuts_exactly_at_keyframes_with_b_frames() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
    assert_eq!(s.target_duration_secs(), 2);
    assert_eq!(segs.len(), 5);
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg.sequence, i as u64);
        assert_eq!(seg.first_dts_ms, i as i64 * 2000);
        assert_eq!(seg.wall_clock_ms, WALL0 + i as i64 * 2000);
        assert!(seg.independent && !seg.discontinuity);
        assert_starts_with_idr(seg);
        let ts = parse_ts(&seg.data);
        // Only the first PES in the segment is a keyframe at the GOP start... and
        // keyframes inside the segment are at 1 s (GOP 30 frames).
        let video: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xe0).collect();
        assert_eq!(video.len(), 60);
    }
    assert!(segs[..4].iter().all(|s| s.duration_ms == 2000));
    assert!((1999..=2001).contains(&segs[4].duration_ms), "flushed segment: last dts + one frame");
}

#[test]
fn leading_non_keyframes_and_audio_before_first_keyframe_are_dropped() {
    let mut frames = av_bframes(120, 30);
    // Drop the first keyframe: the stream starts mid-GOP.
    frames.retain(|f| !(f.is_keyframe() && f.dts() == 0));
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, true), frames));
    assert_eq!(segs[0].first_dts_ms, 1000);
    assert_starts_with_idr(&segs[0]);
    let ts = parse_ts(&segs[0].data);
    let first_audio = ts.pes.iter().find(|p| p.stream_id == 0xc0).unwrap();
    assert!(first_audio.pts >= crate::hls::ts::ms_to_90k(1000) as u64);
}

#[test]
fn gop_longer_than_target_sets_a_fixed_target_from_the_first_gop() {
    // 2.4 s GOP (72 frames at 30 fps), configured target 2 s.
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(
        &mut s,
        &events(codec_config(true, false), av_bframes(72 * 5, 72).into_iter().filter(Frame::is_video).collect()),
    );
    assert_eq!(s.target_duration_secs(), 3);
    assert_eq!(segs.len(), 5);
    for seg in &segs {
        assert!((2399..=2400).contains(&seg.duration_ms));
        assert!(rounded_secs(seg.duration_ms) <= 3);
        assert_starts_with_idr(seg);
    }
}

#[test]
fn gop_equal_to_target_with_jitter_keeps_target() {
    // keyframes every 2001 ms
    let frames: Vec<Frame> = (0..10).map(|i| Frame::Video(video_frame(i * 2001, 0, true))).collect();
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    assert_eq!(s.target_duration_secs(), 2);
    assert!(segs[..segs.len() - 1].iter().all(|s| s.duration_ms == 2001));
}

#[test]
fn short_gop_that_does_not_divide_target_cuts_early() {
    // 1.5 s GOP, target 2 s: waiting for 3 s would exceed the target.
    let frames: Vec<Frame> = (0..300).map(|i| Frame::Video(video_frame(i * 30, 0, i % 50 == 0))).collect();
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    assert_eq!(s.target_duration_secs(), 2);
    // The first keyframe interval is only known at the second keyframe (1.5 s),
    // so the early cut applies from there on.
    assert!(
        segs[..segs.len() - 1].iter().all(|s| s.duration_ms == 1500),
        "{:?}",
        segs.iter().map(|s| s.duration_ms).collect::<Vec<_>>()
    );
    assert!(segs.iter().all(|s| rounded_secs(s.duration_ms) <= 2));
}

#[test]
fn target_stays_fixed_when_gop_grows_and_cuts_stay_on_keyframes() {
    // 2 s GOPs, then 4 s GOPs.
    let mut frames = Vec::new();
    for i in 0..300i64 {
        let dts = i * 40;
        let key = if dts < 6000 { dts % 2000 == 0 } else { dts % 4000 == 0 };
        frames.push(Frame::Video(video_frame(dts, 0, key)));
    }
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    assert_eq!(s.target_duration_secs(), 2);
    for seg in &segs {
        assert_starts_with_idr(seg);
        assert!(seg.independent);
    }
    assert!(segs.iter().any(|s| s.duration_ms == 4000), "overlong segment kept whole, not cut mid-GOP");
}

#[test]
fn locked_target_is_not_changed_by_first_gop() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    s.lock_target_duration(6);
    let segs = run(
        &mut s,
        &events(codec_config(true, false), av_bframes(300, 90).into_iter().filter(Frame::is_video).collect()),
    );
    assert_eq!(s.target_duration_secs(), 6);
    assert_eq!(segs[0].duration_ms, 3000);
}

#[test]
fn no_keyframes_for_too_long_forces_a_non_independent_cut() {
    let mut frames = vec![Frame::Video(video_frame(0, 0, true))];
    frames.extend((1..800).map(|i| Frame::Video(video_frame(i * 40, 0, false))));
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    assert_eq!(segs[0].duration_ms, 20_000);
    assert!(segs[0].independent);
    assert!(!segs[1].independent);
}

#[test]
fn audio_only_cuts_by_time() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let segs = run(&mut s, &events(codec_config(false, true), audio_frames(0, 44_100 * 9 / 1024)));
    assert_eq!(s.target_duration_secs(), 2);
    assert_eq!(segs.len(), 5);
    for seg in &segs[..4] {
        assert!((2000..2030).contains(&seg.duration_ms), "{}", seg.duration_ms);
        let ts = parse_ts(&seg.data);
        assert_eq!(ts.pmt.as_ref().unwrap().streams, vec![(STREAM_TYPE_AAC_ADTS, PID_AUDIO)]);
        assert!(ts.packets.iter().all(|p| p.pid != PID_VIDEO));
        assert!(ts.packets[2].pcr.is_some());
    }
    let total: u64 = segs.iter().map(|s| s.duration_ms).sum();
    assert!((8970..9030).contains(&total), "{total}");
}

#[test]
fn video_only_declares_only_video() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let frames = av_bframes(120, 30).into_iter().filter(Frame::is_video).collect();
    let segs = run(&mut s, &events(codec_config(true, false), frames));
    for seg in &segs {
        let ts = parse_ts(&seg.data);
        assert_eq!(ts.pmt.as_ref().unwrap().streams, vec![(STREAM_TYPE_H264, PID_VIDEO)]);
    }
}

#[test]
fn sequences_continue_from_first_sequence_and_cc_runs_on() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 41);
    let segs = run(&mut s, &events(codec_config(true, true), av_bframes(300, 30)));
    let seqs: Vec<u64> = segs.iter().map(|s| s.sequence).collect();
    assert_eq!(seqs, vec![41, 42, 43, 44, 45]);
    assert_eq!(s.next_sequence(), 46);
    let all: Vec<u8> = segs.iter().flat_map(|s| s.data.iter().copied()).collect();
    check_continuity(&parse_ts(&all).packets);
}

#[test]
fn config_change_starts_discontinuity_and_repeat_does_nothing() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let cfg = codec_config(true, true);
    let mut evs = events(cfg.clone(), av_bframes(60, 30));
    // Same parameters, new generation: ignored.
    evs.insert(20, Event::Config(CodecConfig { generation: 2, ..cfg.clone() }));
    let mut out = run_no_flush(&mut s, &evs);
    assert!(out.is_empty(), "repeat config must not cut");
    // New audio config (48 kHz): cut + discontinuity; next segment waits for a keyframe.
    let mut changed = cfg.clone();
    changed.audio = Some(std::sync::Arc::new(crate::media::AudioConfig::Aac(
        crate::media::AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap(),
    )));
    changed.generation = 3;
    out.extend(s.push(&Event::Config(changed), WALL0).unwrap());
    assert_eq!(out.len(), 1);
    assert!(!out[0].discontinuity);
    assert!((1990..=2010).contains(&out[0].duration_ms), "{}", out[0].duration_ms);
    // Non-key frame dropped, keyframe opens the discontinuous segment.
    assert!(s.push(&Event::Frame(Frame::Video(video_frame(2000, 0, false))), WALL0).unwrap().is_none());
    s.push(&Event::Frame(Frame::Video(video_frame(2033, 0, true))), WALL0).unwrap();
    let seg = s.flush().unwrap();
    assert!(seg.discontinuity);
    assert_eq!(seg.first_dts_ms, 2033);
    assert_eq!(seg.sequence, 1);
}

fn run_no_flush(seg: &mut Segmenter, events: &[Event]) -> Vec<Segment> {
    events.iter().filter_map(|ev| seg.push(ev, WALL0).unwrap()).collect()
}

#[test]
fn discontinuity_event_and_timestamp_jumps() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    let mut evs = events(codec_config(true, false), vec![]);
    let vf = |dts: i64, key: bool| Event::Frame(Frame::Video(video_frame(dts, 0, key)));
    evs.extend((0..15).map(|i| vf(i * 40, i == 0)));
    evs.push(Event::Discontinuity);
    evs.extend((0..15).map(|i| vf(i * 40, i == 0))); // timeline restarts at 0
    evs.extend((0..15).map(|i| vf(100_000 + i * 40, i % 5 == 0))); // forward jump, keyframe
    evs.extend((0..15).map(|i| vf(50_000 + i * 40, i == 3))); // backward jump, waits for keyframe
    let segs = run(&mut s, &evs);
    let summary: Vec<(u64, bool, i64)> = segs.iter().map(|s| (s.sequence, s.discontinuity, s.first_dts_ms)).collect();
    assert_eq!(summary, vec![(0, false, 0), (1, true, 0), (2, true, 100_000), (3, true, 50_120)]);
    for seg in &segs {
        assert_starts_with_idr(seg);
    }
}

#[test]
fn mark_discontinuity_closes_and_flags_next() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 7);
    s.push(&Event::Config(codec_config(true, false)), WALL0).unwrap();
    s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0).unwrap();
    s.mark_discontinuity();
    let first = s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0 + 5).unwrap().unwrap();
    assert_eq!((first.sequence, first.discontinuity), (7, false));
    let second = s.flush().unwrap();
    assert_eq!((second.sequence, second.discontinuity, second.wall_clock_ms), (8, true, WALL0 + 5));
}

#[test]
fn bad_frame_is_an_error_and_does_not_break_the_segment() {
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    s.push(&Event::Config(codec_config(true, false)), WALL0).unwrap();
    s.push(&Event::Frame(Frame::Video(video_frame(0, 0, true))), WALL0).unwrap();
    let bad = VideoFrame { dts: 2000, cts: 0, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 50, 0x65]) };
    assert!(s.push(&Event::Frame(Frame::Video(bad)), WALL0).is_err());
    let audio = Frame::Audio(audio_frame(40));
    assert!(matches!(s.push(&Event::Frame(audio), WALL0), Err(MuxError::NoAudioConfig)));
    let seg = s.push(&Event::Frame(Frame::Video(video_frame(2040, 0, true))), WALL0).unwrap().unwrap();
    assert_eq!(seg.duration_ms, 2040);
    assert_eq!(parse_ts(&seg.data).pes.len(), 1);
}

mod golden {
    use super::*;

    /// A small deterministic A/V segment (30 fps video with B-frame offsets,
    /// AAC LC 44.1 kHz). Checked by structure here; to inspect it with ffprobe,
    /// run with `LIVEGATE_GOLDEN_TS=/tmp/golden.ts` and
    /// `ffprobe -show_packets -show_streams /tmp/golden.ts`.
    #[test]
    fn golden_av_segment() {
        let mut frames: Vec<Frame> = (0..45)
            .map(|i| {
                let dts = (i as i64 * 100) / 3;
                Frame::Video(video_frame(dts, [0, 100, 33, 33][i % 4], i % 30 == 0))
            })
            .collect();
        frames.extend(audio_frames(0, 64));
        frames.sort_by_key(|f| (f.dts(), !f.is_video()));
        let mut s = Segmenter::new(SegmenterConfig { target_duration_ms: 1000, ..SegmenterConfig::default() }, 0);
        s.push(&Event::Config(codec_config(true, true)), 0).unwrap();
        let mut segs: Vec<Segment> =
            frames.iter().filter_map(|f| s.push(&Event::Frame(f.clone()), 0).unwrap()).collect();
        segs.extend(s.flush());
        assert_eq!(segs.len(), 2);
        let seg = &segs[0];
        assert_eq!(seg.duration_ms, 1000);
        if let Ok(path) = std::env::var("LIVEGATE_GOLDEN_TS") {
            std::fs::write(path, &seg.data).unwrap();
        }
        let ts = parse_ts(&seg.data);
        check_continuity(&ts.packets);
        let video: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xe0).collect();
        let audio: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xc0).collect();
        assert_eq!(video.len(), 30);
        let adts_frames: usize = audio.iter().map(|p| split_adts(&p.payload).len()).sum();
        assert_eq!(adts_frames, 44, "audio frames with pts in [0, 1000)");
        assert_eq!(seg.data.len() % 188, 0);
    }
}

/// Manual check with real encoder output (not run by default):
/// ```text
/// ffmpeg -f lavfi -i testsrc=size=320x240:rate=30 -t 3 -c:v libx264 -bf 0 -g 30 -x264-params aud=1 -f h264 /tmp/real.h264
/// ffmpeg -f lavfi -i sine=frequency=440:sample_rate=44100 -t 3 -c:a aac -ac 2 -f adts /tmp/real.aac
/// cargo test --lib real_encoder_segments -- --ignored
/// ffprobe -show_packets /tmp/real-0.ts   # and ffmpeg -i /tmp/real-0.ts -f null -
/// ```
#[test]
#[ignore = "needs /tmp/real.h264 and /tmp/real.aac from ffmpeg"]
fn real_encoder_segments() {
    use std::sync::Arc;

    use crate::media::{AacConfig, AudioFrame, AvcConfig, VideoFrame};

    let h264 = std::fs::read("/tmp/real.h264").unwrap();
    let mut nals: Vec<&[u8]> = Vec::new();
    let mut starts = Vec::new();
    for i in 0..h264.len().saturating_sub(3) {
        if h264[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
        }
    }
    for (k, &st) in starts.iter().enumerate() {
        let mut end = starts.get(k + 1).map_or(h264.len(), |n| n - 3);
        while end > st && h264[end - 1] == 0 {
            end -= 1;
        }
        nals.push(&h264[st..end]);
    }
    let sps = nals.iter().find(|n| n[0] & 0x1f == 7).unwrap();
    let pps = nals.iter().find(|n| n[0] & 0x1f == 8).unwrap();
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    let video_cfg = Arc::new(AvcConfig::parse(Bytes::from(avcc)).unwrap());
    let mut frames: Vec<Frame> = Vec::new();
    let mut au: Vec<u8> = Vec::new();
    let mut key = false;
    let push_au = |au: &mut Vec<u8>, key: &mut bool, frames: &mut Vec<Frame>| {
        if !au.is_empty() {
            let n = frames.iter().filter(|f| f.is_video()).count() as i64;
            let data = Bytes::from(std::mem::take(au));
            frames.push(Frame::Video(VideoFrame { dts: n * 100 / 3, cts: 0, keyframe: *key, data }));
            *key = false;
        }
    };
    for n in &nals {
        match n[0] & 0x1f {
            9 => push_au(&mut au, &mut key, &mut frames),
            7 | 8 => {}
            t => {
                key |= t == 5;
                au.extend_from_slice(&(n.len() as u32).to_be_bytes());
                au.extend_from_slice(n);
            }
        }
    }
    push_au(&mut au, &mut key, &mut frames);
    let aac = std::fs::read("/tmp/real.aac").unwrap();
    let asc = [((aac[2] >> 6) + 1) << 3 | ((aac[2] >> 3) & 0x07), (aac[2] & 0x07) << 7 | (aac[3] >> 6) << 3];
    let audio_cfg = Arc::new(AacConfig::parse(Bytes::copy_from_slice(&asc)).unwrap());
    let (mut i, mut j) = (0, 0i64);
    while i + 7 <= aac.len() {
        let len = (usize::from(aac[i + 3] & 3) << 11) | (usize::from(aac[i + 4]) << 3) | usize::from(aac[i + 5] >> 5);
        let pts = j * 1_024_000 / i64::from(audio_cfg.sample_rate);
        frames.push(Frame::Audio(AudioFrame { pts, data: Bytes::copy_from_slice(&aac[i + 7..i + len]) }));
        i += len;
        j += 1;
    }
    frames.sort_by_key(|f| (f.dts(), !f.is_video()));
    let config = CodecConfig {
        video: Some(Arc::new(crate::media::VideoConfig::Avc(Arc::unwrap_or_clone(video_cfg)))),
        audio: Some(Arc::new(crate::media::AudioConfig::Aac(Arc::unwrap_or_clone(audio_cfg)))),
        generation: 1,
        ..Default::default()
    };
    let mut s = Segmenter::new(SegmenterConfig::default(), 0);
    s.push(&Event::Config(config), 0).unwrap();
    let mut segs: Vec<Segment> = frames.iter().filter_map(|f| s.push(&Event::Frame(f.clone()), 0).unwrap()).collect();
    segs.extend(s.flush());
    for seg in &segs {
        std::fs::write(format!("/tmp/real-{}.ts", seg.sequence), &seg.data).unwrap();
    }
    assert_eq!(segs.len(), 2);
}

#[test]
fn low_latency_segments_are_their_parts_each_within_the_part_target() {
    let config = SegmenterConfig {
        container: Container::Fmp4,
        part_target_ms: Some(333),
        target_duration_ms: 2000,
        ..SegmenterConfig::default()
    };
    let mut s = Segmenter::new(config, 0);
    s.push(&Event::Config(codec_config(true, true)), WALL0).unwrap();
    let mut parts = Vec::new();
    let mut segments = Vec::new();
    for f in av_frames(0, 200, 60, 0) {
        let seg = s.push(&Event::Frame(f), WALL0).unwrap();
        parts.extend(std::iter::from_fn(|| s.poll_part()));
        segments.extend(seg);
    }
    assert!(segments.len() >= 2);
    assert_eq!(s.open_part().map(|(seq, _)| seq), Some(segments.len() as u64));
    for seg in &segments {
        let mine: Vec<&Part> = parts.iter().filter(|p| p.sequence == seg.sequence).collect();
        let d: Vec<u64> = mine.iter().map(|p| p.duration_ms).collect();
        assert_eq!(mine.len(), 6, "2 s at 30 fps: six parts of 10 frames or fewer: {d:?}");
        assert_eq!(mine.iter().map(|p| p.index).collect::<Vec<_>>(), (0..6).collect::<Vec<_>>());
        assert!(mine[0].independent && mine[1..].iter().all(|p| !p.independent));
        assert!(
            mine.iter().all(|p| p.duration_ms <= 334),
            "{:?}",
            mine.iter().map(|p| p.duration_ms).collect::<Vec<_>>()
        );
        assert_eq!(mine.iter().map(|p| p.duration_ms).sum::<u64>(), seg.duration_ms);
        let joined: Vec<u8> = mine.iter().flat_map(|p| p.data.to_vec()).collect();
        assert_eq!(joined, seg.data.to_vec(), "a segment is its parts, in order");
        assert!(mine.iter().all(|p| p.init.as_ref() == seg.init.as_ref()));
    }
}
