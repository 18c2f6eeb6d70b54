//! H.264 helpers: the AVCDecoderConfigurationRecord (`avcC`) FLV sends as the
//! video sequence header, just enough SPS parsing to report resolution, and
//! AVCC (length-prefixed) → Annex-B (start code) conversion.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

use super::bits::{rbsp, BitReader, OutOfBits};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum H264Error {
    #[error("avcC record too short ({0} bytes)")]
    RecordTooShort(usize),
    #[error("avcC configurationVersion {0}, expected 1")]
    BadVersion(u8),
    #[error("avcC parameter set length {len} runs past the record end ({remaining} bytes left)")]
    ParameterSetOverrun { len: usize, remaining: usize },
    #[error("avcC has no SPS")]
    NoSps,
    #[error("SPS is truncated or malformed")]
    BadSps,
    #[error("NAL unit length {len} runs past the frame end ({remaining} bytes left)")]
    NaluOverrun { len: usize, remaining: usize },
    #[error("access unit has more than {0} NAL units")]
    TooManyNalus(usize),
}

/// NAL units one access unit may carry at most. Encoders send a handful (AUD, SEI,
/// parameter sets, a few slices; at most some hundred slices for a 4K picture); a frame of
/// millions of empty NAL units (1-byte lengths) is malformed, not work to do.
pub const MAX_NALUS_PER_AU: usize = 1024;

/// A parsed `avcC` record. `record` keeps the original bytes so the FLV and
/// RTMP outputs can send it on unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvcConfig {
    pub record: Bytes,
    pub profile: u8,
    pub compatibility: u8,
    pub level: u8,
    pub nalu_length_size: u8,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
}

impl AvcConfig {
    pub fn parse(record: Bytes) -> Result<Self, H264Error> {
        let r = &record[..];
        if r.len() < 7 {
            return Err(H264Error::RecordTooShort(r.len()));
        }
        if r[0] != 1 {
            return Err(H264Error::BadVersion(r[0]));
        }
        let nalu_length_size = (r[4] & 0x03) + 1;
        let mut pos = 5;
        let read_sets = |count: usize, pos: &mut usize| -> Result<Vec<Bytes>, H264Error> {
            let mut sets = Vec::with_capacity(count);
            for _ in 0..count {
                if *pos + 2 > r.len() {
                    return Err(H264Error::ParameterSetOverrun { len: 2, remaining: r.len() - *pos });
                }
                let len = usize::from(u16::from_be_bytes([r[*pos], r[*pos + 1]]));
                *pos += 2;
                if *pos + len > r.len() {
                    return Err(H264Error::ParameterSetOverrun { len, remaining: r.len() - *pos });
                }
                sets.push(record.slice(*pos..*pos + len));
                *pos += len;
            }
            Ok(sets)
        };
        let num_sps = usize::from(r[5] & 0x1f);
        pos += 1;
        let sps = read_sets(num_sps, &mut pos)?;
        let pps = if pos < r.len() {
            let num_pps = usize::from(r[pos]);
            pos += 1;
            read_sets(num_pps, &mut pos)?
        } else {
            Vec::new()
        };
        let first = sps.first().ok_or(H264Error::NoSps)?;
        let (width, height) = parse_sps_resolution(first)?;
        Ok(Self { profile: r[1], compatibility: r[2], level: r[3], nalu_length_size, sps, pps, width, height, record })
    }

    /// RFC 6381 codec string, e.g. `avc1.64001f`.
    pub fn codec_string(&self) -> String {
        format!("avc1.{:02x}{:02x}{:02x}", self.profile, self.compatibility, self.level)
    }
}

/// Iterates the NAL units of an AVCC frame.
pub fn avcc_nalus(data: &Bytes, length_size: u8) -> impl Iterator<Item = Result<Bytes, H264Error>> + '_ {
    let ls = usize::from(length_size.clamp(1, 4));
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos >= data.len() {
            return None;
        }
        if pos + ls > data.len() {
            let remaining = data.len() - pos;
            pos = data.len();
            return Some(Err(H264Error::NaluOverrun { len: ls, remaining }));
        }
        let len = data[pos..pos + ls].iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += ls;
        if pos + len > data.len() {
            let remaining = data.len() - pos;
            pos = data.len();
            return Some(Err(H264Error::NaluOverrun { len, remaining }));
        }
        let nalu = data.slice(pos..pos + len);
        pos += len;
        Some(Ok(nalu))
    })
}

/// NAL unit type (low five bits of the first byte).
pub fn nalu_type(nalu: &[u8]) -> u8 {
    nalu.first().map_or(0, |b| b & 0x1f)
}

pub const NALU_IDR: u8 = 5;
pub const NALU_SPS: u8 = 7;
pub const NALU_PPS: u8 = 8;
pub const NALU_AUD: u8 = 9;

/// Writes one access unit in Annex-B form for MPEG-TS: an access unit
/// delimiter first, then SPS/PPS before an IDR (when the frame does not carry
/// its own), then the frame's NAL units with 4-byte start codes. AUDs already
/// in the frame are dropped so there is exactly one, at the start.
pub fn avcc_to_annexb(
    frame: &Bytes,
    keyframe: bool,
    config: Option<&AvcConfig>,
    out: &mut BytesMut,
) -> Result<(), H264Error> {
    const START: [u8; 4] = [0, 0, 0, 1];
    let length_size = config.map_or(4, |c| c.nalu_length_size);
    // one pass to validate and look (no list of NAL units is built), one to write
    let (mut count, mut has_idr, mut has_sps) = (0usize, false, false);
    for n in avcc_nalus(frame, length_size) {
        let n = n?;
        count += 1;
        if count > MAX_NALUS_PER_AU {
            return Err(H264Error::TooManyNalus(MAX_NALUS_PER_AU));
        }
        has_idr |= nalu_type(&n) == NALU_IDR;
        has_sps |= nalu_type(&n) == NALU_SPS;
    }
    out.put_slice(&START);
    out.put_slice(&[NALU_AUD, 0xf0]);
    if (keyframe || has_idr) && !has_sps {
        if let Some(cfg) = config {
            for ps in cfg.sps.iter().chain(cfg.pps.iter()) {
                out.put_slice(&START);
                out.put_slice(ps);
            }
        }
    }
    for n in avcc_nalus(frame, length_size).flatten() {
        if nalu_type(&n) != NALU_AUD && !n.is_empty() {
            out.put_slice(&START);
            out.put_slice(&n);
        }
    }
    Ok(())
}

impl From<OutOfBits> for H264Error {
    fn from(_: OutOfBits) -> Self {
        H264Error::BadSps
    }
}

/// Reads the coded picture size from an SPS NAL unit (with its header byte).
pub fn parse_sps_resolution(sps: &[u8]) -> Result<(u32, u32), H264Error> {
    if sps.len() < 4 {
        return Err(H264Error::BadSps);
    }
    let data = rbsp(&sps[1..]);
    let mut r = BitReader::new(&data);
    let profile_idc = r.bits(8)?;
    r.bits(16)?; // constraint flags + level
    r.ue()?; // seq_parameter_set_id
    let mut chroma_format_idc = 1;
    if matches!(profile_idc, 100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135) {
        chroma_format_idc = r.ue()?;
        if chroma_format_idc == 3 {
            r.bit()?; // separate_colour_plane_flag
        }
        r.ue()?; // bit_depth_luma
        r.ue()?; // bit_depth_chroma
        r.bit()?; // qpprime_y_zero_transform_bypass
        if r.bit()? == 1 {
            let lists = if chroma_format_idc == 3 { 12 } else { 8 };
            for i in 0..lists {
                if r.bit()? == 1 {
                    let size = if i < 6 { 16 } else { 64 };
                    let (mut last, mut next) = (8i32, 8i32);
                    for _ in 0..size {
                        if next != 0 {
                            // delta_scale is -128..=127 (H.264 7.4.2.1.1.1); more is a broken SPS
                            // (and would overflow the sum below).
                            let delta = r.se()?;
                            if !(-128..=127).contains(&delta) {
                                return Err(H264Error::BadSps);
                            }
                            next = (last + delta + 256) % 256;
                        }
                        if next != 0 {
                            last = next;
                        }
                    }
                }
            }
        }
    }
    r.ue()?; // log2_max_frame_num
    let poc_type = r.ue()?;
    if poc_type == 0 {
        r.ue()?;
    } else if poc_type == 1 {
        r.bit()?;
        r.se()?;
        r.se()?;
        let n = r.ue()?;
        if n > 255 {
            return Err(H264Error::BadSps);
        }
        for _ in 0..n {
            r.se()?;
        }
    }
    r.ue()?; // max_num_ref_frames
    r.bit()?; // gaps_in_frame_num_allowed
    let width_mbs = u64::from(r.ue()?) + 1;
    let height_map_units = u64::from(r.ue()?) + 1;
    let frame_mbs_only = u64::from(r.bit()?);
    if frame_mbs_only == 0 {
        r.bit()?; // mb_adaptive_frame_field
    }
    r.bit()?; // direct_8x8_inference
    let (mut cl, mut cr, mut ct, mut cb) = (0u64, 0u64, 0u64, 0u64);
    if r.bit()? == 1 {
        cl = u64::from(r.ue()?);
        cr = u64::from(r.ue()?);
        ct = u64::from(r.ue()?);
        cb = u64::from(r.ue()?);
    }
    let (sub_w, sub_h) = match chroma_format_idc {
        0 | 3 => (1, 1),
        2 => (2, 1),
        _ => (2, 2),
    };
    let crop_x = if chroma_format_idc == 0 { 1 } else { sub_w };
    let crop_y = (if chroma_format_idc == 0 { 1 } else { sub_h }) * (2 - frame_mbs_only);
    let width = (width_mbs * 16).saturating_sub((cl + cr) * crop_x);
    let height = ((2 - frame_mbs_only) * height_map_units * 16).saturating_sub((ct + cb) * crop_y);
    Ok((u32::try_from(width).map_err(|_| H264Error::BadSps)?, u32::try_from(height).map_err(|_| H264Error::BadSps)?))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Fuzz reproducer (flv_demux): an SPS whose scaling-list delta_scale is
    /// huge overflowed `last + delta + 256` (a panic with overflow checks on).
    #[test]
    fn sps_with_out_of_range_scaling_delta_is_an_error() {
        let record: &[u8] = &[
            0x01, 0xfc, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0xf4, 0x00, 0xff, 0xff, 0x65, 0xff, 0xff, 0xff, 0xff,
            0x0e, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xf8, 0x00, 0x48, 0x44, 0xff, 0xf8, 0x00,
        ];
        assert!(AvcConfig::parse(Bytes::from_static(record)).is_err());
        assert_eq!(parse_sps_resolution(&record[8..]), Err(H264Error::BadSps));
    }

    // avcC from x264, 320x240 High profile (captured from ffmpeg -f lavfi testsrc).
    pub(crate) const AVCC_320X240: &[u8] = &[
        0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01,
        0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06,
        0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
    ];

    #[test]
    fn an_access_unit_of_a_million_empty_nal_units_is_malformed() {
        // avcC with 1-byte NAL lengths; the frame is 1 MiB of zero bytes = 1 Mi empty NAL units
        let mut record = AVCC_320X240.to_vec();
        record[4] = 0xfc; // lengthSizeMinusOne = 0
        let cfg = AvcConfig::parse(Bytes::from(record)).unwrap();
        assert_eq!(cfg.nalu_length_size, 1);
        let frame = Bytes::from(vec![0u8; 1 << 20]);
        let mut out = BytesMut::new();
        let err = avcc_to_annexb(&frame, true, Some(&cfg), &mut out).unwrap_err();
        assert_eq!(err, H264Error::TooManyNalus(MAX_NALUS_PER_AU));
        assert!(out.is_empty(), "nothing written for a refused frame");
        // up to the bound it is converted (empty units dropped): AUD, SPS, PPS, one slice
        let mut ok = vec![0u8; MAX_NALUS_PER_AU - 1];
        ok.extend_from_slice(&[2, 0x65, 0x88]);
        avcc_to_annexb(&Bytes::from(ok), true, Some(&cfg), &mut out).unwrap();
        let types: Vec<u8> = out.windows(5).filter(|w| w[..4] == [0, 0, 0, 1]).map(|w| w[4] & 0x1f).collect();
        assert_eq!(&types[..], &[9, 7, 8, 5]);
    }

    #[test]
    fn parses_avcc_and_resolution() {
        let cfg = AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
        assert_eq!(cfg.nalu_length_size, 4);
        assert_eq!(cfg.sps.len(), 1);
        assert_eq!(cfg.pps.len(), 1);
        assert_eq!((cfg.width, cfg.height), (320, 240));
        assert_eq!(cfg.codec_string(), "avc1.64000d");
    }

    #[test]
    fn rejects_truncated_records() {
        // header (6) + SPS length (2) + SPS (0x19): a record cut right there has no PPS list,
        // which is legal; every other cut lands inside a length or a parameter set.
        let sps_end = 6 + 2 + 0x19;
        for n in 0..AVCC_320X240.len() {
            let r = AvcConfig::parse(Bytes::copy_from_slice(&AVCC_320X240[..n]));
            assert_eq!(r.is_ok(), n == sps_end, "prefix of {n} bytes");
        }
    }

    #[test]
    fn annexb_adds_aud_and_parameter_sets_before_idr() {
        let cfg = AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
        let frame = Bytes::from_static(&[0, 0, 0, 3, 0x65, 0xaa, 0xbb, 0, 0, 0, 2, 0x09, 0xf0]);
        let mut out = BytesMut::new();
        avcc_to_annexb(&frame, true, Some(&cfg), &mut out).unwrap();
        let mut expect = vec![0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1];
        expect.extend_from_slice(&cfg.sps[0]);
        expect.extend_from_slice(&[0, 0, 0, 1]);
        expect.extend_from_slice(&cfg.pps[0]);
        expect.extend_from_slice(&[0, 0, 0, 1, 0x65, 0xaa, 0xbb]);
        assert_eq!(&out[..], &expect[..]);
    }

    #[test]
    fn annexb_rejects_overrunning_length() {
        let frame = Bytes::from_static(&[0, 0, 0, 9, 0x41, 0x00]);
        let mut out = BytesMut::new();
        assert!(avcc_to_annexb(&frame, false, None, &mut out).is_err());
    }
}
