//! HEVC helpers: the HEVCDecoderConfigurationRecord (`hvcC`, ISO/IEC 14496-15 §8.3.3)
//! Enhanced RTMP sends as the `hvc1` sequence start (and legacy codec id 12 as its
//! sequence header), the SPS fields that give the picture size, and the RFC 6381 /
//! ISO/IEC 14496-15 Annex E codec string (`hvc1.1.6.L93.B0`).

use bytes::Bytes;
use thiserror::Error;

use super::bits::{rbsp, BitReader, OutOfBits};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum HevcError {
    #[error("hvcC record too short ({0} bytes, the fixed part is 23)")]
    RecordTooShort(usize),
    #[error("hvcC configurationVersion {0}, expected 1")]
    BadVersion(u8),
    #[error("hvcC NAL unit array {index} runs past the record end")]
    ArrayOverrun { index: usize },
    #[error("hvcC has more than {MAX_HVCC_NALUS} NAL units")]
    TooManyNalUnits,
    #[error("hvcC has no SPS (NAL unit type 33)")]
    NoSps,
    #[error("HEVC SPS is truncated or malformed")]
    BadSps,
}

impl From<OutOfBits> for HevcError {
    fn from(_: OutOfBits) -> Self {
        HevcError::BadSps
    }
}

/// NAL units one `hvcC` may list, in all its arrays. A stream has at most 16 VPS, 16 SPS
/// and 64 PPS (their ids), and encoders add a few SEI; a record of millions of empty
/// entries (an 8 MiB message holds ~4 M) is malformed, not a configuration to keep.
pub const MAX_HVCC_NALUS: usize = 256;

const NAL_VPS: u8 = 32;
const NAL_SPS: u8 = 33;
const NAL_PPS: u8 = 34;

/// A parsed `hvcC`. `record` keeps the bytes the encoder sent; the MP4 and FLV outputs
/// write them as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HevcConfig {
    pub record: Bytes,
    pub profile_space: u8,
    pub tier: bool,
    pub profile_idc: u8,
    pub compatibility: u32,
    pub constraints: [u8; 6],
    pub level_idc: u8,
    pub nalu_length_size: u8,
    pub vps: Vec<Bytes>,
    pub sps: Vec<Bytes>,
    pub pps: Vec<Bytes>,
    pub width: u32,
    pub height: u32,
}

impl HevcConfig {
    pub fn parse(record: Bytes) -> Result<Self, HevcError> {
        let r = &record[..];
        if r.len() < 23 {
            return Err(HevcError::RecordTooShort(r.len()));
        }
        if r[0] != 1 {
            return Err(HevcError::BadVersion(r[0]));
        }
        let mut constraints = [0u8; 6];
        constraints.copy_from_slice(&r[6..12]);
        let (mut vps, mut sps, mut pps) = (Vec::new(), Vec::new(), Vec::new());
        let arrays = usize::from(r[22]);
        let mut pos = 23;
        let mut nalus = 0;
        for index in 0..arrays {
            let header = r.get(pos..pos + 3).ok_or(HevcError::ArrayOverrun { index })?;
            let nal_type = header[0] & 0x3f;
            let count = usize::from(u16::from_be_bytes([header[1], header[2]]));
            nalus += count;
            if nalus > MAX_HVCC_NALUS {
                return Err(HevcError::TooManyNalUnits);
            }
            pos += 3;
            for _ in 0..count {
                let len = r.get(pos..pos + 2).ok_or(HevcError::ArrayOverrun { index })?;
                let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
                pos += 2;
                if pos + len > r.len() {
                    return Err(HevcError::ArrayOverrun { index });
                }
                let nalu = record.slice(pos..pos + len);
                pos += len;
                match nal_type {
                    NAL_VPS => vps.push(nalu),
                    NAL_SPS => sps.push(nalu),
                    NAL_PPS => pps.push(nalu),
                    _ => {} // SEI arrays and the like: kept in `record`
                }
            }
        }
        let (width, height) = sps_resolution(sps.first().ok_or(HevcError::NoSps)?)?;
        Ok(Self {
            profile_space: r[1] >> 6,
            tier: r[1] & 0x20 != 0,
            profile_idc: r[1] & 0x1f,
            compatibility: u32::from_be_bytes([r[2], r[3], r[4], r[5]]),
            constraints,
            level_idc: r[12],
            nalu_length_size: (r[21] & 0x03) + 1,
            vps,
            sps,
            pps,
            width,
            height,
            record,
        })
    }

    /// The codec string of ISO/IEC 14496-15 Annex E, with the `hvc1` sample entry (the
    /// one Safari requires): profile space and idc, the compatibility flags in reverse
    /// bit order, tier and level, the constraint bytes without trailing zeros.
    pub fn codec_string(&self) -> String {
        let space = ["", "A", "B", "C"][usize::from(self.profile_space & 3)];
        let mut s = format!(
            "hvc1.{space}{}.{:X}.{}{}",
            self.profile_idc,
            self.compatibility.reverse_bits(),
            if self.tier { 'H' } else { 'L' },
            self.level_idc
        );
        let used = self.constraints.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        for b in &self.constraints[..used] {
            s.push_str(&format!(".{b:X}"));
        }
        s
    }
}

/// The cropped picture size from an HEVC SPS NAL unit (with its 2-byte header).
pub fn sps_resolution(sps: &[u8]) -> Result<(u32, u32), HevcError> {
    if sps.len() < 4 {
        return Err(HevcError::BadSps);
    }
    let data = rbsp(&sps[2..]);
    let mut r = BitReader::new(&data);
    r.bits(4)?; // sps_video_parameter_set_id
    let max_sub_layers_minus1 = r.bits(3)? as usize;
    r.bit()?; // temporal_id_nesting
              // profile_tier_level: the general part is 88 bits of profile and 8 of level
    r.skip(96)?;
    let mut present = [(false, false); 8];
    for p in present.iter_mut().take(max_sub_layers_minus1) {
        *p = (r.bit()? == 1, r.bit()? == 1);
    }
    if max_sub_layers_minus1 > 0 {
        r.skip(2 * (8 - max_sub_layers_minus1))?;
    }
    for &(profile, level) in present.iter().take(max_sub_layers_minus1) {
        if profile {
            r.skip(88)?;
        }
        if level {
            r.skip(8)?;
        }
    }
    r.ue()?; // sps_seq_parameter_set_id
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return Err(HevcError::BadSps);
    }
    let separate_planes = chroma_format_idc == 3 && r.bit()? == 1;
    let width = u64::from(r.ue()?);
    let height = u64::from(r.ue()?);
    let (sub_w, sub_h) = match (chroma_format_idc, separate_planes) {
        (1, _) => (2, 2),
        (2, _) => (2, 1),
        _ => (1, 1),
    };
    let (mut cw, mut ch) = (0u64, 0u64);
    if r.bit()? == 1 {
        cw = (u64::from(r.ue()?) + u64::from(r.ue()?)) * sub_w;
        ch = (u64::from(r.ue()?) + u64::from(r.ue()?)) * sub_h;
    }
    let w = u32::try_from(width.saturating_sub(cw)).map_err(|_| HevcError::BadSps)?;
    let h = u32::try_from(height.saturating_sub(ch)).map_err(|_| HevcError::BadSps)?;
    Ok((w, h))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `hvcC` libx265 (ffmpeg 9) sent for 160x120 Main profile (fixtures/ertmp/hevc_opus.flv).
    pub(crate) fn fixture_record() -> Bytes {
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/hevc_opus.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let body = tags.iter().find(|t| t.tag_type == 9).unwrap().body.clone();
        assert_eq!(&body[..5], b"\x90hvc1");
        body.slice(5..)
    }

    #[test]
    fn parses_the_x265_record() {
        let c = HevcConfig::parse(fixture_record()).unwrap();
        assert_eq!((c.width, c.height, c.nalu_length_size), (160, 120, 4));
        assert_eq!((c.vps.len(), c.sps.len(), c.pps.len()), (1, 1, 1));
        assert_eq!(c.codec_string(), "hvc1.1.6.L30.90");
    }

    #[test]
    fn truncated_and_broken_records_are_named_errors() {
        let rec = fixture_record();
        for n in 0..rec.len() {
            assert!(HevcConfig::parse(rec.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        let mut bad = rec.to_vec();
        bad[0] = 2;
        assert_eq!(HevcConfig::parse(Bytes::from(bad)), Err(HevcError::BadVersion(2)));
        let mut no_arrays = rec[..23].to_vec();
        no_arrays[22] = 0;
        assert_eq!(HevcConfig::parse(Bytes::from(no_arrays)), Err(HevcError::NoSps));
    }

    /// The record plus `arrays` PPS arrays of `entries` empty NAL units each.
    fn with_empty_ppss(arrays: u8, entries: u16) -> Bytes {
        let mut rec = fixture_record().to_vec();
        rec[22] += arrays;
        for _ in 0..arrays {
            rec.push(NAL_PPS);
            rec.extend_from_slice(&entries.to_be_bytes());
            rec.resize(rec.len() + 2 * usize::from(entries), 0);
        }
        Bytes::from(rec)
    }

    #[test]
    fn a_record_of_millions_of_empty_nal_units_is_refused() {
        // 8 MiB of empty entries would be ~4 M NAL units, each a 32-byte list entry
        assert_eq!(HevcConfig::parse(with_empty_ppss(64, 65_535)), Err(HevcError::TooManyNalUnits));
        // the fixture lists 4 (VPS, SPS, PPS, SEI); 252 more are still a configuration
        let c = HevcConfig::parse(with_empty_ppss(1, 252)).unwrap();
        assert_eq!(c.pps.len(), 253);
        assert_eq!(HevcConfig::parse(with_empty_ppss(1, 253)), Err(HevcError::TooManyNalUnits));
    }

    #[test]
    fn codec_string_of_main10_high_tier() {
        let mut c = HevcConfig::parse(fixture_record()).unwrap();
        (c.profile_idc, c.compatibility, c.tier, c.level_idc) = (2, 0x2000_0000, true, 150);
        c.constraints = [0xb0, 0, 0, 0, 0, 0];
        assert_eq!(c.codec_string(), "hvc1.2.4.H150.B0");
    }
}
