//! Fragmented MP4 (CMAF-style) muxer for HLS: the initialization segment (`ftyp` + `moov`
//! with the sample entry of each track and `mvex`) and media fragments (`moof` with `mfhd`,
//! and per track `traf` = `tfhd` + `tfdt` (64-bit base decode time) + `trun` (sizes,
//! durations, sync-sample flags, signed composition offsets), then one `mdat`).
//!
//! Like the TS muxer it does not decide where segments are cut (`hls::segmenter` does); it
//! buffers the samples it is given and writes them on [`Fmp4Muxer::finish_segment`]. The
//! FLV payloads are already MP4 samples (H.264/HEVC as length-prefixed NAL units with the
//! record's length size, AV1 as OBUs (the temporal delimiter is sliced off), VP9 frames,
//! raw AAC, Opus packets, FLAC frames, AC-3 syncframes, MPEG audio frames), so each
//! payload is copied once, into the fragment. Sans-IO: no clocks, no sockets.
//!
//! Sample entries: `avc1`/`avcC`, `hvc1`/`hvcC` (the entry Safari requires, parameter
//! sets in the record), `av01`/`av1C`, `vp09`/`vpcC`; `mp4a`/`esds` (AAC, and MP3 with
//! object type 0x6B/0x69), `Opus`/`dOps`, `fLaC`/`dfLa`, `ac-3`/`dac3`, `ec-3`/`dec3`.
//! The codec records are the bytes the encoder sent.
//!
//! Boxes are written by hand rather than with `mp4-atom`: about twenty fixed layouts, the
//! codec boxes are byte copies of the records FLV carries (mp4-atom would parse and
//! re-encode them), its `Mdat` owns a `Vec` (one more copy per payload), and its API broke
//! in most of its recent releases (0.12 to 0.17 in five months).
//!
//! # Timing
//! - Video: timescale 90 kHz; `tfdt` = DTS × 90; each sample lasts until the next one's
//!   DTS (the last one of a segment until the DTS that ends the segment, or the previous
//!   step); composition offsets are signed (`trun` version 1).
//! - Audio: timescale = the sample rate (48 kHz for Opus); a frame lasts what its codec
//!   says (1024 samples for AAC, the TOC for Opus, 1536 for AC-3, ...). Decode times
//!   count samples from the first frame, so they do not jitter with the millisecond
//!   timestamps FLV gives; the count re-anchors to a frame's timestamp only when it is more
//!   than half a frame ahead of it (a gap) and after [`Fmp4Muxer::reset_timing`]; a frame
//!   whose timestamp is more than a frame behind the count is left out (its time was
//!   counted already), so the count never drifts ahead of the timestamps.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::ts::MuxError;
use crate::media::h264::{avcc_nalus, H264Error, MAX_NALUS_PER_AU};
use crate::media::{AudioConfig, AudioFrame, CodecConfig, VideoCodec, VideoConfig, VideoFrame};

/// Track id of the video track (when there is one).
pub const TRACK_VIDEO: u32 = 1;
/// Track id of the audio track (when there is one).
pub const TRACK_AUDIO: u32 = 2;
/// Timescale of the video track.
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// `trun` sample flags of a sync sample: depends on no other sample.
const SAMPLE_SYNC: u32 = 0x0200_0000;
/// `trun` sample flags of a non-sync sample: depends on others, `sample_is_non_sync_sample`.
const SAMPLE_NON_SYNC: u32 = 0x0101_0000;

#[derive(Debug)]
struct VideoSample {
    dts: i64,
    cts: i64,
    keyframe: bool,
    data: Bytes,
}

#[derive(Debug)]
struct AudioSample {
    /// Decode time in samples.
    time: u64,
    /// Samples the frame decodes to.
    samples: u64,
    data: Bytes,
}

/// Writes the initialization segment once per codec configuration and one `moof` + `mdat`
/// per segment; the fragment sequence number and the audio sample clock persist across
/// segments.
#[derive(Debug, Default)]
pub struct Fmp4Muxer {
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    init: Option<Bytes>,
    /// `mfhd` sequence number of the next fragment.
    sequence: u32,
    video_samples: Vec<VideoSample>,
    audio_samples: Vec<AudioSample>,
    /// Payload bytes buffered for the open segment.
    buffered: usize,
    /// Length of the access unit checked by `prepare_video`.
    prepared: usize,
    /// Decode time (samples) the next audio frame continues at.
    next_audio_time: Option<u64>,
    /// The last video DTS step (90 kHz), for the duration of a segment's last frame.
    last_video_step: i64,
}

impl Fmp4Muxer {
    pub fn new() -> Self {
        Self { sequence: 1, last_video_step: 3000, ..Self::default() }
    }

    /// Takes a codec configuration and writes its initialization segment.
    pub fn set_config(&mut self, config: &CodecConfig) -> Result<(), MuxError> {
        self.video = config.video.clone();
        self.audio = config.audio.clone();
        self.init = Some(init_segment(self.video.as_deref(), self.audio.as_deref()));
        Ok(())
    }

    /// The initialization segment of the current configuration (`EXT-X-MAP`).
    pub fn init_segment(&self) -> Option<&Bytes> {
        self.init.as_ref()
    }

    /// The timeline restarts (republish, timestamp jump): audio decode times re-anchor.
    pub fn reset_timing(&mut self) {
        self.next_audio_time = None;
    }

    /// Starts a segment (nothing is written until it finishes).
    pub fn start_segment(&mut self) {
        self.video_samples.clear();
        self.audio_samples.clear();
        self.buffered = 0;
    }

    /// Payload bytes buffered for the open segment.
    pub fn segment_len(&self) -> usize {
        self.buffered
    }

    /// Samples buffered for the open segment.
    pub fn segment_samples(&self) -> usize {
        self.video_samples.len() + self.audio_samples.len()
    }

    /// Length of the access unit checked by [`Self::prepare_video`].
    pub fn prepared_video_len(&self) -> usize {
        self.prepared
    }

    /// Checks an access unit (its NAL unit lengths walk the payload exactly, within the
    /// NAL unit bound) without buffering it. Follow with [`Self::commit_video`].
    pub fn prepare_video(&mut self, frame: &VideoFrame) -> Result<(), MuxError> {
        let cfg = self.video.as_deref().ok_or(MuxError::NoVideoConfig)?;
        self.prepared = frame.data.len();
        let Some(length_size) = cfg.nalu_length_size() else { return Ok(()) };
        let mut n = 0;
        for nalu in avcc_nalus(&frame.data, length_size) {
            nalu?;
            n += 1;
            if n > MAX_NALUS_PER_AU {
                return Err(H264Error::TooManyNalus(MAX_NALUS_PER_AU).into());
            }
        }
        Ok(())
    }

    /// Buffers the access unit checked by [`Self::prepare_video`].
    pub fn commit_video(&mut self, frame: &VideoFrame) {
        if let Some(last) = self.video_samples.last() {
            let step = frame.dts * 90 - last.dts;
            if step > 0 {
                self.last_video_step = step;
            }
        }
        // AV1 samples carry no temporal delimiter (AV1-ISOBMFF §2.4): a slice, not a copy
        let data = match self.video.as_deref().map(VideoConfig::codec) {
            Some(VideoCodec::Av1) => frame.data.slice(crate::media::av1::temporal_delimiter_len(&frame.data)..),
            _ => frame.data.clone(),
        };
        self.buffered += data.len();
        self.video_samples.push(VideoSample {
            dts: frame.dts * 90,
            cts: i64::from(frame.cts) * 90,
            keyframe: frame.keyframe,
            data,
        });
    }

    /// Checks that an audio frame can be muxed, without buffering it.
    pub fn check_audio(&self, frame: &AudioFrame) -> Result<(), MuxError> {
        let _ = frame;
        self.audio.as_deref().ok_or(MuxError::NoAudioConfig)?;
        Ok(())
    }

    /// Buffers an audio frame at its decode time in samples (see the module's *Timing*).
    pub fn write_audio(&mut self, frame: &AudioFrame) -> Result<(), MuxError> {
        self.check_audio(frame)?;
        let Some(cfg) = self.audio.as_deref() else { return Err(MuxError::NoAudioConfig) };
        let rate = u64::from(cfg.sample_rate().max(1));
        let samples = u64::from(cfg.frame_samples(&frame.data).unwrap_or_else(|| cfg.nominal_frame_samples()));
        let at = (u64::try_from(frame.pts.max(0)).unwrap_or(0) * rate + 500) / 1000;
        let time = match self.next_audio_time {
            // more than a frame behind the count: what it covers was counted already (the
            // publisher's timestamps stepped back, or its audio runs longer than its time, as
            // at the loop points of `ffmpeg -stream_loop`); left out, so that the count never
            // runs ahead of the timestamps (and the video) by more than a frame
            Some(next) if at + samples < next => return Ok(()),
            // jitter of the millisecond timestamps, or a small step back: stay continuous
            Some(next) if at < next + samples / 2 => next,
            _ => at,
        };
        self.next_audio_time = Some(time + samples);
        self.buffered += frame.data.len();
        self.audio_samples.push(AudioSample { time, samples, data: frame.data.clone() });
        Ok(())
    }

    /// Writes the buffered samples as one `moof` + `mdat`. `end_dts_ms`: the DTS at which
    /// the next segment starts (the last video sample lasts until then), when known.
    pub fn finish_segment(&mut self, end_dts_ms: Option<i64>) -> Bytes {
        let video = std::mem::take(&mut self.video_samples);
        let audio = std::mem::take(&mut self.audio_samples);
        self.buffered = 0;
        if video.is_empty() && audio.is_empty() {
            return Bytes::new();
        }
        let video_bytes: usize = video.iter().map(|s| s.data.len()).sum();
        let audio_bytes: usize = audio.iter().map(|s| s.data.len()).sum();
        let mut moof = BytesMut::with_capacity(64 + 16 * video.len() + 8 * audio.len() + 128);
        let mut offsets = Vec::with_capacity(2);
        bx(&mut moof, b"moof", |b| {
            full(b, b"mfhd", 0, 0, |b| b.put_u32(self.sequence));
            if !video.is_empty() {
                let end = end_dts_ms.map(|ms| ms * 90).filter(|&e| video.last().is_some_and(|l| e > l.dts));
                let step = self.last_video_step;
                bx(b, b"traf", |b| {
                    track_header(b, TRACK_VIDEO, u64::try_from(video[0].dts.max(0)).unwrap_or(0));
                    // data-offset, duration, size, flags, composition offset
                    full(b, b"trun", 1, 0x000F01, |b| {
                        b.put_u32(video.len() as u32);
                        offsets.push((b.len(), 0usize));
                        b.put_i32(0);
                        for (i, s) in video.iter().enumerate() {
                            let next = video.get(i + 1).map(|n| n.dts).or(end).unwrap_or(s.dts + step);
                            b.put_u32(u32::try_from(next - s.dts).unwrap_or(0));
                            b.put_u32(s.data.len() as u32);
                            b.put_u32(if s.keyframe { SAMPLE_SYNC } else { SAMPLE_NON_SYNC });
                            b.put_i32(i32::try_from(s.cts).unwrap_or(0));
                        }
                    });
                });
            }
            if !audio.is_empty() {
                bx(b, b"traf", |b| {
                    track_header(b, TRACK_AUDIO, audio[0].time);
                    // data-offset, duration, size (every audio frame is a sync sample)
                    full(b, b"trun", 0, 0x000301, |b| {
                        b.put_u32(audio.len() as u32);
                        offsets.push((b.len(), video_bytes));
                        b.put_i32(0);
                        for (i, s) in audio.iter().enumerate() {
                            let next = audio.get(i + 1).map_or(s.time + s.samples, |n| n.time);
                            b.put_u32(u32::try_from(next.saturating_sub(s.time)).unwrap_or(0));
                            b.put_u32(s.data.len() as u32);
                        }
                    });
                });
            }
        });
        self.sequence = self.sequence.wrapping_add(1);
        let moof_len = moof.len();
        for (pos, before) in offsets {
            let offset = i32::try_from(moof_len + 8 + before).unwrap_or(i32::MAX);
            moof[pos..pos + 4].copy_from_slice(&offset.to_be_bytes());
        }
        let mdat_len = 8 + video_bytes + audio_bytes;
        // one buffer of the exact size: the segment pins nothing more than itself
        let mut out = BytesMut::with_capacity(moof_len + mdat_len);
        out.put_slice(&moof);
        out.put_u32(u32::try_from(mdat_len).unwrap_or(u32::MAX));
        out.put_slice(b"mdat");
        for s in &video {
            out.put_slice(&s.data);
        }
        for s in &audio {
            out.put_slice(&s.data);
        }
        out.freeze()
    }
}

/// `tfhd` (default-base-is-moof, no other defaults) and `tfdt` (version 1, 64-bit).
fn track_header(b: &mut BytesMut, track_id: u32, base_decode_time: u64) {
    full(b, b"tfhd", 0, 0x02_0000, |b| b.put_u32(track_id));
    full(b, b"tfdt", 1, 0, |b| b.put_u64(base_decode_time));
}

/// Writes a box: size, type, what `body` writes.
fn bx(b: &mut BytesMut, kind: &[u8; 4], body: impl FnOnce(&mut BytesMut)) {
    let start = b.len();
    b.put_u32(0);
    b.put_slice(kind);
    body(b);
    let len = u32::try_from(b.len() - start).unwrap_or(u32::MAX);
    b[start..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Writes a full box (version and flags first).
fn full(b: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32, body: impl FnOnce(&mut BytesMut)) {
    bx(b, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        body(b);
    });
}

const UNITY_MATRIX: [u32; 9] = [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000];

/// `ftyp` + `moov` for the tracks configured.
pub fn init_segment(video: Option<&VideoConfig>, audio: Option<&AudioConfig>) -> Bytes {
    let mut b = BytesMut::with_capacity(1024);
    bx(&mut b, b"ftyp", |b| {
        b.put_slice(b"iso6");
        b.put_u32(0);
        for brand in [b"iso6", b"mp41"] {
            b.put_slice(brand);
        }
    });
    bx(&mut b, b"moov", |b| {
        full(b, b"mvhd", 0, 0, |b| {
            b.put_u32(0); // creation time
            b.put_u32(0); // modification time
            b.put_u32(1000); // timescale
            b.put_u32(0); // duration: unknown (fragmented)
            b.put_u32(0x0001_0000); // rate 1.0
            b.put_u16(0x0100); // volume 1.0
            b.put_bytes(0, 10);
            UNITY_MATRIX.iter().for_each(|&m| b.put_u32(m));
            b.put_bytes(0, 24); // pre-defined
            b.put_u32(TRACK_AUDIO + 1); // next track id
        });
        if let Some(v) = video {
            trak(b, TRACK_VIDEO, VIDEO_TIMESCALE, Some((v.width(), v.height())), |b| video_entry(b, v));
        }
        if let Some(a) = audio {
            trak(b, TRACK_AUDIO, a.sample_rate().max(1), None, |b| audio_entry(b, a));
        }
        bx(b, b"mvex", |b| {
            let tracks = [(video.is_some(), TRACK_VIDEO), (audio.is_some(), TRACK_AUDIO)];
            for (_, id) in tracks.into_iter().filter(|(has, _)| *has) {
                full(b, b"trex", 0, 0, |b| {
                    b.put_u32(id);
                    b.put_u32(1); // sample description index
                    b.put_u32(0); // default duration
                    b.put_u32(0); // default size
                    b.put_u32(0); // default flags
                });
            }
        });
    });
    b.freeze()
}

/// One `trak`: `tkhd`, `mdia` (`mdhd`, `hdlr`, `minf` with an empty sample table whose
/// `stsd` holds what `entry` writes). `size`: a video track's width and height.
fn trak(b: &mut BytesMut, id: u32, timescale: u32, size: Option<(u32, u32)>, entry: impl FnOnce(&mut BytesMut)) {
    bx(b, b"trak", |b| {
        full(b, b"tkhd", 0, 0x3, |b| {
            b.put_u32(0); // creation time
            b.put_u32(0); // modification time
            b.put_u32(id);
            b.put_u32(0); // reserved
            b.put_u32(0); // duration
            b.put_bytes(0, 8);
            b.put_u16(0); // layer
            b.put_u16(0); // alternate group
            b.put_u16(if size.is_some() { 0 } else { 0x0100 }); // volume
            b.put_u16(0);
            UNITY_MATRIX.iter().for_each(|&m| b.put_u32(m));
            let (w, h) = size.unwrap_or((0, 0));
            b.put_u32(w.min(0xffff) << 16);
            b.put_u32(h.min(0xffff) << 16);
        });
        bx(b, b"mdia", |b| {
            full(b, b"mdhd", 0, 0, |b| {
                b.put_u32(0);
                b.put_u32(0);
                b.put_u32(timescale);
                b.put_u32(0);
                b.put_u16(0x55c4); // language "und"
                b.put_u16(0);
            });
            let (handler, name): (&[u8; 4], &[u8]) =
                if size.is_some() { (b"vide", b"VideoHandler\0") } else { (b"soun", b"SoundHandler\0") };
            full(b, b"hdlr", 0, 0, |b| {
                b.put_u32(0);
                b.put_slice(handler);
                b.put_bytes(0, 12);
                b.put_slice(name);
            });
            bx(b, b"minf", |b| {
                if size.is_some() {
                    full(b, b"vmhd", 0, 1, |b| b.put_bytes(0, 8));
                } else {
                    full(b, b"smhd", 0, 0, |b| b.put_u32(0));
                }
                bx(b, b"dinf", |b| {
                    full(b, b"dref", 0, 0, |b| {
                        b.put_u32(1);
                        full(b, b"url ", 0, 1, |_| {}); // the media is in this file
                    });
                });
                bx(b, b"stbl", |b| {
                    full(b, b"stsd", 0, 0, |b| {
                        b.put_u32(1);
                        entry(b);
                    });
                    for kind in [b"stts", b"stsc", b"stco"] {
                        full(b, kind, 0, 0, |b| b.put_u32(0));
                    }
                    full(b, b"stsz", 0, 0, |b| {
                        b.put_u32(0);
                        b.put_u32(0);
                    });
                });
            });
        });
    });
}

/// The video sample entry (`avc1`, `hvc1`, `av01`, `vp09`) with the stream's record as it
/// is (`vpcC` is a full box whose version and flags the record starts with).
fn video_entry(b: &mut BytesMut, v: &VideoConfig) {
    let (entry, record): (&[u8; 4], &[u8; 4]) = match v.codec() {
        VideoCodec::Avc => (b"avc1", b"avcC"),
        VideoCodec::Hevc => (b"hvc1", b"hvcC"),
        VideoCodec::Av1 => (b"av01", b"av1C"),
        VideoCodec::Vp9 => (b"vp09", b"vpcC"),
    };
    bx(b, entry, |b| {
        b.put_bytes(0, 6);
        b.put_u16(1); // data reference index
        b.put_bytes(0, 16); // pre-defined, reserved
        b.put_u16(u16::try_from(v.width()).unwrap_or(u16::MAX));
        b.put_u16(u16::try_from(v.height()).unwrap_or(u16::MAX));
        b.put_u32(0x0048_0000); // 72 dpi
        b.put_u32(0x0048_0000);
        b.put_u32(0);
        b.put_u16(1); // frame count
        b.put_bytes(0, 32); // compressor name
        b.put_u16(0x0018); // depth
        b.put_i16(-1);
        bx(b, record, |b| b.put_slice(v.record()));
    });
}

/// The audio sample entry with its codec box: `mp4a`/`esds` (AAC, MP3), `Opus`/`dOps`,
/// `fLaC`/`dfLa`, `ac-3`/`dac3`, `ec-3`/`dec3`.
fn audio_entry(b: &mut BytesMut, a: &AudioConfig) {
    let entry: &[u8; 4] = match a {
        AudioConfig::Aac(_) | AudioConfig::Mp3(_) => b"mp4a",
        AudioConfig::Opus(_) => b"Opus",
        AudioConfig::Flac(_) => b"fLaC",
        AudioConfig::Ac3(c) if c.enhanced => b"ec-3",
        AudioConfig::Ac3(_) => b"ac-3",
    };
    bx(b, entry, |b| {
        b.put_bytes(0, 6);
        b.put_u16(1); // data reference index
        b.put_bytes(0, 8);
        b.put_u16(u16::from(a.channels().max(1)));
        b.put_u16(16); // sample size
        b.put_u32(0);
        let rate = a.sample_rate();
        b.put_u32(if rate <= 0xffff { rate << 16 } else { 0 });
        match a {
            AudioConfig::Aac(c) => esds(b, 0x40, &c.raw),
            AudioConfig::Mp3(c) => esds(b, c.object_type(), &[]),
            AudioConfig::Opus(c) => bx(b, b"dOps", |b| b.put_slice(&c.dops())),
            AudioConfig::Flac(c) => bx(b, b"dfLa", |b| b.put_slice(&c.dfla())),
            AudioConfig::Ac3(c) if c.enhanced => bx(b, b"dec3", |b| b.put_slice(&c.specific)),
            AudioConfig::Ac3(c) => bx(b, b"dac3", |b| b.put_slice(&c.specific)),
        }
    });
}

/// An `esds` for an MPEG-4 object type, with its decoder specific info (the AAC
/// AudioSpecificConfig as it is; none for MP3).
fn esds(b: &mut BytesMut, object_type: u8, dsi: &[u8]) {
    full(b, b"esds", 0, 0, |b| {
        let dsi_len = if dsi.is_empty() { 0 } else { 2 + dsi.len() };
        let dcd = 2 + 13 + dsi_len;
        let esd = 3 + dcd + 3;
        descriptor(b, 0x03, esd, |b| {
            b.put_u16(TRACK_AUDIO as u16); // ES id
            b.put_u8(0); // flags
            descriptor(b, 0x04, dcd - 2, |b| {
                b.put_u8(object_type);
                b.put_u8(0x15); // audio stream
                b.put_bytes(0, 3); // buffer size
                b.put_u32(0); // max bitrate
                b.put_u32(0); // average bitrate
                if !dsi.is_empty() {
                    descriptor(b, 0x05, dsi.len(), |b| b.put_slice(dsi));
                }
            });
            descriptor(b, 0x06, 1, |b| b.put_u8(0x02)); // SL config: predefined MP4
        });
    });
}

/// An MPEG-4 descriptor: tag, expandable length, body (`len` bytes; less than 128 here
/// for every field but the AudioSpecificConfig, which the length form covers to 2^28).
fn descriptor(b: &mut BytesMut, tag: u8, len: usize, body: impl FnOnce(&mut BytesMut)) {
    b.put_u8(tag);
    let len = len.min((1 << 28) - 1);
    for shift in [21, 14, 7] {
        if len >= 1 << shift {
            b.put_u8(0x80 | ((len >> shift) & 0x7f) as u8);
        }
    }
    b.put_u8((len & 0x7f) as u8);
    body(b);
}

#[cfg(test)]
mod tests;
