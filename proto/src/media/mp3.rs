//! MP3 (MPEG-1/2 audio layer III, and layers I/II): the frame header, which is all the
//! configuration there is. Legacy FLV sound format 2 and Enhanced RTMP's `.mp3` carry
//! bare MPEG audio frames.

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Mp3Error {
    #[error("MPEG audio frame too short or without a sync word")]
    NoSync,
    #[error("MPEG audio header with a reserved version, layer or sample rate")]
    Reserved,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mp3Config {
    /// MPEG-1 (vs. MPEG-2/2.5 low sample rates).
    pub mpeg1: bool,
    pub layer: u8,
    pub sample_rate: u32,
    pub channels: u8,
    pub frame_samples: u32,
}

impl Mp3Config {
    pub fn from_frame(frame: &[u8]) -> Result<Self, Mp3Error> {
        if frame.len() < 4 || frame[0] != 0xff || frame[1] & 0xe0 != 0xe0 {
            return Err(Mp3Error::NoSync);
        }
        let version = (frame[1] >> 3) & 3; // 3 = MPEG-1, 2 = MPEG-2, 0 = MPEG-2.5
        let layer = match (frame[1] >> 1) & 3 {
            3 => 1,
            2 => 2,
            1 => 3,
            _ => return Err(Mp3Error::Reserved),
        };
        let rate_index = usize::from((frame[2] >> 2) & 3);
        let base = *[44_100, 48_000, 32_000].get(rate_index).ok_or(Mp3Error::Reserved)?;
        let sample_rate = match version {
            3 => base,
            2 => base / 2,
            0 => base / 4,
            _ => return Err(Mp3Error::Reserved),
        };
        let frame_samples = match (layer, version) {
            (1, _) => 384,
            (3, 2 | 0) => 576,
            _ => 1152,
        };
        Ok(Self {
            mpeg1: version == 3,
            layer,
            sample_rate,
            channels: if frame[3] >> 6 == 3 { 1 } else { 2 },
            frame_samples,
        })
    }

    /// The MPEG-4 object type indication MP4 uses for this stream (0x6B MPEG-1 audio,
    /// 0x69 MPEG-2 audio).
    pub fn object_type(&self) -> u8 {
        if self.mpeg1 {
            0x6b
        } else {
            0x69
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lame_frames() {
        // the first frame ffmpeg's libmp3lame sent (fixtures/ertmp/h264_mp3.flv): MPEG-1 layer III 48 kHz mono
        let c = Mp3Config::from_frame(&[0xff, 0xfb, 0x54, 0xc4]).unwrap();
        assert_eq!((c.mpeg1, c.layer, c.sample_rate, c.channels, c.frame_samples), (true, 3, 48000, 1, 1152));
        assert_eq!(Mp3Config::from_frame(&[0xff, 0xf3, 0x54, 0x00]).unwrap().frame_samples, 576);
        assert_eq!(Mp3Config::from_frame(&[0xff, 0xfb, 0x5c, 0xc4]), Err(Mp3Error::Reserved));
        assert_eq!(Mp3Config::from_frame(&[0xfe, 0xfb, 0x54]), Err(Mp3Error::NoSync));
    }
}
