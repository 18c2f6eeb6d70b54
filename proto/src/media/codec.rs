//! The codec configurations a stream can carry, one enum per kind, and what every output
//! asks of them (codec string, record bytes, picture size, sample rate, frame length).

use bytes::Bytes;

use super::{AacConfig, Ac3Config, Av1Config, AvcConfig, FlacConfig, HevcConfig, Mp3Config, OpusConfig, Vp9Config};

/// Video codecs, by their Enhanced RTMP FourCC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    Avc,
    Hevc,
    Av1,
    Vp9,
}

impl VideoCodec {
    pub fn from_fourcc(f: &[u8]) -> Option<Self> {
        Some(match f {
            b"avc1" => Self::Avc,
            b"hvc1" => Self::Hevc,
            b"av01" => Self::Av1,
            b"vp09" => Self::Vp9,
            _ => return None,
        })
    }

    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Self::Avc => b"avc1",
            Self::Hevc => b"hvc1",
            Self::Av1 => b"av01",
            Self::Vp9 => b"vp09",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Avc => "h264",
            Self::Hevc => "hevc",
            Self::Av1 => "av1",
            Self::Vp9 => "vp9",
        }
    }
}

/// Audio codecs, by their Enhanced RTMP FourCC (MP3 and AAC also have legacy FLV ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioCodec {
    Aac,
    Opus,
    Flac,
    Ac3,
    Eac3,
    Mp3,
}

impl AudioCodec {
    pub fn from_fourcc(f: &[u8]) -> Option<Self> {
        Some(match f {
            b"mp4a" => Self::Aac,
            b"Opus" => Self::Opus,
            b"fLaC" => Self::Flac,
            b"ac-3" => Self::Ac3,
            b"ec-3" => Self::Eac3,
            b".mp3" => Self::Mp3,
            _ => return None,
        })
    }

    pub fn fourcc(self) -> &'static [u8; 4] {
        match self {
            Self::Aac => b"mp4a",
            Self::Opus => b"Opus",
            Self::Flac => b"fLaC",
            Self::Ac3 => b"ac-3",
            Self::Eac3 => b"ec-3",
            Self::Mp3 => b".mp3",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Aac => "aac",
            Self::Opus => "opus",
            Self::Flac => "flac",
            Self::Ac3 => "ac3",
            Self::Eac3 => "eac3",
            Self::Mp3 => "mp3",
        }
    }

    /// Codecs whose configuration is read from the frames (no sequence header carries it).
    pub fn self_describing(self) -> bool {
        matches!(self, Self::Ac3 | Self::Eac3 | Self::Mp3)
    }
}

/// A video track's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VideoConfig {
    Avc(AvcConfig),
    Hevc(HevcConfig),
    Av1(Av1Config),
    Vp9(Vp9Config),
}

impl VideoConfig {
    pub fn codec(&self) -> VideoCodec {
        match self {
            Self::Avc(_) => VideoCodec::Avc,
            Self::Hevc(_) => VideoCodec::Hevc,
            Self::Av1(_) => VideoCodec::Av1,
            Self::Vp9(_) => VideoCodec::Vp9,
        }
    }

    /// The decoder configuration record as the encoder sent it (`avcC`, `hvcC`, `av1C`,
    /// `vpcC`).
    pub fn record(&self) -> &Bytes {
        match self {
            Self::Avc(c) => &c.record,
            Self::Hevc(c) => &c.record,
            Self::Av1(c) => &c.record,
            Self::Vp9(c) => &c.record,
        }
    }

    pub fn width(&self) -> u32 {
        match self {
            Self::Avc(c) => c.width,
            Self::Hevc(c) => c.width,
            Self::Av1(c) => c.width,
            Self::Vp9(c) => c.width,
        }
    }

    pub fn height(&self) -> u32 {
        match self {
            Self::Avc(c) => c.height,
            Self::Hevc(c) => c.height,
            Self::Av1(c) => c.height,
            Self::Vp9(c) => c.height,
        }
    }

    /// RFC 6381 codec string (`avc1.64001f`, `hvc1.1.6.L93.B0`, `av01.0.04M.08`, `vp09.00.10.08`).
    pub fn codec_string(&self) -> String {
        match self {
            Self::Avc(c) => c.codec_string(),
            Self::Hevc(c) => c.codec_string(),
            Self::Av1(c) => c.codec_string(),
            Self::Vp9(c) => c.codec_string(),
        }
    }

    /// Heap bytes the configuration keeps alive: its record (the parameter sets are slices
    /// of it) and the lists of them. An event carrying it is weighed by this (see
    /// `media::Event::weight`).
    pub fn heap_size(&self) -> usize {
        let lists =
            |sets: &[&Vec<Bytes>]| sets.iter().map(|v| v.capacity() * std::mem::size_of::<Bytes>()).sum::<usize>();
        let lists: usize = match self {
            Self::Avc(c) => lists(&[&c.sps, &c.pps]),
            Self::Hevc(c) => lists(&[&c.vps, &c.sps, &c.pps]),
            Self::Av1(_) | Self::Vp9(_) => 0,
        };
        std::mem::size_of::<Self>() + self.record().len() + lists
    }

    /// The NAL unit length size of the length-prefixed codecs (H.264, HEVC).
    pub fn nalu_length_size(&self) -> Option<u8> {
        match self {
            Self::Avc(c) => Some(c.nalu_length_size),
            Self::Hevc(c) => Some(c.nalu_length_size),
            _ => None,
        }
    }

    pub fn avc(&self) -> Option<&AvcConfig> {
        match self {
            Self::Avc(c) => Some(c),
            _ => None,
        }
    }

    /// Codecs whose record lacks the picture size (VP9, AV1 from an MPEG-2 TS descriptor)
    /// take it from the first keyframe; true when it changed.
    pub fn fill_size_from_keyframe(&mut self, frame: &[u8]) -> bool {
        let size = match self {
            Self::Vp9(c) if c.width == 0 => super::vp9::keyframe_size(frame),
            Self::Av1(c) if c.width == 0 => super::av1::keyframe_size(frame),
            _ => None,
        };
        match (self, size) {
            (Self::Vp9(c), Some((w, h))) => (c.width, c.height) = (w, h),
            (Self::Av1(c), Some((w, h))) => (c.width, c.height) = (w, h),
            _ => return false,
        }
        true
    }
}

/// An audio track's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioConfig {
    Aac(AacConfig),
    Opus(OpusConfig),
    Flac(FlacConfig),
    /// AC-3 or E-AC-3 (`Ac3Config::enhanced`).
    Ac3(Ac3Config),
    Mp3(Mp3Config),
}

impl AudioConfig {
    pub fn codec(&self) -> AudioCodec {
        match self {
            Self::Aac(_) => AudioCodec::Aac,
            Self::Opus(_) => AudioCodec::Opus,
            Self::Flac(_) => AudioCodec::Flac,
            Self::Ac3(c) if c.enhanced => AudioCodec::Eac3,
            Self::Ac3(_) => AudioCodec::Ac3,
            Self::Mp3(_) => AudioCodec::Mp3,
        }
    }

    /// The configuration from a frame of a self-describing codec (AC-3, E-AC-3, MP3).
    pub fn from_frame(codec: AudioCodec, frame: &[u8]) -> Option<Self> {
        match codec {
            AudioCodec::Ac3 | AudioCodec::Eac3 => {
                Ac3Config::from_frame(frame).ok().filter(|c| c.enhanced == (codec == AudioCodec::Eac3)).map(Self::Ac3)
            }
            AudioCodec::Mp3 => Mp3Config::from_frame(frame).ok().map(Self::Mp3),
            _ => None,
        }
    }

    /// What the FLV sequence header carries (AudioSpecificConfig, OpusHead, STREAMINFO;
    /// nothing for the self-describing codecs).
    pub fn record(&self) -> Bytes {
        match self {
            Self::Aac(c) => c.raw.clone(),
            Self::Opus(c) => c.head.clone(),
            Self::Flac(c) => c.stream_info.clone(),
            Self::Ac3(_) | Self::Mp3(_) => Bytes::new(),
        }
    }

    /// Heap bytes the configuration keeps alive (see [`VideoConfig::heap_size`]).
    pub fn heap_size(&self) -> usize {
        let bytes = match self {
            Self::Aac(c) => c.raw.len(),
            Self::Opus(c) => c.head.len(), // the mapping is a slice of it
            Self::Flac(c) => c.stream_info.len(),
            Self::Ac3(c) => c.specific.len(),
            Self::Mp3(_) => 0,
        };
        std::mem::size_of::<Self>() + bytes
    }

    pub fn sample_rate(&self) -> u32 {
        match self {
            Self::Aac(c) => c.sample_rate,
            Self::Opus(_) => super::opus::OPUS_RATE,
            Self::Flac(c) => c.sample_rate,
            Self::Ac3(c) => c.sample_rate,
            Self::Mp3(c) => c.sample_rate,
        }
    }

    pub fn channels(&self) -> u8 {
        match self {
            Self::Aac(c) => c.channels,
            Self::Opus(c) => c.channels,
            Self::Flac(c) => c.channels,
            Self::Ac3(c) => c.channels,
            Self::Mp3(c) => c.channels,
        }
    }

    /// RFC 6381 codec string as HLS `CODECS` wants it.
    pub fn codec_string(&self) -> String {
        match self {
            Self::Aac(c) => c.codec_string(),
            Self::Opus(_) => "opus".into(),
            Self::Flac(_) => "fLaC".into(),
            Self::Ac3(c) if c.enhanced => "ec-3".into(),
            Self::Ac3(_) => "ac-3".into(),
            Self::Mp3(c) => format!("mp4a.{:02X}", c.object_type()),
        }
    }

    pub fn aac(&self) -> Option<&AacConfig> {
        match self {
            Self::Aac(c) => Some(c),
            _ => None,
        }
    }

    /// The usual samples per frame (Opus: 20 ms, FLAC: its fixed block size or 4096).
    pub fn nominal_frame_samples(&self) -> u32 {
        match self {
            Self::Aac(_) => 1024,
            Self::Opus(_) => 960,
            Self::Flac(c) => c.fixed_block().unwrap_or(4096),
            Self::Ac3(c) => c.frame_samples,
            Self::Mp3(c) => c.frame_samples,
        }
    }

    /// Samples one frame decodes to, at [`Self::sample_rate`]; None when the frame does not
    /// say (a FLAC frame with its block size at the end of its header, a broken Opus TOC).
    pub fn frame_samples(&self, frame: &[u8]) -> Option<u32> {
        match self {
            Self::Aac(_) => Some(1024),
            Self::Opus(_) => super::opus::packet_samples(frame),
            Self::Flac(c) => super::flac::frame_samples(frame).or(c.fixed_block()),
            Self::Ac3(c) => Some(c.frame_samples),
            Self::Mp3(c) => Some(c.frame_samples),
        }
    }
}
