//! FLAC helpers: the STREAMINFO metadata block Enhanced RTMP sends as the `fLaC`
//! sequence start (bare, or after the `fLaC` marker as metadata blocks), and the `dfLa`
//! box of FLAC-in-ISOBMFF §3.3.2.

use bytes::{BufMut, Bytes, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlacError {
    #[error("FLAC STREAMINFO too short ({0} bytes, expected 34)")]
    TooShort(usize),
    #[error("FLAC first metadata block is type {0}, not STREAMINFO")]
    NotStreamInfo(u8),
    #[error("FLAC STREAMINFO with sample rate 0")]
    BadSampleRate,
    #[error("FLAC STREAMINFO block sizes {min}..{max} (16 ≤ min ≤ max)")]
    BadBlockSize { min: u16, max: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlacConfig {
    /// The 34-byte STREAMINFO block body.
    pub stream_info: Bytes,
    pub min_block: u16,
    pub max_block: u16,
    pub sample_rate: u32,
    pub channels: u8,
    pub bits_per_sample: u8,
}

impl FlacConfig {
    pub fn parse(data: Bytes) -> Result<Self, FlacError> {
        let info = if data.starts_with(b"fLaC") {
            // marker, then metadata block header (last flag + type, 24-bit length)
            let header = data.get(4..8).ok_or(FlacError::TooShort(data.len()))?;
            if header[0] & 0x7f != 0 {
                return Err(FlacError::NotStreamInfo(header[0] & 0x7f));
            }
            data.slice(8..)
        } else {
            data
        };
        if info.len() < 34 {
            return Err(FlacError::TooShort(info.len()));
        }
        let i = &info[..34];
        let (min_block, max_block) = (u16::from_be_bytes([i[0], i[1]]), u16::from_be_bytes([i[2], i[3]]));
        if min_block < 16 || max_block < min_block {
            return Err(FlacError::BadBlockSize { min: min_block, max: max_block });
        }
        let sample_rate = (u32::from(i[10]) << 12) | (u32::from(i[11]) << 4) | u32::from(i[12] >> 4);
        if sample_rate == 0 {
            return Err(FlacError::BadSampleRate);
        }
        Ok(Self {
            min_block,
            max_block,
            sample_rate,
            channels: ((i[12] >> 1) & 0x07) + 1,
            bits_per_sample: (((i[12] & 1) << 4) | (i[13] >> 4)) + 1,
            stream_info: info.slice(..34),
        })
    }

    /// The `dfLa` payload: version/flags, then STREAMINFO marked as the last block.
    pub fn dfla(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(4 + 4 + 34);
        b.put_u32(0);
        b.put_u8(0x80); // last-metadata-block, type 0 (STREAMINFO)
        b.put_slice(&[0, 0, 34]);
        b.put_slice(&self.stream_info);
        b.freeze()
    }

    /// Samples per frame when the stream uses a fixed block size.
    pub fn fixed_block(&self) -> Option<u32> {
        (self.min_block == self.max_block && self.min_block > 15).then_some(u32::from(self.max_block))
    }
}

/// The block size a FLAC frame header codes directly (RFC 9639 §9.1.1); None when it is
/// stored at the end of the header, or for a non-frame.
pub fn frame_samples(frame: &[u8]) -> Option<u32> {
    if frame.len() < 4 || frame[0] != 0xff || frame[1] & 0xfe != 0xf8 {
        return None;
    }
    match frame[2] >> 4 {
        1 => Some(192),
        n @ 2..=5 => Some(576 << (n - 2)),
        n @ 8..=15 => Some(256 << (n - 8)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ffmpeg_streaminfo_bare_and_with_marker() {
        let file = Bytes::from_static(include_bytes!("../../../fixtures/ertmp/vp9_flac.flv"));
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let audio: Vec<_> = tags.iter().filter(|t| t.tag_type == 8).map(|t| t.body.clone()).collect();
        assert_eq!(&audio[0][..5], b"\x90fLaC");
        let c = FlacConfig::parse(audio[0].slice(5..)).unwrap();
        assert_eq!((c.sample_rate, c.channels, c.bits_per_sample), (48000, 1, 16));
        let mut marked = b"fLaC\x80\x00\x00\x22".to_vec();
        marked.extend_from_slice(&c.stream_info);
        assert_eq!(FlacConfig::parse(Bytes::from(marked)).unwrap(), c);
        assert_eq!(c.dfla().len(), 42);
        let frame = audio.iter().find(|b| b[0] == 0x91).unwrap();
        let n = frame_samples(&frame[5..]).or(c.fixed_block());
        assert!(n.is_some_and(|n| n >= 192), "{n:?}");
        for n in 0..34 {
            assert_eq!(FlacConfig::parse(c.stream_info.slice(..n)), Err(FlacError::TooShort(n)));
        }
        // a bare STREAMINFO that starts with the bytes "fLaC" has min block > max block
        let mut odd = c.stream_info.to_vec();
        odd[..4].copy_from_slice(b"fLaC");
        assert!(FlacConfig::parse(Bytes::from(odd)).is_err());
    }
}
