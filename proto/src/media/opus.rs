//! Opus helpers: the identification header (`OpusHead`, RFC 7845 §5.1) Enhanced RTMP
//! sends as the `Opus` sequence start, its `dOps` form for MP4 (Opus-in-ISOBMFF §4.3.2),
//! and packet durations from the TOC byte (RFC 6716 §3.1).

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpusError {
    #[error("OpusHead too short ({0} bytes, expected 19 or more)")]
    TooShort(usize),
    #[error("OpusHead magic missing")]
    BadMagic,
    #[error("OpusHead version {0} (major version must be 0)")]
    BadVersion(u8),
    #[error("OpusHead with {0} channels")]
    BadChannels(u8),
    #[error("OpusHead channel mapping table runs past its end")]
    MappingTruncated,
}

/// Opus always decodes at 48 kHz.
pub const OPUS_RATE: u32 = 48_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpusConfig {
    /// The `OpusHead` as sent.
    pub head: Bytes,
    pub channels: u8,
    pub pre_skip: u16,
    pub input_rate: u32,
    pub output_gain: i16,
    pub mapping_family: u8,
    /// Stream count, coupled count and mapping table when the family is not 0.
    pub mapping: Bytes,
}

impl OpusConfig {
    pub fn parse(head: Bytes) -> Result<Self, OpusError> {
        let h = &head[..];
        if h.len() < 19 {
            return Err(OpusError::TooShort(h.len()));
        }
        if &h[..8] != b"OpusHead" {
            return Err(OpusError::BadMagic);
        }
        if h[8] >> 4 != 0 {
            return Err(OpusError::BadVersion(h[8]));
        }
        let channels = h[9];
        if channels == 0 {
            return Err(OpusError::BadChannels(0));
        }
        let mapping_family = h[18];
        let mapping = if mapping_family != 0 {
            let len = 2 + usize::from(channels);
            if h.len() < 19 + len {
                return Err(OpusError::MappingTruncated);
            }
            head.slice(19..19 + len)
        } else {
            if channels > 2 {
                return Err(OpusError::BadChannels(channels));
            }
            Bytes::new()
        };
        Ok(Self {
            channels,
            pre_skip: u16::from_le_bytes([h[10], h[11]]),
            input_rate: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            output_gain: i16::from_le_bytes([h[16], h[17]]),
            mapping_family,
            mapping,
            head,
        })
    }

    /// The `dOps` box payload (big-endian fields, version 0).
    pub fn dops(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(11 + self.mapping.len());
        b.put_u8(0);
        b.put_u8(self.channels);
        b.put_u16(self.pre_skip);
        b.put_u32(self.input_rate);
        b.put_i16(self.output_gain);
        b.put_u8(self.mapping_family);
        b.put_slice(&self.mapping);
        b.freeze()
    }
}

/// Samples (at 48 kHz) one Opus packet decodes to, from its TOC byte and frame count; None
/// for an empty or malformed packet.
pub fn packet_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 3 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    let total = frame * frames;
    // RFC 6716: a packet lasts at most 120 ms
    (total > 0 && total <= 5760).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_libopus_head_and_writes_dops() {
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/hevc_opus.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let body = tags.iter().find(|t| t.tag_type == 8).unwrap().body.clone();
        assert_eq!(&body[..5], b"\x90Opus");
        let c = OpusConfig::parse(body.slice(5..)).unwrap();
        assert_eq!((c.channels, c.pre_skip, c.input_rate, c.mapping_family), (1, 312, 48000, 0));
        assert_eq!(&c.dops()[..], &[0, 1, 0x01, 0x38, 0, 0, 0xbb, 0x80, 0, 0, 0]);
        for n in 0..19 {
            assert!(OpusConfig::parse(body.slice(5..5 + n)).is_err());
        }
    }

    #[test]
    fn packet_durations() {
        assert_eq!(packet_samples(&[0x78]), Some(960)); // CELT 20 ms, one frame (libopus default)
        assert_eq!(packet_samples(&[0x79]), Some(1920)); // two frames
        assert_eq!(packet_samples(&[0x7b, 0x03]), Some(2880)); // code 3, three frames
        assert_eq!(packet_samples(&[0x7b, 0x3f]), None); // 63 × 20 ms is over 120 ms
        assert_eq!(packet_samples(&[]), None);
    }
}
