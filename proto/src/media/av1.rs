//! AV1 helpers: the AV1CodecConfigurationRecord (`av1C`, AV1-ISOBMFF §2.3) Enhanced
//! RTMP sends as the `av01` sequence start, the sequence header OBU it carries (for the
//! picture size), and the codec string (`av01.0.04M.08`).

use bytes::Bytes;
use thiserror::Error;

use super::bits::{BitReader, OutOfBits};

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Av1Error {
    #[error("av1C record too short ({0} bytes, the fixed part is 4)")]
    RecordTooShort(usize),
    #[error("av1C marker/version byte {0:#04x}, expected 0x81")]
    BadVersion(u8),
    #[error("AV1 OBU is truncated or malformed")]
    BadObu,
    #[error("AV1 sequence header is truncated or malformed")]
    BadSequenceHeader,
}

impl From<OutOfBits> for Av1Error {
    fn from(_: OutOfBits) -> Self {
        Av1Error::BadSequenceHeader
    }
}

const OBU_SEQUENCE_HEADER: u8 = 1;
const OBU_TEMPORAL_DELIMITER: u8 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Av1Config {
    pub record: Bytes,
    pub profile: u8,
    pub level: u8,
    pub tier: bool,
    pub bit_depth: u8,
    pub monochrome: bool,
    pub width: u32,
    pub height: u32,
}

impl Av1Config {
    pub fn parse(record: Bytes) -> Result<Self, Av1Error> {
        let r = &record[..];
        if r.len() < 4 {
            return Err(Av1Error::RecordTooShort(r.len()));
        }
        if r[0] != 0x81 {
            return Err(Av1Error::BadVersion(r[0]));
        }
        let mut size = None;
        for obu in obus(&r[4..]) {
            let (kind, payload) = obu?;
            if kind == OBU_SEQUENCE_HEADER {
                size = Some(sequence_header_size(payload)?);
                break;
            }
        }
        // configOBUs are optional (AV1-ISOBMFF §2.3.3): without a sequence header the size
        // comes from the first keyframe, as for the MPEG-2 TS descriptor
        let (width, height) = size.unwrap_or((0, 0));
        Ok(Self::from_fixed(record, width, height))
    }

    /// The fields of the four fixed bytes the record starts with.
    fn from_fixed(record: Bytes, width: u32, height: u32) -> Self {
        let r = &record[..];
        let bit_depth = match (r[2] & 0x40 != 0, r[2] & 0x20 != 0) {
            (true, true) => 12,
            (true, false) => 10,
            _ => 8,
        };
        Self {
            profile: r[1] >> 5,
            level: r[1] & 0x1f,
            tier: r[2] & 0x80 != 0,
            bit_depth,
            monochrome: r[2] & 0x10 != 0,
            width,
            height,
            record,
        }
    }

    /// The configuration from Enhanced RTMP's MPEG2TSSequenceStart: the AV1 video
    /// descriptor of the MPEG-2 TS carriage (tag 0x80, length, then the four fixed bytes
    /// `av1C` starts with). It carries no sequence header, so the size comes from the
    /// first keyframe.
    pub fn from_ts_descriptor(descriptor: &[u8]) -> Result<Self, Av1Error> {
        let fixed = descriptor.get(2..6).ok_or(Av1Error::RecordTooShort(descriptor.len()))?;
        if descriptor[0] != 0x80 || fixed[0] != 0x81 {
            return Err(Av1Error::BadVersion(fixed[0]));
        }
        let mut record = fixed.to_vec();
        record[3] &= 0x1f; // initial_presentation_delay: not carried over
        Ok(Self::from_fixed(Bytes::from(record), 0, 0))
    }

    /// `av01.P.LLT.DD` (AV1-ISOBMFF "Codecs Parameter String").
    pub fn codec_string(&self) -> String {
        format!("av01.{}.{:02}{}.{:02}", self.profile, self.level, if self.tier { 'H' } else { 'M' }, self.bit_depth)
    }
}

/// The picture size of a temporal unit that carries a sequence header OBU (keyframes do).
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    obus(frame)
        .map_while(Result::ok)
        .find(|(kind, _)| *kind == OBU_SEQUENCE_HEADER)
        .and_then(|(_, p)| sequence_header_size(p).ok())
}

/// The OBUs of a low-overhead bitstream: (type, payload). Every OBU must carry its size
/// (as FLV and MP4 samples do).
pub fn obus(mut data: &[u8]) -> impl Iterator<Item = Result<(u8, &[u8]), Av1Error>> + '_ {
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let parsed = (|| {
            let header = data[0];
            let kind = (header >> 3) & 0x0f;
            let extension = header & 0x04 != 0;
            if header & 0x02 == 0 {
                return Err(Av1Error::BadObu); // no obu_has_size_field
            }
            let mut pos = 1 + usize::from(extension);
            let mut size: u64 = 0;
            for i in 0..8 {
                let b = *data.get(pos).ok_or(Av1Error::BadObu)?;
                pos += 1;
                size |= u64::from(b & 0x7f) << (7 * i);
                if b & 0x80 == 0 {
                    break;
                }
            }
            let size = usize::try_from(size).map_err(|_| Av1Error::BadObu)?;
            let end = pos.checked_add(size).filter(|&e| e <= data.len()).ok_or(Av1Error::BadObu)?;
            Ok((kind, pos, end))
        })();
        match parsed {
            Ok((kind, start, end)) => {
                let payload = &data[start..end];
                data = &data[end..];
                Some(Ok((kind, payload)))
            }
            Err(e) => {
                data = &[];
                Some(Err(e))
            }
        }
    })
}

/// Length of the temporal delimiter OBU a temporal unit starts with (0 when it does not):
/// AV1-ISOBMFF §2.4 says samples carry none, so the fMP4 output slices it off.
pub fn temporal_delimiter_len(frame: &[u8]) -> usize {
    match frame {
        [h, 0, ..] if (h >> 3) & 0x0f == OBU_TEMPORAL_DELIMITER && h & 0x06 == 0x02 => 2,
        _ => 0,
    }
}

fn uvlc(r: &mut BitReader<'_>) -> Result<u32, Av1Error> {
    let mut zeros = 0;
    while r.bit()? == 0 {
        zeros += 1;
        if zeros >= 32 {
            return Err(Av1Error::BadSequenceHeader);
        }
    }
    Ok(r.bits(zeros)?.saturating_add((1u32 << zeros) - 1))
}

/// `max_frame_width_minus_1 + 1` and the height from a sequence header OBU payload (AV1
/// §5.5).
fn sequence_header_size(payload: &[u8]) -> Result<(u32, u32), Av1Error> {
    let mut r = BitReader::new(payload);
    r.bits(3)?; // seq_profile
    r.bit()?; // still_picture
    let reduced = r.bit()? == 1;
    if reduced {
        r.bits(5)?; // seq_level_idx[0]
    } else {
        let mut buffer_delay_len = 0;
        let mut decoder_model_info = false;
        if r.bit()? == 1 {
            // timing_info
            r.skip(64)?;
            if r.bit()? == 1 {
                uvlc(&mut r)?;
            }
            decoder_model_info = r.bit()? == 1;
            if decoder_model_info {
                buffer_delay_len = r.bits(5)? as usize + 1;
                r.skip(32 + 5 + 5)?;
            }
        }
        let initial_display_delay = r.bit()? == 1;
        let points = r.bits(5)? + 1;
        for _ in 0..points {
            r.bits(12)?; // operating_point_idc
            if r.bits(5)? > 7 {
                r.bit()?; // seq_tier
            }
            if decoder_model_info && r.bit()? == 1 {
                r.skip(2 * buffer_delay_len + 1)?;
            }
            if initial_display_delay && r.bit()? == 1 {
                r.bits(4)?;
            }
        }
    }
    let width_bits = r.bits(4)? + 1;
    let height_bits = r.bits(4)? + 1;
    let width = r.bits(width_bits)?.saturating_add(1);
    let height = r.bits(height_bits)?.saturating_add(1);
    Ok((width, height))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `av1C` SVT-AV1 (ffmpeg 9) sent for 160x120 (fixtures/ertmp/av1_aac.flv).
    pub(crate) fn fixture_record() -> Bytes {
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/av1_aac.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let body = tags.iter().find(|t| t.tag_type == 9).unwrap().body.clone();
        assert_eq!(&body[..5], b"\x90av01");
        body.slice(5..)
    }

    #[test]
    fn parses_the_svt_av1_record() {
        let c = Av1Config::parse(fixture_record()).unwrap();
        assert_eq!((c.width, c.height, c.bit_depth, c.profile), (160, 120, 8, 0));
        assert_eq!(c.codec_string(), format!("av01.0.{:02}M.08", c.level));
    }

    #[test]
    fn truncated_and_broken_records_are_named_errors() {
        let rec = fixture_record();
        // the fixed part, then a sequence header OBU: every cut inside the OBU is an error
        for n in (0..4).chain(5..rec.len()) {
            assert!(Av1Config::parse(rec.slice(..n)).is_err(), "prefix of {n} bytes");
        }
        assert_eq!(Av1Config::parse(Bytes::from_static(&[0x01, 0, 0, 0])), Err(Av1Error::BadVersion(1)));
        // no configOBUs is allowed: the size comes from the first keyframe
        assert_eq!(Av1Config::parse(Bytes::from_static(&[0x81, 0, 0x0c, 0])).map(|c| c.width), Ok(0));
        // an OBU claiming 2^56 bytes
        let huge = [0x81, 0, 0x0c, 0, 0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f];
        assert_eq!(Av1Config::parse(Bytes::copy_from_slice(&huge)), Err(Av1Error::BadObu));
    }

    #[test]
    fn ts_descriptor_config_takes_its_size_from_the_keyframe() {
        let rec = fixture_record();
        let mut desc = vec![0x80, 4];
        desc.extend_from_slice(&rec[..4]);
        let c = Av1Config::from_ts_descriptor(&desc).unwrap();
        assert_eq!((c.width, c.codec_string()), (0, Av1Config::parse(rec.clone()).unwrap().codec_string()));
        // a keyframe temporal unit: TD, sequence header, frame
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/av1_aac.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let key = tags.iter().find(|t| t.tag_type == 9 && t.body[0] == 0x91).unwrap();
        assert_eq!(keyframe_size(&key.body[5..]), Some((160, 120)));
        assert!(Av1Config::from_ts_descriptor(&desc[..5]).is_err());
    }

    #[test]
    fn temporal_delimiters_are_recognised() {
        assert_eq!(temporal_delimiter_len(&[0x12, 0x00, 0x0a, 0x0b]), 2);
        assert_eq!(temporal_delimiter_len(&[0x0a, 0x0b]), 0);
        assert_eq!(temporal_delimiter_len(&[0x12]), 0);
    }
}
