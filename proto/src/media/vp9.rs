//! VP9 helpers: the VPCodecConfigurationRecord (`vpcC` full box body, "VP Codec ISO
//! Media File Format Binding" §2.2) Enhanced RTMP sends as the `vp09` sequence start, the
//! picture size from a keyframe's uncompressed header, and the codec string
//! (`vp09.00.10.08`).

use bytes::Bytes;
use thiserror::Error;

use super::bits::BitReader;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Vp9Error {
    #[error("vpcC record too short ({0} bytes, expected 12 or more)")]
    RecordTooShort(usize),
    #[error("vpcC version {0}, expected 1")]
    BadVersion(u8),
    #[error("vpcC bit depth {0} (8, 10 or 12)")]
    BadBitDepth(u8),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vp9Config {
    /// The whole `vpcC` payload (version, flags and the record) as sent.
    pub record: Bytes,
    pub profile: u8,
    pub level: u8,
    pub bit_depth: u8,
    /// From the first keyframe (the record does not carry it); 0 until then.
    pub width: u32,
    pub height: u32,
}

impl Vp9Config {
    pub fn parse(record: Bytes) -> Result<Self, Vp9Error> {
        let r = &record[..];
        if r.len() < 12 {
            return Err(Vp9Error::RecordTooShort(r.len()));
        }
        if r[0] != 1 {
            return Err(Vp9Error::BadVersion(r[0]));
        }
        let bit_depth = r[6] >> 4;
        if !matches!(bit_depth, 8 | 10 | 12) {
            return Err(Vp9Error::BadBitDepth(bit_depth));
        }
        Ok(Self { profile: r[4], level: r[5], bit_depth, width: 0, height: 0, record })
    }

    /// `vp09.PP.LL.DD`.
    pub fn codec_string(&self) -> String {
        format!("vp09.{:02}.{:02}.{:02}", self.profile, self.level, self.bit_depth)
    }
}

/// The frame size a VP9 keyframe's uncompressed header gives (VP9 §6.2), if `frame` is
/// a keyframe.
pub fn keyframe_size(frame: &[u8]) -> Option<(u32, u32)> {
    let mut r = BitReader::new(frame);
    if r.bits(2).ok()? != 2 {
        return None; // frame_marker
    }
    let profile = r.bit().ok()? | (r.bit().ok()? << 1);
    if profile == 3 {
        r.bit().ok()?;
    }
    if r.bit().ok()? == 1 {
        return None; // show_existing_frame
    }
    if r.bit().ok()? != 0 {
        return None; // not a keyframe
    }
    r.bits(2).ok()?; // show_frame, error_resilient_mode
    if r.bits(24).ok()? != 0x49_8342 {
        return None;
    }
    if profile >= 2 {
        r.bit().ok()?;
    }
    let color_space = r.bits(3).ok()?;
    if color_space != 7 {
        r.bit().ok()?; // color_range
        if profile == 1 || profile == 3 {
            r.bits(3).ok()?;
        }
    } else if profile == 1 || profile == 3 {
        r.bit().ok()?;
    }
    let w = r.bits(16).ok()? + 1;
    let h = r.bits(16).ok()? + 1;
    Some((w, h))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_bodies() -> Vec<Bytes> {
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/vp9_flac.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        tags.iter().filter(|t| t.tag_type == 9).map(|t| t.body.clone()).collect()
    }

    #[test]
    fn parses_the_libvpx_record_and_keyframe_size() {
        let bodies = fixture_bodies();
        assert_eq!(&bodies[0][..5], b"\x90vp09");
        let c = Vp9Config::parse(bodies[0].slice(5..)).unwrap();
        assert_eq!((c.profile, c.bit_depth), (0, 8));
        assert_eq!(c.codec_string(), format!("vp09.00.{:02}.08", c.level));
        let key = bodies.iter().find(|b| b[0] == 0x91).unwrap();
        assert_eq!(keyframe_size(&key[5..]), Some((160, 120)));
        let inter = bodies.iter().find(|b| b[0] == 0xa1).unwrap();
        assert_eq!(keyframe_size(&inter[5..]), None);
    }

    #[test]
    fn broken_records_are_named_errors() {
        let rec = fixture_bodies()[0].slice(5..);
        for n in 0..12 {
            assert_eq!(Vp9Config::parse(rec.slice(..n)), Err(Vp9Error::RecordTooShort(n)));
        }
        let mut bad = rec.to_vec();
        bad[6] = 0x90;
        assert_eq!(Vp9Config::parse(Bytes::from(bad)), Err(Vp9Error::BadBitDepth(9)));
        for n in 0..8 {
            assert_eq!(keyframe_size(&[0x82, 0x49, 0x83, 0x42, 0, 9, 0xf0, 7][..n]), None);
        }
    }
}
