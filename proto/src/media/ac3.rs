//! AC-3 and E-AC-3 helpers. Enhanced RTMP's `ac-3`/`ec-3` sequence start carries no
//! configuration, so it is read from the first syncframe (ATSC A/52 §5.3 and Annex E),
//! and written as the `dac3`/`dec3` boxes of ETSI TS 102 366 Annex F.

use bytes::Bytes;
use thiserror::Error;

use super::bits::BitReader;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Ac3Error {
    #[error("AC-3 frame too short or without the 0x0B77 sync word")]
    NoSync,
    #[error("AC-3 sample rate code {0} is reserved")]
    BadSampleRate(u8),
    #[error("AC-3 frame size code {0} is reserved")]
    BadFrameSize(u8),
}

/// What a syncframe says about the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ac3Config {
    /// E-AC-3 (`ec-3`) rather than AC-3.
    pub enhanced: bool,
    pub sample_rate: u32,
    pub channels: u8,
    /// Samples per syncframe: 1536 for AC-3, 256 × blocks for E-AC-3.
    pub frame_samples: u32,
    /// The `dac3` or `dec3` payload.
    pub specific: Bytes,
}

const RATES: [u32; 3] = [48_000, 44_100, 32_000];
const ACMOD_CHANNELS: [u8; 8] = [2, 1, 2, 3, 3, 4, 4, 5];
/// Nominal bit rates (kbit/s) by `frmsizecod / 2`.
const BIT_RATES: [u32; 19] = [32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 576, 640];

impl Ac3Config {
    /// Reads the configuration from a syncframe.
    pub fn from_frame(frame: &[u8]) -> Result<Self, Ac3Error> {
        if frame.len() < 8 || frame[0] != 0x0b || frame[1] != 0x77 {
            return Err(Ac3Error::NoSync);
        }
        let bsid = frame[5] >> 3;
        if bsid > 10 {
            Self::eac3(frame)
        } else {
            Self::ac3(frame)
        }
    }

    fn ac3(frame: &[u8]) -> Result<Self, Ac3Error> {
        let mut r = BitReader::new(&frame[4..]);
        let e = |_| Ac3Error::NoSync;
        let fscod = r.bits(2).map_err(e)? as u8;
        let frmsizecod = r.bits(6).map_err(e)? as u8;
        let bsid = r.bits(5).map_err(e)?;
        let bsmod = r.bits(3).map_err(e)?;
        let acmod = r.bits(3).map_err(e)?;
        let rate = *RATES.get(usize::from(fscod)).ok_or(Ac3Error::BadSampleRate(fscod))?;
        if usize::from(frmsizecod / 2) >= BIT_RATES.len() {
            return Err(Ac3Error::BadFrameSize(frmsizecod));
        }
        if acmod & 1 != 0 && acmod != 1 {
            r.bits(2).map_err(e)?;
        }
        if acmod & 4 != 0 {
            r.bits(2).map_err(e)?;
        }
        if acmod == 2 {
            r.bits(2).map_err(e)?;
        }
        let lfe = r.bit().map_err(e)?;
        let v: u32 = (u32::from(fscod) << 22)
            | (bsid << 17)
            | (bsmod << 14)
            | (acmod << 11)
            | (lfe << 10)
            | (u32::from(frmsizecod >> 1) << 5);
        Ok(Self {
            enhanced: false,
            sample_rate: rate,
            channels: ACMOD_CHANNELS[acmod as usize] + lfe as u8,
            frame_samples: 1536,
            specific: Bytes::copy_from_slice(&v.to_be_bytes()[1..]),
        })
    }

    fn eac3(frame: &[u8]) -> Result<Self, Ac3Error> {
        let mut r = BitReader::new(&frame[2..]);
        let e = |_| Ac3Error::NoSync;
        r.bits(2).map_err(e)?; // strmtyp
        r.bits(3).map_err(e)?; // substreamid
        let frmsiz = r.bits(11).map_err(e)?;
        let fscod = r.bits(2).map_err(e)? as u8;
        let (rate, blocks) = if fscod == 3 {
            let fscod2 = r.bits(2).map_err(e)? as u8;
            let half = *RATES.get(usize::from(fscod2)).ok_or(Ac3Error::BadSampleRate(fscod2))?;
            (half / 2, 6)
        } else {
            (RATES[usize::from(fscod)], [1, 2, 3, 6][r.bits(2).map_err(e)? as usize])
        };
        let acmod = r.bits(3).map_err(e)?;
        let lfe = r.bit().map_err(e)?;
        let bsid = r.bits(5).map_err(e)?;
        let samples = 256 * blocks;
        let bytes = (frmsiz + 1) * 2;
        let kbps = u64::from(bytes) * 8 * u64::from(rate) / u64::from(samples) / 1000;
        // dec3: data_rate(13) num_ind_sub(3) = 0, then one independent substream:
        // fscod(2) bsid(5) reserved(1) asvc(1) bsmod(3) acmod(3) lfeon(1) reserved(3)
        // num_dep_sub(4) reserved(1)
        let head = ((kbps.min(0x1fff) as u16) << 3).to_be_bytes();
        let sub: u32 = (u32::from(fscod.min(2)) << 22) | (bsid << 17) | (acmod << 9) | (lfe << 8);
        let mut specific = head.to_vec();
        specific.extend_from_slice(&sub.to_be_bytes()[1..]);
        Ok(Self {
            enhanced: true,
            sample_rate: rate,
            channels: ACMOD_CHANNELS[acmod as usize] + lfe as u8,
            frame_samples: samples,
            specific: Bytes::from(specific),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first_frame(file: &'static [u8]) -> Bytes {
        let file = Bytes::from_static(file);
        let tags = crate::flv::file::read_tags(&file).unwrap();
        let body = tags.iter().find(|t| t.tag_type == 8 && t.body[0] == 0x91).unwrap().body.clone();
        body.slice(5..)
    }

    #[test]
    fn reads_ffmpeg_ac3_and_eac3_syncframes() {
        let ac3 = Ac3Config::from_frame(&first_frame(include_bytes!("../../../fixtures/ertmp/h264_ac3.flv"))).unwrap();
        assert_eq!((ac3.enhanced, ac3.sample_rate, ac3.channels, ac3.frame_samples), (false, 48000, 1, 1536));
        assert_eq!(ac3.specific.len(), 3);
        let eac3 =
            Ac3Config::from_frame(&first_frame(include_bytes!("../../../fixtures/ertmp/h264_eac3.flv"))).unwrap();
        assert_eq!((eac3.enhanced, eac3.sample_rate, eac3.channels, eac3.frame_samples), (true, 48000, 1, 1536));
        assert_eq!(eac3.specific.len(), 5);
        assert_eq!(Ac3Config::from_frame(&[0x0b, 0x77, 0, 0]), Err(Ac3Error::NoSync));
        assert_eq!(Ac3Config::from_frame(&[0x0b, 0x77, 0, 0, 0xc0, 0x40, 0, 0]), Err(Ac3Error::BadSampleRate(3)));
    }
}
