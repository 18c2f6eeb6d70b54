//! Test helpers: synthetic frames and a strict little TS demuxer that checks
//! structure (sync, sizes, adaptation fields, PSI CRC, PES lengths) as it goes.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::ts::{TsMuxer, PID_PAT, PID_PMT, TS_PACKET_SIZE};
use crate::media::{AacConfig, AudioConfig, AudioFrame, AvcConfig, CodecConfig, Frame, VideoConfig, VideoFrame};

/// avcC from x264, 320x240 High profile (same capture as the media::h264 tests).
pub(crate) const AVCC_320X240: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10,
    0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb,
    0xe3, 0xcb, 0x22, 0xc0,
];
/// AAC LC, 44.1 kHz, stereo.
pub(crate) const ASC_LC_44100_STEREO: &[u8] = &[0x12, 0x10];

pub(crate) fn avc_config() -> Arc<VideoConfig> {
    Arc::new(VideoConfig::Avc(AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap()))
}

pub(crate) fn aac_config() -> Arc<AudioConfig> {
    Arc::new(AudioConfig::Aac(AacConfig::parse(Bytes::from_static(ASC_LC_44100_STEREO)).unwrap()))
}

pub(crate) fn codec_config(video: bool, audio: bool) -> CodecConfig {
    CodecConfig { video: video.then(avc_config), audio: audio.then(aac_config), generation: 1, ..Default::default() }
}

/// A one-slice AVCC access unit (IDR or non-IDR), size varying with `dts`.
pub(crate) fn video_frame(dts: i64, cts: i32, keyframe: bool) -> VideoFrame {
    let len = if keyframe { 3000 } else { 300 + (dts.rem_euclid(7) as usize) * 50 };
    let mut data = BytesMut::with_capacity(len + 4);
    data.put_u32(len as u32);
    data.put_u8(if keyframe { 0x65 } else { 0x41 });
    data.put_u8(0x88);
    for i in 0..len - 2 {
        data.put_u8((i % 251) as u8 | 0x01); // never forms a start code
    }
    VideoFrame { dts, cts, keyframe, data: data.freeze() }
}

pub(crate) fn audio_frame(pts: i64) -> AudioFrame {
    let len = 200 + (pts.rem_euclid(5) as usize) * 10;
    AudioFrame { pts, data: Bytes::from(vec![0x21; len]) }
}

/// `n` AAC frames at 44.1 kHz from `start` ms.
pub(crate) fn audio_frames(start: i64, n: usize) -> Vec<Frame> {
    (0..n).map(|j| Frame::Audio(audio_frame(start + (j as i64 * 1024 * 1000) / 44_100))).collect()
}

/// `n_video` frames at 30 fps (keyframe every `gop` frames, constant `cts`)
/// interleaved by time with 44.1 kHz AAC covering the same span.
pub(crate) fn av_frames(start: i64, n_video: usize, gop: usize, cts: i32) -> Vec<Frame> {
    let video: Vec<Frame> =
        (0..n_video).map(|i| Frame::Video(video_frame(start + (i as i64 * 100) / 3, cts, i % gop == 0))).collect();
    let span = (n_video as i64 * 100) / 3;
    let n_audio = (span * 44_100 / 1024 / 1000) as usize;
    let mut all = video;
    all.extend(audio_frames(start, n_audio));
    all.sort_by_key(|f| (f.dts(), !f.is_video()));
    all
}

/// IPBB-style pattern: I P B B P B B ... with DTS every 40 ms and PTS reordered.
pub(crate) fn video_frames_bframes(start: i64, n: usize) -> Vec<Frame> {
    (0..n)
        .map(|i| {
            let dts = start + i as i64 * 40;
            let cts = match i % 3 {
                0 => 0,  // I or P shown at once (simplified; still DTS ≤ PTS)
                1 => 80, // P shown after two B
                _ => 40, // B
            };
            Frame::Video(video_frame(dts, cts, i % 12 == 0))
        })
        .collect()
}

pub(crate) fn write_frame(m: &mut TsMuxer, f: &Frame) {
    match f {
        Frame::Video(v) => m.write_video(v).unwrap(),
        Frame::Audio(a) => m.write_audio(a).unwrap(),
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Packet {
    pub pid: u16,
    pub pusi: bool,
    pub cc: u8,
    pub has_payload: bool,
    pub pcr: Option<u64>,
    pub random_access: bool,
    pub discontinuity: bool,
}

#[derive(Debug, Clone)]
pub(crate) struct Pes {
    pub pid: u16,
    pub stream_id: u8,
    pub pts: u64,
    pub dts: Option<u64>,
    pub declared_len: u16,
    pub payload: Vec<u8>,
    pub first_packet: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PmtInfo {
    pub pcr_pid: u16,
    pub streams: Vec<(u8, u16)>,
}

#[derive(Debug, Default)]
pub(crate) struct Ts {
    pub packets: Vec<Packet>,
    pub pes: Vec<Pes>,
    pub pmt: Option<PmtInfo>,
    pub pat_pmt_pid: Option<u16>,
}

/// MPEG-2 CRC32 (poly 0x04C11DB7, init all ones, no reflection, no final xor).
pub(crate) fn crc32_mpeg(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &b in data {
        crc ^= u32::from(b) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

fn read_ts(b: &[u8]) -> u64 {
    assert_eq!(b[0] & 1, 1, "marker");
    assert_eq!(b[2] & 1, 1, "marker");
    assert_eq!(b[4] & 1, 1, "marker");
    (u64::from(b[0] >> 1) & 7) << 30
        | u64::from(b[1]) << 22
        | u64::from(b[2] >> 1) << 15
        | u64::from(b[3]) << 7
        | u64::from(b[4] >> 1)
}

/// A PSI section from a PUSI payload: checks the CRC and returns the section body.
fn psi_section(payload: &[u8]) -> Vec<u8> {
    let pointer = usize::from(payload[0]);
    let s = &payload[1 + pointer..];
    let section_len = usize::from(u16::from_be_bytes([s[1], s[2]]) & 0x0fff);
    let section = &s[..3 + section_len];
    assert_eq!(crc32_mpeg(section), 0, "PSI CRC32");
    section.to_vec()
}

fn finish_pes(pid: u16, first_packet: usize, data: Vec<u8>, out: &mut Vec<Pes>) {
    assert_eq!(&data[..3], &[0, 0, 1], "PES start code");
    let stream_id = data[3];
    let declared_len = u16::from_be_bytes([data[4], data[5]]);
    if declared_len != 0 {
        assert_eq!(usize::from(declared_len), data.len() - 6, "PES_packet_length");
    }
    let flags = data[7];
    let hlen = usize::from(data[8]);
    let pts = read_ts(&data[9..14]);
    let dts = match flags >> 6 {
        0b11 => {
            assert_eq!(data[9] >> 4, 0b0011);
            assert_eq!(data[14] >> 4, 0b0001);
            Some(read_ts(&data[14..19]))
        }
        0b10 => {
            assert_eq!(data[9] >> 4, 0b0010);
            None
        }
        f => panic!("PTS_DTS_flags {f:#b}"),
    };
    out.push(Pes { pid, stream_id, pts, dts, declared_len, payload: data[9 + hlen..].to_vec(), first_packet });
}

pub(crate) fn parse_ts(data: &[u8]) -> Ts {
    assert_eq!(data.len() % TS_PACKET_SIZE, 0, "whole packets");
    let mut ts = Ts::default();
    let mut open: HashMap<u16, (usize, Vec<u8>)> = HashMap::new();
    let mut order: Vec<u16> = Vec::new();
    for (idx, p) in data.chunks(TS_PACKET_SIZE).enumerate() {
        assert_eq!(p[0], 0x47, "sync byte in packet {idx}");
        let pusi = p[1] & 0x40 != 0;
        let pid = (u16::from(p[1] & 0x1f) << 8) | u16::from(p[2]);
        let afc = (p[3] >> 4) & 3;
        let cc = p[3] & 0x0f;
        assert_ne!(afc, 0, "reserved adaptation_field_control");
        let mut pos = 4;
        let (mut pcr, mut random_access, mut discontinuity) = (None, false, false);
        if afc & 2 != 0 {
            let len = usize::from(p[4]);
            assert!(len <= if afc == 2 { 183 } else { 182 }, "AF length {len} in packet {idx}");
            if len > 0 {
                let flags = p[5];
                discontinuity = flags & 0x80 != 0;
                random_access = flags & 0x40 != 0;
                if flags & 0x10 != 0 {
                    let b = &p[6..12];
                    let base = (u64::from(b[0]) << 25)
                        | (u64::from(b[1]) << 17)
                        | (u64::from(b[2]) << 9)
                        | (u64::from(b[3]) << 1)
                        | u64::from(b[4] >> 7);
                    pcr = Some(base);
                    assert!(p[12..5 + len].iter().all(|&x| x == 0xff), "stuffing after PCR");
                } else {
                    assert!(p[6..5 + len].iter().all(|&x| x == 0xff), "stuffing");
                }
            }
            pos = 5 + len;
        }
        let has_payload = afc & 1 != 0;
        let payload = if has_payload { &p[pos..] } else { &[][..] };
        ts.packets.push(Packet { pid, pusi, cc, has_payload, pcr, random_access, discontinuity });
        if !has_payload {
            continue;
        }
        if pid == PID_PAT {
            assert!(pusi);
            let s = psi_section(payload);
            assert_eq!(s[0], 0);
            // one program: 8-byte header, then program_number(2) + PID(2), CRC
            let prog = u16::from_be_bytes([s[8], s[9]]);
            assert_eq!(prog, 1);
            ts.pat_pmt_pid = Some(u16::from_be_bytes([s[10], s[11]]) & 0x1fff);
        } else if pid == PID_PMT {
            assert!(pusi);
            let s = psi_section(payload);
            assert_eq!(s[0], 2);
            let pcr_pid = u16::from_be_bytes([s[8], s[9]]) & 0x1fff;
            let info_len = usize::from(u16::from_be_bytes([s[10], s[11]]) & 0x0fff);
            let mut i = 12 + info_len;
            let end = s.len() - 4;
            let mut streams = Vec::new();
            while i < end {
                let st = s[i];
                let epid = u16::from_be_bytes([s[i + 1], s[i + 2]]) & 0x1fff;
                let es_len = usize::from(u16::from_be_bytes([s[i + 3], s[i + 4]]) & 0x0fff);
                streams.push((st, epid));
                i += 5 + es_len;
            }
            ts.pmt = Some(PmtInfo { pcr_pid, streams });
        } else {
            if pusi {
                if let Some((first, d)) = open.remove(&pid) {
                    finish_pes(pid, first, d, &mut ts.pes);
                }
                open.insert(pid, (idx, payload.to_vec()));
                order.push(pid);
            } else {
                open.get_mut(&pid).expect("continuation without start").1.extend_from_slice(payload);
            }
        }
    }
    let mut rest: Vec<_> = open.into_iter().collect();
    rest.sort_by_key(|(_, (first, _))| *first);
    for (pid, (first, d)) in rest {
        finish_pes(pid, first, d, &mut ts.pes);
    }
    ts.pes.sort_by_key(|p| p.first_packet);
    ts
}

/// Continuity counters: +1 per payload packet, unchanged on AF-only packets.
pub(crate) fn check_continuity(packets: &[Packet]) {
    let mut last: HashMap<u16, u8> = HashMap::new();
    for (i, p) in packets.iter().enumerate() {
        if let Some(&prev) = last.get(&p.pid) {
            let expect = if p.has_payload { (prev + 1) & 0x0f } else { prev };
            assert_eq!(p.cc, expect, "CC on pid {:#x} at packet {i}", p.pid);
        }
        last.insert(p.pid, p.cc);
    }
}

/// NAL unit types of an Annex-B buffer with 4-byte start codes.
pub(crate) fn annexb_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 4 < data.len() {
        if data[i..i + 4] == [0, 0, 0, 1] {
            types.push(data[i + 4] & 0x1f);
            i += 4;
        } else {
            i += 1;
        }
    }
    types
}

/// Splits a buffer of back-to-back ADTS frames, checking each header.
pub(crate) fn split_adts(data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let h = &data[i..];
        assert_eq!(h[0], 0xff, "ADTS sync");
        assert_eq!(h[1] & 0xf0, 0xf0, "ADTS sync");
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        out.push(&h[..len]);
        i += len;
    }
    assert_eq!(i, data.len());
    out
}

#[test]
fn crc32_mpeg_known_value() {
    // CRC-32/MPEG-2 check value for "123456789".
    assert_eq!(crc32_mpeg(b"123456789"), 0x0376_e6e7);
}
