//! Unit tests of `ts`.

use super::*;
use crate::hls::testutil::*;

fn av_muxer(video: bool, audio: bool) -> TsMuxer {
    let mut m = TsMuxer::new(100);
    m.set_config(&codec_config(video, audio)).unwrap();
    m
}

#[test]
fn packets_are_188_bytes_with_sync_and_known_pids() {
    let mut m = av_muxer(true, true);
    m.start_segment();
    for (i, f) in av_frames(0, 60, 15, 0).iter().enumerate() {
        write_frame(&mut m, f);
        assert_eq!(m.segment_len() % TS_PACKET_SIZE, 0, "after frame {i}");
    }
    let seg = m.finish_segment();
    let ts = parse_ts(&seg);
    assert_eq!(ts.packets[0].pid, PID_PAT);
    assert_eq!(ts.packets[1].pid, PID_PMT);
    assert!(ts.packets[0].pusi && ts.packets[1].pusi);
    for p in &ts.packets {
        assert!([PID_PAT, PID_PMT, PID_VIDEO, PID_AUDIO].contains(&p.pid), "pid {:#x}", p.pid);
    }
}

#[test]
fn psi_crc_valid_and_pmt_lists_only_present_tracks() {
    for (video, audio) in [(true, true), (true, false), (false, true)] {
        let mut m = av_muxer(video, audio);
        m.start_segment();
        let ts = parse_ts(&m.finish_segment());
        let pmt = ts.pmt.expect("pmt");
        let mut expect = Vec::new();
        if video {
            expect.push((STREAM_TYPE_H264, PID_VIDEO));
        }
        if audio {
            expect.push((STREAM_TYPE_AAC_ADTS, PID_AUDIO));
        }
        assert_eq!(pmt.streams, expect);
        assert_eq!(pmt.pcr_pid, if video { PID_VIDEO } else { PID_AUDIO });
        assert_eq!(ts.pat_pmt_pid, Some(PID_PMT));
    }
}

#[test]
fn continuity_counters_run_on_across_segments() {
    let mut m = av_muxer(true, true);
    let frames = av_frames(0, 120, 30, 0);
    let mut all = Vec::new();
    for chunk in frames.chunks(40) {
        m.start_segment();
        for f in chunk {
            write_frame(&mut m, f);
        }
        all.extend_from_slice(&m.finish_segment());
    }
    let ts = parse_ts(&all);
    check_continuity(&ts.packets);
    let segments = frames.chunks(40).count();
    assert!(segments > 2);
    assert_eq!(ts.packets.iter().filter(|p| p.pid == PID_PAT).count(), segments);
    assert_eq!(ts.packets.iter().filter(|p| p.pid == PID_PMT).count(), segments);
}

#[test]
fn pcr_first_and_at_most_100ms_apart() {
    for (video, audio) in [(true, true), (false, true), (true, false)] {
        let mut m = av_muxer(video, audio);
        let frames: Vec<_> =
            av_frames(0, 90, 30, 0).into_iter().filter(|f| if f.is_video() { video } else { audio }).collect();
        m.start_segment();
        for f in &frames {
            write_frame(&mut m, f);
        }
        let ts = parse_ts(&m.finish_segment());
        let pcr_pid = if video { PID_VIDEO } else { PID_AUDIO };
        let first_media = ts.packets.iter().find(|p| p.pid != PID_PAT && p.pid != PID_PMT).unwrap();
        assert_eq!(first_media.pid, pcr_pid);
        assert!(first_media.pcr.is_some(), "first media packet carries a PCR");
        let pcrs: Vec<u64> = ts.packets.iter().filter_map(|p| p.pcr).collect();
        for w in pcrs.windows(2) {
            assert!(w[1] >= w[0], "PCR monotonic");
            assert!(w[1] - w[0] <= 100 * 90, "PCR gap {} ticks (video {video})", w[1] - w[0]);
        }
        assert!(ts.packets.iter().filter(|p| p.pcr.is_some()).all(|p| p.pid == pcr_pid));
        // PCR never ahead of the DTS of the data that follows it.
        for pes in &ts.pes {
            let pcr_before = ts.packets[..pes.first_packet].iter().filter_map(|p| p.pcr).next_back();
            let pcr = pcr_before.or(ts.packets[pes.first_packet].pcr).unwrap();
            assert!(pcr <= pes.dts.unwrap_or(pes.pts));
        }
    }
}

#[test]
fn video_pes_timestamps_round_trip_with_b_frames() {
    let mut m = av_muxer(true, false);
    m.start_segment();
    let frames = video_frames_bframes(1000, 12);
    for f in &frames {
        write_frame(&mut m, f);
    }
    let ts = parse_ts(&m.finish_segment());
    assert_eq!(ts.pes.len(), frames.len(), "one PES per access unit");
    for (pes, f) in ts.pes.iter().zip(&frames) {
        let crate::media::Frame::Video(v) = f else { unreachable!() };
        assert_eq!((pes.pid, pes.stream_id), (PID_VIDEO, 0xe0));
        assert_eq!(pes.pts, mask33(ms_to_90k(v.pts())));
        if v.cts == 0 {
            assert_eq!(pes.dts, None, "DTS omitted when equal to PTS");
        } else {
            assert_eq!(pes.dts, Some(mask33(ms_to_90k(v.dts))));
        }
        // AUD first; SPS/PPS right after it on IDR.
        assert_eq!(&pes.payload[..6], &[0, 0, 0, 1, 9, 0xf0]);
        let types = annexb_types(&pes.payload);
        assert_eq!(types[0], 9);
        assert_eq!(types.iter().filter(|t| **t == 9).count(), 1);
        if v.keyframe {
            assert_eq!(&types[..4], &[9, 7, 8, 5]);
            assert!(ts.packets[pes.first_packet].random_access);
        } else {
            assert!(!types.contains(&7));
            assert!(!ts.packets[pes.first_packet].random_access);
        }
    }
}

#[test]
fn negative_cts_is_clamped_so_dts_never_exceeds_pts() {
    let mut m = av_muxer(true, false);
    m.start_segment();
    let mut f = video_frame(0, 0, true);
    f.cts = -40;
    m.write_video(&f).unwrap();
    let ts = parse_ts(&m.finish_segment());
    assert_eq!(ts.pes[0].pts, mask33(ms_to_90k(0)));
    assert_eq!(ts.pes[0].dts, None);
}

#[test]
fn large_access_unit_spans_packets_and_uses_zero_length_when_too_big() {
    let mut m = av_muxer(true, false);
    m.start_segment();
    let mut f = video_frame(0, 0, true);
    let mut data = BytesMut::new();
    data.put_u32(100_000);
    data.put_u8(0x65);
    data.put_bytes(0xab, 99_999);
    f.data = data.freeze();
    m.write_video(&f).unwrap();
    let ts = parse_ts(&m.finish_segment());
    assert_eq!(ts.pes.len(), 1);
    assert_eq!(ts.pes[0].declared_len, 0);
    assert_eq!(*annexb_types(&ts.pes[0].payload).last().unwrap(), 5);
    assert!(ts.pes[0].payload.ends_with(&[0xab; 100]));
}

#[test]
fn audio_pes_carries_adts_frames_and_is_bounded() {
    let mut m = av_muxer(false, true);
    m.start_segment();
    let frames = audio_frames(0, 100);
    for f in &frames {
        write_frame(&mut m, f);
    }
    let ts = parse_ts(&m.finish_segment());
    let mut total_frames = 0;
    let frame_90k = 1024 * 90_000 / 44_100;
    for pes in &ts.pes {
        assert_eq!(pes.stream_id, 0xc0);
        assert_eq!(pes.dts, None);
        assert_ne!(pes.declared_len, 0);
        let adts = split_adts(&pes.payload);
        assert!(!adts.is_empty());
        assert!(adts.len() as u64 * frame_90k <= 100 * 90, "audio PES of {} frames", adts.len());
        for (i, frame) in adts.iter().enumerate() {
            assert_eq!(frame.len(), 7 + frames[total_frames + i].payload_len());
        }
        total_frames += adts.len();
    }
    assert_eq!(total_frames, frames.len());
    assert!(ts.pes.len() >= frames.len() / 5);
    // PES pts are the pts of their first frame.
    let crate::media::Frame::Audio(a0) = &frames[0] else { unreachable!() };
    assert_eq!(ts.pes[0].pts, mask33(ms_to_90k(a0.pts)));
}

#[test]
fn audio_flushed_before_video_keyframe() {
    let mut m = av_muxer(true, true);
    m.start_segment();
    let frames = av_frames(0, 30, 15, 0);
    for f in &frames {
        write_frame(&mut m, f);
    }
    let ts = parse_ts(&m.finish_segment());
    // The second keyframe (dts 500) follows all audio with pts < 500 (audio is
    // interleaved by time in av_frames).
    let kf =
        ts.pes.iter().position(|p| p.stream_id == 0xe0 && p.dts.unwrap_or(p.pts) >= mask33(ms_to_90k(500))).unwrap();
    let audio_after: u64 = ts.pes[kf..].iter().filter(|p| p.stream_id == 0xc0).map(|p| p.pts).min().unwrap();
    assert!(audio_after >= mask33(ms_to_90k(480)));
}

#[test]
fn timestamps_wrap_at_33_bits() {
    // Start 1 s before the 90 kHz clock wraps.
    let wrap_ms = (1i64 << 33) / 90 - TIMESTAMP_OFFSET_MS;
    let start = wrap_ms - 1000;
    let mut m = av_muxer(true, true);
    m.start_segment();
    let frames = av_frames(start, 60, 30, 0);
    for f in &frames {
        write_frame(&mut m, f);
    }
    let ts = parse_ts(&m.finish_segment());
    let video: Vec<_> = ts.pes.iter().filter(|p| p.stream_id == 0xe0).collect();
    let before = video.iter().filter(|p| p.pts > (1 << 33) - 200_000).count();
    let after = video.iter().filter(|p| p.pts < 200_000).count();
    assert!(before > 0 && after > 0, "timeline crosses the wrap");
    assert_eq!(before + after, video.len());
    for (pes, f) in video.iter().zip(frames.iter().filter(|f| f.is_video())) {
        let crate::media::Frame::Video(v) = f else { unreachable!() };
        let expect = ((v.pts() + TIMESTAMP_OFFSET_MS) * 90) as u64 % (1 << 33);
        assert_eq!(pes.pts, expect);
        assert!(pes.pts < 1 << 33);
    }
    // Unwrapped PCR deltas stay small across the wrap.
    let pcrs: Vec<u64> = ts.packets.iter().filter_map(|p| p.pcr).collect();
    for w in pcrs.windows(2) {
        let d = (w[1] + (1 << 33) - w[0]) % (1 << 33);
        assert!(d <= 100 * 90);
    }
    check_continuity(&ts.packets);
}

#[test]
fn reset_timing_allows_pcr_to_restart_with_discontinuity_indicator() {
    let mut m = av_muxer(true, false);
    m.start_segment();
    m.write_video(&video_frame(50_000, 0, true)).unwrap();
    m.finish_segment();
    m.reset_timing();
    m.start_segment();
    m.write_video(&video_frame(0, 0, true)).unwrap();
    let ts = parse_ts(&m.finish_segment());
    let p = &ts.packets[ts.pes[0].first_packet];
    assert_eq!(p.pcr, Some(mask33(ms_to_90k(-PCR_DELAY_MS))));
    assert!(p.discontinuity);
}

#[test]
fn bad_frames_fail_without_writing() {
    let mut m = av_muxer(true, false);
    m.start_segment();
    let before = m.segment_len();
    let mut f = video_frame(0, 0, true);
    f.data = Bytes::from_static(&[0, 0, 0, 9, 0x65]);
    assert!(matches!(m.write_video(&f), Err(MuxError::H264(_))));
    assert!(matches!(m.write_audio(&AudioFrame { pts: 0, data: Bytes::new() }), Err(MuxError::NoAudioConfig)));
    assert_eq!(m.segment_len(), before);
}
