use super::*;
use crate::flv::file::read_tags;
use crate::media::h264::tests::AVCC_320X240;
use crate::media::Frame;

fn video(dts: i64, body: &[u8]) -> Result<Demuxed, FlvError> {
    let mut out = Vec::new();
    demux_video(dts, Bytes::copy_from_slice(body), &mut out)?;
    assert_eq!(out.len(), 1);
    Ok(out.remove(0).1)
}

fn audio(pts: i64, body: &[u8]) -> Result<Demuxed, FlvError> {
    let mut out = Vec::new();
    demux_audio(pts, Bytes::copy_from_slice(body), &mut out)?;
    assert_eq!(out.len(), 1);
    Ok(out.remove(0).1)
}

/// Every tag of a fixture file demuxed: (tag type, track, result).
fn demux_file(file: &'static [u8]) -> Vec<(u8, u8, Demuxed)> {
    let tags = read_tags(&Bytes::from_static(file)).unwrap();
    let mut all = Vec::new();
    for t in tags.iter().filter(|t| t.tag_type == 8 || t.tag_type == 9) {
        let mut out = Vec::new();
        let r = if t.tag_type == 9 {
            demux_video(i64::from(t.timestamp), t.body.clone(), &mut out)
        } else {
            demux_audio(i64::from(t.timestamp), t.body.clone(), &mut out)
        };
        r.unwrap_or_else(|e| panic!("tag type {} at {}: {e}", t.tag_type, t.timestamp));
        all.extend(out.into_iter().map(|(track, d)| (t.tag_type, track, d)));
    }
    all
}

#[test]
fn video_sequence_header_and_frames_with_bframes() {
    let mut seq = vec![0x17, 0, 0, 0, 0];
    seq.extend_from_slice(AVCC_320X240);
    match video(0, &seq).unwrap() {
        Demuxed::VideoConfig(c) => assert_eq!((c.width(), c.height()), (320, 240)),
        other => panic!("{other:?}"),
    }
    // keyframe with cts +80 ms, then a B-frame with cts 0 and one with a negative cts
    let Demuxed::Video(VideoCodec::Avc, v) = video(1000, &[0x17, 1, 0, 0, 80, 0, 0, 0, 1, 0x65]).unwrap() else {
        panic!()
    };
    assert_eq!((v.dts, v.cts, v.keyframe, v.pts()), (1000, 80, true, 1080));
    assert_eq!(&v.data[..], &[0, 0, 0, 1, 0x65]);
    let Demuxed::Video(_, v) = video(1040, &[0x27, 1, 0xff, 0xff, 0xd8, 0, 0, 0, 1, 0x01]).unwrap() else { panic!() };
    assert_eq!((v.cts, v.keyframe), (-40, false));
}

#[test]
fn audio_config_and_frames() {
    let Demuxed::AudioConfig(c) = audio(0, &[0xaf, 0, 0x12, 0x10]).unwrap() else { panic!() };
    assert_eq!(c.sample_rate(), 44100);
    let Demuxed::Audio(AudioCodec::Aac, a) = audio(23, &[0xaf, 1, 0x21, 0x00]).unwrap() else { panic!() };
    assert_eq!((a.pts, &a.data[..]), (23, &[0x21, 0x00][..]));
}

#[test]
fn hostile_bodies_are_errors_not_panics() {
    for body in [&[][..], &[0x17], &[0x17, 1, 0], &[0x17, 0, 0, 0, 0, 1], &[0x17, 9, 0, 0, 0], &[0x12, 1]] {
        assert!(video(0, body).is_err(), "{body:?}");
    }
    for body in [&[][..], &[0xaf], &[0x3f, 1, 2], &[0xaf, 0, 0x12]] {
        assert!(audio(0, body).is_err(), "{body:?}");
    }
    assert_eq!(video(0, &[0x57, 0]).unwrap(), Demuxed::Skip);
}

#[test]
fn every_ffmpeg_9_fixture_demuxes_with_the_codecs_it_names() {
    use AudioCodec as A;
    use VideoCodec as V;
    let cases: [(&'static [u8], V, A, &str, &str); 7] = [
        (include_bytes!("../../../../fixtures/ertmp/hevc_opus.flv"), V::Hevc, A::Opus, "hvc1.1.6.L30.90", "opus"),
        (include_bytes!("../../../../fixtures/ertmp/av1_aac.flv"), V::Av1, A::Aac, "av01.0.00M.08", "mp4a.40.2"),
        (include_bytes!("../../../../fixtures/ertmp/vp9_flac.flv"), V::Vp9, A::Flac, "vp09.00.10.08", "fLaC"),
        (include_bytes!("../../../../fixtures/ertmp/h264_ac3.flv"), V::Avc, A::Ac3, "avc1.64000a", "ac-3"),
        (include_bytes!("../../../../fixtures/ertmp/h264_eac3.flv"), V::Avc, A::Eac3, "avc1.64000a", "ec-3"),
        (include_bytes!("../../../../fixtures/ertmp/h264_mp3.flv"), V::Avc, A::Mp3, "avc1.64000a", "mp4a.6B"),
        (include_bytes!("../../../../fixtures/ertmp/multi.flv"), V::Avc, A::Aac, "avc1.64000c", "mp4a.40.2"),
    ];
    for (file, vc, ac, vs, as_) in cases {
        let all = demux_file(file);
        let vcfg = all.iter().find_map(|(_, t, d)| match d {
            Demuxed::VideoConfig(c) if *t == 0 => Some(c.clone()),
            _ => None,
        });
        let vcfg = vcfg.expect("video config");
        assert_eq!((vcfg.codec(), vcfg.codec_string().as_str()), (vc, vs));
        let frames = all.iter().filter(|(_, _, d)| matches!(d, Demuxed::Video(c, _) if *c == vc)).count();
        assert!(frames >= 9, "{vs}: {frames} video frames");
        assert!(all.iter().any(|(_, _, d)| matches!(d, Demuxed::Video(_, f) if f.keyframe)));
        let audio_frames: Vec<&AudioFrame> = all
            .iter()
            .filter_map(|(_, _, d)| match d {
                Demuxed::Audio(c, f) if *c == ac => Some(f),
                _ => None,
            })
            .collect();
        assert!(audio_frames.len() >= 5, "{as_}: {} audio frames", audio_frames.len());
        let acfg = all
            .iter()
            .find_map(|(_, _, d)| match d {
                Demuxed::AudioConfig(c) => Some(c.clone()),
                _ => None,
            })
            .or_else(|| AudioConfig::from_frame(ac, &audio_frames[0].data))
            .expect("audio config");
        assert_eq!((acfg.codec(), acfg.codec_string().as_str()), (ac, as_));
        assert_eq!((acfg.sample_rate(), acfg.channels()), (48000, 1));
        assert!(audio_frames.iter().all(|f| acfg.frame_samples(&f.data).is_some_and(|n| n >= 120)), "{as_}");
    }
}

#[test]
fn hevc_colour_metadata_is_kept_and_coded_frames_carry_cts() {
    let all = demux_file(include_bytes!("../../../../fixtures/ertmp/hevc_opus.flv"));
    let meta = all.iter().find_map(|(_, _, d)| if let Demuxed::VideoMetadata(m) = d { Some(m) } else { None });
    assert!(meta.is_some_and(|m| m.windows(9).any(|w| w == b"colorInfo")));
    let ctss: Vec<i32> =
        all.iter().filter_map(|(_, _, d)| if let Demuxed::Video(_, f) = d { Some(f.cts) } else { None }).collect();
    assert!(ctss.iter().any(|&c| c > 0), "x265 B-frames give composition offsets: {ctss:?}");
}

#[test]
fn a_multitrack_publish_names_its_second_track() {
    let all = demux_file(include_bytes!("../../../../fixtures/ertmp/multi.flv"));
    let sizes: Vec<(u8, u32)> = all
        .iter()
        .filter_map(|(_, t, d)| if let Demuxed::VideoConfig(c) = d { Some((*t, c.width())) } else { None })
        .collect();
    assert_eq!(sizes, vec![(0, 320), (1, 160)]);
    let track1 = all.iter().filter(|(_, t, d)| *t == 1 && matches!(d, Demuxed::Video(..))).count();
    assert!(track1 >= 9);
}

#[test]
fn legacy_hevc_codec_id_12() {
    let record = crate::media::hevc::tests::fixture_record();
    let mut seq = vec![0x1c, 0, 0, 0, 0];
    seq.extend_from_slice(&record);
    let Demuxed::VideoConfig(VideoConfig::Hevc(c)) = video(0, &seq).unwrap() else { panic!() };
    assert_eq!(c.width, 160);
    let Demuxed::Video(VideoCodec::Hevc, f) = video(40, &[0x1c, 1, 0, 0, 40, 0, 0, 0, 1, 0x26]).unwrap() else {
        panic!()
    };
    assert_eq!((f.cts, f.keyframe), (40, true));
}

#[test]
fn enhanced_structures_many_tracks_and_modex() {
    // ManyTracks of avc1 coded frames (CodedFramesX: no cts): track 0 and track 2
    let mut body = vec![0x96, 0x13];
    body.extend_from_slice(b"avc1");
    for (track, nal) in [(0u8, 0x65u8), (2, 0x65)] {
        body.extend_from_slice(&[track, 0, 0, 5, 0, 0, 0, 1, nal]);
    }
    assert!(is_multitrack(crate::media::MediaKind::Video, &body));
    assert!(!is_multitrack(crate::media::MediaKind::Video, &[0x16, 0]), "legacy codec id 6 is not multitrack");
    let mut out = Vec::new();
    demux_video(7, Bytes::from(body), &mut out).unwrap();
    assert_eq!(out.iter().map(|(t, _)| *t).collect::<Vec<_>>(), vec![0, 2]);
    assert!(matches!(&out[1].1, Demuxed::Video(VideoCodec::Avc, f) if f.keyframe && f.cts == 0 && f.data.len() == 5));
    // ManyTracksManyCodecs: hvc1 track 0, av01 track 1
    let mut body = vec![0x96, 0x23];
    body.extend_from_slice(b"hvc1");
    body.extend_from_slice(&[0, 0, 0, 2, 0xaa, 0xbb]);
    body.extend_from_slice(b"av01");
    body.extend_from_slice(&[1, 0, 0, 1, 0xcc]);
    let mut out = Vec::new();
    demux_video(7, Bytes::from(body), &mut out).unwrap();
    assert!(matches!(&out[0], (0, Demuxed::Video(VideoCodec::Hevc, _))));
    assert!(matches!(&out[1], (1, Demuxed::Video(VideoCodec::Av1, _))));
    // ModEx (TimestampOffsetNano, 3 bytes) in front of CodedFramesX
    let mut body = vec![0x97, 2, 0, 0x01, 0xf4, 0x03];
    body.extend_from_slice(b"av01");
    body.extend_from_slice(&[0x12, 0x00, 0x32, 0x00]);
    assert!(matches!(video(5, &body).unwrap(), Demuxed::Video(VideoCodec::Av1, f) if f.data.len() == 4));
    // audio: multitrack OneTrack Opus coded frames on track 3
    let mut body = vec![0x95, 0x01];
    body.extend_from_slice(b"Opus");
    body.extend_from_slice(&[3, 0x78, 0xaa]);
    assert!(is_multitrack(crate::media::MediaKind::Audio, &body));
    let mut out = Vec::new();
    demux_audio(9, Bytes::from(body), &mut out).unwrap();
    assert!(matches!(&out[..], [(3, Demuxed::Audio(AudioCodec::Opus, f))] if f.data.len() == 2));
}

#[test]
fn hostile_enhanced_bodies_are_named_errors() {
    let err = |b: &[u8]| {
        let mut out = Vec::new();
        demux_video(0, Bytes::copy_from_slice(b), &mut out).unwrap_err()
    };
    // truncated FourCC, unknown FourCC, unknown packet type
    assert!(matches!(err(&[0x91, b'h', b'v']), FlvError::Truncated { .. }));
    assert!(matches!(err(b"\x91vvc1\x00\x00\x00\x01"), FlvError::UnsupportedFourCc { fourcc, .. } if fourcc == "vvc1"));
    assert!(matches!(err(b"\x9fhvc1"), FlvError::BadPacketType { ptype: 15, .. }));
    // a sequence start that does not parse
    assert!(matches!(err(b"\x90hvc1\x01\x02"), FlvError::HevcConfig(HevcError::RecordTooShort(2))));
    assert!(matches!(err(b"\x90av01\x01\x02\x03\x04"), FlvError::Av1Config(Av1Error::BadVersion(1))));
    // a ModEx chain that never ends
    let mut modex = vec![0x97];
    for _ in 0..20 {
        modex.extend_from_slice(&[0, 0, 0x07]);
    }
    assert!(matches!(err(&modex), FlvError::ModExLoop { .. }));
    // multitrack inside multitrack, 255 tracks in one message, a track size past the end
    assert!(matches!(err(b"\x96\x16avc1"), FlvError::NestedMultitrack { .. }));
    let mut many = vec![0x96, 0x13];
    many.extend_from_slice(b"avc1");
    for t in 0..255u8 {
        many.extend_from_slice(&[t, 0, 0, 0]);
    }
    assert!(matches!(err(&many), FlvError::TooManyTracks { .. }));
    let mut past = vec![0x96, 0x11];
    past.extend_from_slice(b"avc1");
    past.extend_from_slice(&[0, 0xff, 0xff, 0xff, 1]);
    assert!(matches!(err(&past), FlvError::Truncated { .. }));
    let mut out = Vec::new();
    for body in [&b"\x90Opus\x01"[..], b"\x90fLaC\x00", b"\x90zzzz", b"\x93Opus", b"\x95\x05Opus"] {
        assert!(demux_audio(0, Bytes::copy_from_slice(body), &mut out).is_err(), "{body:?}");
    }
}

#[test]
fn command_frames_and_empty_frames_are_skipped() {
    assert_eq!(video(0, b"\xd1hvc1\x00").unwrap(), Demuxed::Skip);
    assert_eq!(video(0, b"\x93av01").unwrap(), Demuxed::Skip);
    assert_eq!(video(0, b"\x92hvc1").unwrap(), Demuxed::Skip);
    assert_eq!(audio(0, b"\x90ac-3").unwrap(), Demuxed::Skip);
    assert_eq!(audio(0, b"\x94ac-3\x01\x01\x00\x00\x00\x04").unwrap(), Demuxed::Skip);
    assert!(matches!(audio(0, &[0x2e, 0xff, 0xfb, 0x54, 0xc4]).unwrap(), Demuxed::Audio(AudioCodec::Mp3, _)));
    let _ = Frame::Audio(AudioFrame { pts: 0, data: Bytes::new() });
}

/// Whether `part` lies inside `whole`'s memory (shares its allocation).
fn inside(part: &Bytes, whole: &Bytes) -> bool {
    let (p, w) = (part.as_ptr() as usize, whole.as_ptr() as usize);
    p >= w && p + part.len() <= w + whole.len()
}

#[test]
fn a_small_payload_never_pins_a_large_message() {
    let frame_data = |d: &Demuxed| match d {
        Demuxed::Audio(_, a) => a.data.clone(),
        Demuxed::VideoMetadata(m) => m.clone(),
        other => panic!("{other:?}"),
    };
    // a multitrack message: track 0 a 20-byte frame, track 1 64 KiB
    let mut many = vec![0x95, 0x11];
    many.extend_from_slice(b"mp4a");
    many.extend_from_slice(&[0, 0, 0, 20]);
    many.extend_from_slice(&[0x21; 20]);
    many.extend_from_slice(&[1, 0x01, 0, 0]);
    many.resize(many.len() + 65_536, 0x22);
    let many = Bytes::from(many);
    let mut out = Vec::new();
    demux_audio(0, many.clone(), &mut out).unwrap();
    assert_eq!(out.len(), 2);
    let (small, large) = (frame_data(&out[0].1), frame_data(&out[1].1));
    assert_eq!((small.len(), large.len()), (20, 65_536));
    assert!(!inside(&small, &many), "the 20-byte frame is copied out");
    // the other leaves 34 bytes of the message unused (headers and the small frame): shared
    assert!(inside(&large, &many));
    // a 20-byte frame behind a 64 KiB ModEx entry
    let mut modex = vec![0x97, 0xFF, 0xFF, 0xFF];
    modex.resize(modex.len() + 65_536, 0);
    modex.push(0x01);
    modex.extend_from_slice(b"mp4a");
    modex.extend_from_slice(&[0x21; 20]);
    let modex = Bytes::from(modex);
    out.clear();
    demux_audio(0, modex.clone(), &mut out).unwrap();
    let small = frame_data(&out[0].1);
    assert_eq!(small.len(), 20);
    assert!(!inside(&small, &modex), "copied out of its ModEx chain");
    // a payload that is its message but for a few header bytes stays a slice of it
    let plain = Bytes::from_static(&[0xaf, 1, 0x21, 0x00]);
    out.clear();
    demux_audio(0, plain.clone(), &mut out).unwrap();
    assert!(inside(&frame_data(&out[0].1), &plain));
    let mut one = vec![0x96, 0x04]; // Multitrack; OneTrack, Metadata
    one.extend_from_slice(b"avc1");
    one.push(0);
    one.resize(one.len() + 1000, 0x05);
    let one = Bytes::from(one);
    out.clear();
    demux_video(0, one.clone(), &mut out).unwrap();
    let m = frame_data(&out[0].1);
    assert_eq!(m.len(), 1000);
    assert!(inside(&m, &one), "a payload that is its message but for a 7-byte header is shared");
}
