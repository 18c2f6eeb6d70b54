//! Unit tests of `fmp4`: the boxes are read back with a strict little reader (sizes must
//! nest exactly) and checked field by field.

use super::*;
use crate::hls::testutil::*;
use crate::media::Frame;

/// A box: type, body.
#[derive(Debug)]
struct Bx<'a> {
    kind: [u8; 4],
    body: &'a [u8],
}

/// Splits `data` into boxes; panics unless the sizes tile it exactly.
fn boxes(mut data: &[u8]) -> Vec<Bx<'_>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        assert!(data.len() >= 8, "truncated box header");
        let size = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
        assert!(size >= 8 && size <= data.len(), "box size {size} of {} bytes", data.len());
        out.push(Bx { kind: data[4..8].try_into().unwrap(), body: &data[8..size] });
        data = &data[size..];
    }
    out
}

fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> &'a [u8] {
    children(parent, kind).next().unwrap_or_else(|| panic!("no {}", String::from_utf8_lossy(kind)))
}

fn children<'a>(parent: &'a [u8], kind: &[u8; 4]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let kind = *kind;
    boxes(parent).into_iter().filter(move |b| b.kind == kind).map(|b| b.body)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// One track run as read back: base decode time and (duration, size, flags, cts) per sample.
#[derive(Debug)]
struct Run {
    track: u32,
    base: u64,
    data_offset: usize,
    samples: Vec<(u32, u32, Option<u32>, Option<i32>)>,
}

/// Reads a `moof` + `mdat` fragment: its sequence number, its runs, the mdat payload.
fn fragment(data: &[u8]) -> (u32, Vec<Run>, &[u8]) {
    let top = boxes(data);
    assert_eq!(top.len(), 2);
    assert_eq!(&top[0].kind, b"moof");
    assert_eq!(&top[1].kind, b"mdat");
    let moof = top[0].body;
    let seq = u32_at(child(moof, b"mfhd"), 4);
    let mut runs = Vec::new();
    for traf in children(moof, b"traf") {
        let tfhd = child(traf, b"tfhd");
        assert_eq!(u32_at(tfhd, 0), 0x02_0000, "default-base-is-moof only");
        let tfdt = child(traf, b"tfdt");
        assert_eq!(tfdt[0], 1, "tfdt version 1 (64-bit)");
        let base = u64::from_be_bytes(tfdt[4..12].try_into().unwrap());
        let trun = child(traf, b"trun");
        let flags = u32_at(trun, 0) & 0xff_ffff;
        let n = u32_at(trun, 4) as usize;
        let data_offset = u32_at(trun, 8) as usize;
        let per = if flags & 0x800 != 0 { 16 } else { 8 };
        assert_eq!(trun.len(), 12 + n * per);
        let samples = (0..n)
            .map(|i| {
                let s = &trun[12 + i * per..];
                let f = (flags & 0x400 != 0).then(|| u32_at(s, 8));
                let c = (flags & 0x800 != 0).then(|| u32_at(s, 12) as i32);
                (u32_at(s, 0), u32_at(s, 4), f, c)
            })
            .collect();
        runs.push(Run { track: u32_at(tfhd, 4), base, data_offset, samples });
    }
    (seq, runs, top[1].body)
}

fn muxer(video: bool, audio: bool) -> Fmp4Muxer {
    let mut m = Fmp4Muxer::new();
    m.set_config(&codec_config(video, audio)).unwrap();
    m
}

fn write(m: &mut Fmp4Muxer, f: &Frame) {
    match f {
        Frame::Video(v) => {
            m.prepare_video(v).unwrap();
            m.commit_video(v);
        }
        Frame::Audio(a) => m.write_audio(a).unwrap(),
    }
}

#[test]
fn init_segment_declares_the_tracks_with_their_records() {
    let init = muxer(true, true).init_segment().unwrap().clone();
    let top = boxes(&init);
    assert_eq!(top.iter().map(|b| b.kind).collect::<Vec<_>>(), vec![*b"ftyp", *b"moov"]);
    assert_eq!(&top[0].body[..4], b"iso6");
    let moov = top[1].body;
    assert_eq!(u32_at(child(moov, b"mvhd"), 12), 1000, "movie timescale");
    let traks: Vec<_> = children(moov, b"trak").collect();
    assert_eq!(traks.len(), 2);
    let stsd = |trak: &[u8]| {
        let stbl = child(child(child(trak, b"mdia"), b"minf"), b"stbl");
        child(stbl, b"stsd")[8..].to_vec()
    };
    // video: track 1, 90 kHz, 320x240, avcC = the record as received
    let tkhd = child(traks[0], b"tkhd");
    assert_eq!(u32_at(tkhd, 12), TRACK_VIDEO);
    assert_eq!((u32_at(tkhd, 76) >> 16, u32_at(tkhd, 80) >> 16), (320, 240));
    assert_eq!(u32_at(child(child(traks[0], b"mdia"), b"mdhd"), 12), VIDEO_TIMESCALE);
    let entry = stsd(traks[0]);
    let avc1 = boxes(&entry);
    assert_eq!(&avc1[0].kind, b"avc1");
    assert_eq!(child(&avc1[0].body[78..], b"avcC"), AVCC_320X240);
    // audio: track 2, timescale = sample rate, esds ends with the AudioSpecificConfig
    assert_eq!(u32_at(child(child(traks[1], b"mdia"), b"mdhd"), 12), 44_100);
    let entry = stsd(traks[1]);
    let mp4a = boxes(&entry);
    assert_eq!(&mp4a[0].kind, b"mp4a");
    let esds = child(&mp4a[0].body[28..], b"esds");
    let asc_at = esds.windows(2).position(|w| w == [0x05, 2]).expect("DecoderSpecificInfo");
    assert_eq!(&esds[asc_at + 2..asc_at + 4], ASC_LC_44100_STEREO);
    let mvex = child(moov, b"mvex");
    assert_eq!(children(mvex, b"trex").count(), 2);
}

#[test]
fn an_audio_only_or_video_only_init_has_only_its_track() {
    for (video, audio) in [(true, false), (false, true)] {
        let init = muxer(video, audio).init_segment().unwrap().clone();
        let moov = boxes(&init)[1].body;
        assert_eq!(children(moov, b"trak").count(), 1);
        let handler = &child(child(child(moov, b"trak"), b"mdia"), b"hdlr")[8..12];
        assert_eq!(handler, if video { b"vide" } else { b"soun" });
        assert_eq!(children(child(moov, b"mvex"), b"trex").count(), 1);
    }
}

#[test]
fn a_fragment_carries_every_sample_once_with_its_timing() {
    let mut m = muxer(true, true);
    m.start_segment();
    let frames = av_frames(1000, 60, 30, 0);
    for f in &frames[..frames.len() - 1] {
        write(&mut m, f);
    }
    let data = m.finish_segment(Some(3000));
    let (seq, runs, mdat) = fragment(&data);
    assert_eq!(seq, 1);
    let moof_len = data.len() - mdat.len() - 8;
    let video: Vec<&VideoFrame> = frames[..frames.len() - 1]
        .iter()
        .filter_map(|f| if let Frame::Video(v) = f { Some(v) } else { None })
        .collect();
    let audio: Vec<&AudioFrame> = frames[..frames.len() - 1]
        .iter()
        .filter_map(|f| if let Frame::Audio(a) = f { Some(a) } else { None })
        .collect();
    let (v, a) = (&runs[0], &runs[1]);
    assert_eq!((v.track, a.track), (TRACK_VIDEO, TRACK_AUDIO));
    assert_eq!(v.base, 1000 * 90);
    assert_eq!(v.samples.len(), video.len());
    // the payloads are the samples, in order, where the data offsets say
    let mut at = v.data_offset - moof_len - 8;
    for (s, f) in v.samples.iter().zip(&video) {
        assert_eq!(&mdat[at..at + s.1 as usize], &f.data[..]);
        at += s.1 as usize;
    }
    assert_eq!(a.data_offset - moof_len - 8, at, "audio follows video in the mdat");
    for (s, f) in a.samples.iter().zip(&audio) {
        assert_eq!(&mdat[at..at + s.1 as usize], &f.data[..]);
        at += s.1 as usize;
    }
    assert_eq!(at, mdat.len());
    // durations: DTS steps; the last video frame lasts until the end given
    let total: u64 = v.samples.iter().map(|s| u64::from(s.0)).sum();
    assert_eq!(v.base + total, 3000 * 90);
    assert_eq!(v.samples[0].2, Some(SAMPLE_SYNC));
    assert!(v.samples[1..30].iter().all(|s| s.2 == Some(SAMPLE_NON_SYNC)));
    assert_eq!(v.samples[30].2, Some(SAMPLE_SYNC));
    assert!(a.samples.iter().all(|s| s.0 == 1024), "AAC frames are 1024 samples each");
    assert_eq!(a.base, 44_100, "1 s in samples");
}

#[test]
fn decode_times_continue_across_segments_and_b_frames_keep_signed_offsets() {
    let mut m = muxer(true, true);
    let mut frames = video_frames_bframes(0, 100);
    frames.extend(audio_frames(0, 170));
    frames.sort_by_key(|f| (f.dts(), !f.is_video()));
    let mut ends = Vec::new();
    let mut segs = Vec::new();
    m.start_segment();
    for f in &frames {
        if f.is_keyframe() && f.dts() > 0 {
            segs.push(m.finish_segment(Some(f.dts())));
            ends.push(f.dts());
            m.start_segment();
        }
        write(&mut m, f);
    }
    segs.push(m.finish_segment(None));
    assert!(segs.len() >= 3, "{} segments", segs.len());
    let mut next = [None, None];
    for (i, seg) in segs.iter().enumerate() {
        let (seq, runs, _) = fragment(seg);
        assert_eq!(seq as usize, i + 1, "mfhd sequence numbers count up");
        for r in &runs {
            let t = (r.track - 1) as usize;
            if let Some(n) = next[t] {
                assert_eq!(r.base, n, "track {} continues where it stopped", r.track);
            }
            next[t] = Some(r.base + r.samples.iter().map(|s| u64::from(s.0)).sum::<u64>());
        }
        let video = &runs[0];
        assert!(video.samples.iter().any(|s| s.3.is_some_and(|c| c > 0)), "B-frame offsets kept");
    }
}

#[test]
fn audio_decode_times_ignore_millisecond_jitter_but_follow_gaps() {
    let mut m = muxer(false, true);
    m.start_segment();
    // 23.2 ms frames with timestamps rounded to whole ms, then a 500 ms gap
    for pts in [0, 23, 46, 70, 93, 116, 616, 639] {
        m.write_audio(&audio_frame(pts)).unwrap();
    }
    let (_, runs, _) = fragment(&m.finish_segment(None));
    let durations: Vec<u32> = runs[0].samples.iter().map(|s| s.0).collect();
    assert_eq!(&durations[..5], &[1024; 5]);
    // the gap: the frame before it lasts until the frame after it
    let gap_at = 5;
    assert_eq!(u64::from(durations[gap_at]), (616 * 44_100 + 500) / 1000 - 5 * 1024);
    // a new timeline re-anchors at the next frame's timestamp
    m.reset_timing();
    m.start_segment();
    m.write_audio(&audio_frame(10_000)).unwrap();
    let (_, runs, _) = fragment(&m.finish_segment(None));
    assert_eq!(runs[0].base, 441_000);
}

#[test]
fn audio_that_steps_back_more_than_a_frame_does_not_push_the_count_ahead() {
    let mut m = muxer(false, true);
    m.start_segment();
    // 23.2 ms frames; the publisher's clock steps back 35 ms after the fifth (a frame and a
    // half): that frame's time was counted already and it is left out; a step back of
    // less than a frame stays continuous
    for pts in [0, 23, 46, 70, 93, 81, 104, 127, 140] {
        m.write_audio(&audio_frame(pts)).unwrap();
    }
    let (_, runs, _) = fragment(&m.finish_segment(None));
    assert_eq!(runs[0].samples.len(), 8, "one frame left out");
    let durations: Vec<u32> = runs[0].samples.iter().map(|s| s.0).collect();
    assert!(durations.iter().all(|d| *d == 1024), "{durations:?}");
}

#[test]
fn bad_access_units_are_refused_before_buffering() {
    let mut m = muxer(true, false);
    m.start_segment();
    let bad = VideoFrame { dts: 0, cts: 0, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 9, 0x65]) };
    assert!(m.prepare_video(&bad).is_err());
    let empties = VideoFrame { dts: 0, cts: 0, keyframe: true, data: Bytes::from(vec![0u8; 4 * 2000]) };
    assert!(matches!(m.prepare_video(&empties), Err(MuxError::H264(H264Error::TooManyNalus(_)))));
    assert!(matches!(muxer(false, true).prepare_video(&video_frame(0, 0, true)), Err(MuxError::NoVideoConfig)));
    assert_eq!(m.segment_len(), 0);
    assert!(m.finish_segment(None).is_empty(), "nothing buffered, nothing written");
}
