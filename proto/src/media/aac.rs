//! AAC helpers: the AudioSpecificConfig FLV sends as the audio sequence
//! header, and the 7-byte ADTS header MPEG-TS needs in front of each frame.

use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AacError {
    #[error("AudioSpecificConfig too short ({0} bytes)")]
    TooShort(usize),
    #[error("AAC sampling frequency index {0} is reserved")]
    BadSampleRateIndex(u8),
    #[error("AAC object type {0} cannot be carried in ADTS")]
    UnsupportedObjectType(u8),
    #[error("AAC frame of {0} bytes is too large for ADTS")]
    FrameTooLarge(usize),
}

const SAMPLE_RATES: [u32; 13] =
    [96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AacConfig {
    /// The AudioSpecificConfig bytes as received.
    pub raw: Bytes,
    pub object_type: u8,
    pub sample_rate_index: u8,
    pub sample_rate: u32,
    pub channels: u8,
}

impl AacConfig {
    pub fn parse(raw: Bytes) -> Result<Self, AacError> {
        if raw.len() < 2 {
            return Err(AacError::TooShort(raw.len()));
        }
        let object_type = raw[0] >> 3;
        let sample_rate_index = ((raw[0] & 0x07) << 1) | (raw[1] >> 7);
        let channels = (raw[1] >> 3) & 0x0f;
        if object_type == 0 || object_type == 31 {
            return Err(AacError::UnsupportedObjectType(object_type));
        }
        let sample_rate = if sample_rate_index == 15 {
            // explicit 24-bit frequency follows; ADTS cannot express it
            return Err(AacError::BadSampleRateIndex(15));
        } else {
            *SAMPLE_RATES.get(usize::from(sample_rate_index)).ok_or(AacError::BadSampleRateIndex(sample_rate_index))?
        };
        Ok(Self { raw, object_type, sample_rate_index, sample_rate, channels })
    }

    /// Duration of one AAC frame (1024 samples) in 90 kHz ticks.
    pub fn frame_duration_90k(&self) -> u64 {
        1024 * 90_000 / u64::from(self.sample_rate)
    }

    /// RFC 6381 codec string, e.g. `mp4a.40.2`.
    pub fn codec_string(&self) -> String {
        format!("mp4a.40.{}", self.object_type)
    }

    /// The 7-byte ADTS header (no CRC) for a raw frame of `frame_len` bytes.
    pub fn adts_header(&self, frame_len: usize) -> Result<[u8; 7], AacError> {
        let total = frame_len + 7;
        if total > 0x1fff {
            return Err(AacError::FrameTooLarge(frame_len));
        }
        // ADTS profile is object type - 1 on two bits; HE-AAC (5) and PS (29)
        // signal as LC with implicit SBR, which is what decoders expect.
        let profile = match self.object_type {
            1..=4 => self.object_type - 1,
            5 | 29 => 1,
            other => return Err(AacError::UnsupportedObjectType(other)),
        };
        let ch = self.channels & 0x07;
        let len = total as u16;
        Ok([
            0xff,
            0xf1, // MPEG-4, layer 0, no CRC
            (profile << 6) | (self.sample_rate_index << 2) | (ch >> 2),
            ((ch & 0x03) << 6) | ((len >> 11) as u8 & 0x03),
            ((len >> 3) & 0xff) as u8,
            (((len & 0x07) as u8) << 5) | 0x1f,
            0xfc, // buffer fullness 0x7ff (VBR), one raw data block
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lc_44100_stereo() {
        let cfg = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert_eq!((cfg.object_type, cfg.sample_rate, cfg.channels), (2, 44100, 2));
        assert_eq!(cfg.codec_string(), "mp4a.40.2");
    }

    #[test]
    fn adts_header_fields() {
        let cfg = AacConfig::parse(Bytes::from_static(&[0x11, 0x90])).unwrap(); // LC 48k stereo
        assert_eq!(cfg.sample_rate, 48000);
        let h = cfg.adts_header(100).unwrap();
        assert_eq!(h[0], 0xff);
        assert_eq!(h[1] & 0xf6, 0xf0); // sync + layer 0
        assert_eq!(h[1] & 0x01, 1); // protection absent
        assert_eq!(h[2] >> 6, 1); // LC
        assert_eq!((h[2] >> 2) & 0x0f, 3); // 48 kHz
        let ch = ((h[2] & 1) << 2) | (h[3] >> 6);
        assert_eq!(ch, 2);
        let len = (u16::from(h[3] & 3) << 11) | (u16::from(h[4]) << 3) | u16::from(h[5] >> 5);
        assert_eq!(len, 107);
        assert_eq!(((u16::from(h[5] & 0x1f) << 6) | u16::from(h[6] >> 2)), 0x7ff);
        assert_eq!(h[6] & 3, 0);
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(AacConfig::parse(Bytes::from_static(&[0x12])).is_err());
        assert!(AacConfig::parse(Bytes::from_static(&[0x17, 0x10])).is_err()); // index 14 reserved
        assert!(AacConfig::parse(Bytes::from_static(&[0x00, 0x10])).is_err());
        let cfg = AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap();
        assert!(cfg.adts_header(9000).is_err());
    }
}
