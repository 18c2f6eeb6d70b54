//! MPEG-TS muxer for HLS segments: PAT/PMT, PES packetization of H.264 access
//! units and AAC (ADTS) frames, PCR, continuity counters and 33-bit PTS/DTS.
//!
//! It does not decide where segments are cut (that is `hls::segmenter`); it
//! writes what it is given into the current segment buffer and hands the
//! buffer over on [`TsMuxer::finish_segment`]. Sans-IO: no clocks, no sockets.
//!
//! Timestamps come in as milliseconds (`i64`) and become 90 kHz ticks only
//! here: `ticks = (ms + TIMESTAMP_OFFSET_MS) * 90`, kept unwrapped as `i64`
//! for comparisons and masked to 33 bits only when written, so a timeline
//! crossing 2^33 ticks (≈ 26.5 h) wraps instead of overflowing, and a
//! slightly negative time (negative composition offset at t = 0) is a valid
//! wrapped value instead of garbage.
//!
//! PAT/PMT are encoded with `mpeg2ts` (once per track set; only the continuity
//! counter nibble, outside the CRC, is patched per segment). PES packets are
//! written by hand: `mpeg2ts` copies each 184-byte payload chunk into its own
//! fixed buffer and then again into the writer, and it gives no control over
//! the PES header length field for unbounded video PES; writing the header,
//! adaptation field (PCR, random access, stuffing) and payload directly into
//! the segment buffer costs one copy of the payload and no allocation.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use mpeg2ts::es::StreamType;
use mpeg2ts::ts::payload::{Pat, Pmt};
use mpeg2ts::ts::{
    ContinuityCounter, EsInfo, Pid, ProgramAssociation, TransportScramblingControl, TsHeader, TsPacket, TsPacketWriter,
    TsPayload, VersionNumber, WriteTsPacket,
};
use thiserror::Error;

use crate::media::aac::AacError;
use crate::media::h264::{avcc_to_annexb, H264Error};
use crate::media::{AudioConfig, AudioFrame, CodecConfig, VideoConfig, VideoFrame};

pub const TS_PACKET_SIZE: usize = 188;
pub const PID_PAT: u16 = 0x0000;
pub const PID_PMT: u16 = 0x1000;
pub const PID_VIDEO: u16 = 0x0100;
pub const PID_AUDIO: u16 = 0x0101;
pub const STREAM_TYPE_H264: u8 = 0x1b;
pub const STREAM_TYPE_AAC_ADTS: u8 = 0x0f;
const STREAM_ID_VIDEO: u8 = 0xe0;
const STREAM_ID_AUDIO: u8 = 0xc0;

/// Added to every media timestamp before conversion to 90 kHz, so that a
/// stream starting at 0 with a PCR `PCR_DELAY_MS` behind its DTS stays positive.
pub const TIMESTAMP_OFFSET_MS: i64 = 1_400;
/// PCR runs this far behind the DTS of the data it precedes (the decoder's
/// buffering delay; ffmpeg uses the same 0.7 s by default).
pub const PCR_DELAY_MS: i64 = 700;
/// A standalone PCR is sent before a PES on a non-PCR PID when the last PCR is
/// this old; PES on the PCR PID always carry one.
const PCR_MAX_INTERVAL_90K: i64 = 80 * 90;
/// PTS/DTS/PCR base wrap at 2^33.
pub const TIMESTAMP_MASK: i64 = (1 << 33) - 1;
/// Audio PES must carry a PES_packet_length; stay well below 65535.
const MAX_AUDIO_PES_BYTES: usize = 60_000;

#[derive(Debug, Error)]
pub enum MuxError {
    #[error("video frame, but the codec configuration has no video track")]
    NoVideoConfig,
    #[error("audio frame, but the codec configuration has no audio track")]
    NoAudioConfig,
    #[error("bad H.264 access unit: {0}")]
    H264(#[from] H264Error),
    #[error("bad AAC frame: {0}")]
    Aac(#[from] AacError),
    #[error("PSI encoding failed: {0}")]
    Psi(String),
    #[error("MPEG-TS segments carry H.264 and AAC only, not {0}")]
    NotInTs(&'static str),
}

/// Whether MPEG-TS segments can carry a stream of these codecs (H.264 and AAC: what every
/// HLS player reads from TS). Other streams are served as fMP4.
pub fn carries(config: &CodecConfig) -> bool {
    not_in_ts(config).is_none()
}

fn not_in_ts(config: &CodecConfig) -> Option<&'static str> {
    if let Some(v) = config.video.as_deref().filter(|v| v.avc().is_none()) {
        return Some(v.codec().name());
    }
    config.audio.as_deref().filter(|a| a.aac().is_none()).map(|a| a.codec().name())
}

/// Milliseconds to unwrapped 90 kHz ticks (offset applied, not masked).
pub fn ms_to_90k(ms: i64) -> i64 {
    (ms + TIMESTAMP_OFFSET_MS) * 90
}

fn mask33(ticks: i64) -> u64 {
    ticks.rem_euclid(1 << 33) as u64
}

/// Which elementary streams the PMT declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tracks {
    pub video: bool,
    pub audio: bool,
}

impl Tracks {
    pub fn pcr_pid(self) -> u16 {
        if self.video {
            PID_VIDEO
        } else {
            PID_AUDIO
        }
    }
}

#[derive(Debug, Default)]
struct PendingAudio {
    /// ADTS frames, back to back.
    data: BytesMut,
    first_pts_90k: i64,
    /// Expected PTS of the next frame if it continues this run.
    end_90k: i64,
    frames: usize,
}

/// Writes one HLS segment at a time; continuity counters and the PCR clock
/// persist across segments.
#[derive(Debug)]
pub struct TsMuxer {
    video: Option<Arc<VideoConfig>>,
    audio: Option<Arc<AudioConfig>>,
    tracks: Tracks,
    pmt_version: u8,
    pat_packet: [u8; TS_PACKET_SIZE],
    pmt_packet: [u8; TS_PACKET_SIZE],
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
    out: BytesMut,
    /// Annex-B of the access unit being written (reused; no per-frame allocation).
    video_au: BytesMut,
    pending: PendingAudio,
    max_audio_pes_90k: i64,
    last_pcr: Option<i64>,
    /// The next PES of the segment must be preceded by (or carry) a PCR.
    pcr_due: bool,
    /// The next PCR marks a timeline discontinuity.
    pcr_discontinuity: bool,
    segment_open: bool,
}

impl TsMuxer {
    /// `max_audio_pes_ms` bounds the duration of audio carried in one PES.
    pub fn new(max_audio_pes_ms: u64) -> Self {
        Self {
            video: None,
            audio: None,
            tracks: Tracks::default(),
            pmt_version: 0,
            pat_packet: [0; TS_PACKET_SIZE],
            pmt_packet: [0; TS_PACKET_SIZE],
            cc_pat: 0,
            cc_pmt: 0,
            cc_video: 0,
            cc_audio: 0,
            out: BytesMut::new(),
            video_au: BytesMut::new(),
            pending: PendingAudio::default(),
            max_audio_pes_90k: i64::try_from(max_audio_pes_ms.max(1)).unwrap_or(i64::MAX / 90) * 90,
            last_pcr: None,
            pcr_due: true,
            pcr_discontinuity: false,
            segment_open: false,
        }
    }

    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    /// Installs a codec configuration. Takes effect for the PSI at the next
    /// [`start_segment`](Self::start_segment); the caller cuts the segment
    /// when the configuration really changes.
    pub fn set_config(&mut self, config: &CodecConfig) -> Result<(), MuxError> {
        if let Some(codec) = not_in_ts(config) {
            return Err(MuxError::NotInTs(codec));
        }
        let tracks = Tracks { video: config.video.is_some(), audio: config.audio.is_some() };
        self.video = config.video.clone();
        self.audio = config.audio.clone();
        if tracks != self.tracks || self.pat_packet[0] != 0x47 {
            if self.pat_packet[0] == 0x47 {
                self.pmt_version = (self.pmt_version + 1) & 0x1f;
            }
            self.tracks = tracks;
            self.pat_packet = encode_pat()?;
            self.pmt_packet = encode_pmt(tracks, self.pmt_version)?;
        }
        Ok(())
    }

    /// The timeline restarts (republish, timestamp jump): the PCR may go
    /// backwards, and the next one carries the discontinuity indicator.
    pub fn reset_timing(&mut self) {
        self.last_pcr = None;
        self.pcr_discontinuity = true;
        self.pcr_due = true;
    }

    /// Starts a segment: PAT and PMT, and a PCR before the first media data.
    pub fn start_segment(&mut self) {
        debug_assert!(!self.segment_open, "start_segment on an open segment");
        if self.pat_packet[0] != 0x47 {
            // No configuration yet: declare no tracks rather than panic.
            self.pat_packet = encode_pat().unwrap_or([0xff; TS_PACKET_SIZE]);
            self.pmt_packet = encode_pmt(self.tracks, self.pmt_version).unwrap_or([0xff; TS_PACKET_SIZE]);
        }
        for (packet, cc) in [(self.pat_packet, &mut self.cc_pat), (self.pmt_packet, &mut self.cc_pmt)] {
            let start = self.out.len();
            self.out.put_slice(&packet);
            self.out[start + 3] = (self.out[start + 3] & 0xf0) | *cc;
            *cc = (*cc + 1) & 0x0f;
        }
        self.pcr_due = true;
        self.segment_open = true;
    }

    /// Flushes buffered audio and returns the segment's bytes.
    pub fn finish_segment(&mut self) -> Bytes {
        self.flush_audio();
        self.segment_open = false;
        // copied out at its exact size: a split-off view would pin the buffer's spare
        // capacity (up to as much again) for as long as the segment is held
        let segment = Bytes::copy_from_slice(&self.out);
        self.out.clear();
        segment
    }

    pub fn segment_len(&self) -> usize {
        self.out.len()
    }

    /// Bytes of audio waiting in the pending PES (written with the next flush).
    pub fn pending_audio_len(&self) -> usize {
        self.pending.data.len()
    }

    /// Length of the access unit prepared by [`prepare_video`](Self::prepare_video).
    pub fn prepared_video_len(&self) -> usize {
        self.video_au.len()
    }

    /// Converts an access unit to Annex-B into the muxer's scratch buffer
    /// without writing anything, so a bad frame fails before the caller
    /// commits to a cut. Follow with [`commit_video`](Self::commit_video).
    pub fn prepare_video(&mut self, frame: &VideoFrame) -> Result<(), MuxError> {
        let cfg = self.video.as_deref().and_then(VideoConfig::avc).ok_or(MuxError::NoVideoConfig)?;
        self.video_au.clear();
        avcc_to_annexb(&frame.data, frame.keyframe, Some(cfg), &mut self.video_au)?;
        Ok(())
    }

    /// Writes the access unit prepared by [`prepare_video`](Self::prepare_video)
    /// as one PES.
    pub fn commit_video(&mut self, frame: &VideoFrame) {
        if frame.keyframe {
            self.flush_audio();
        }
        let dts = ms_to_90k(frame.dts);
        // DTS ≤ PTS always: a negative composition offset is clamped to 0.
        let pts = ms_to_90k(frame.pts()).max(dts);
        let (header, hlen) = pes_header(STREAM_ID_VIDEO, pts, (dts != pts).then_some(dts), self.video_au.len(), true);
        let pcr = if self.tracks.pcr_pid() == PID_VIDEO {
            Some(self.next_pcr(dts))
        } else {
            self.standalone_pcr_if_due(dts);
            None
        };
        let af = FirstPacketAf { pcr, random_access: frame.keyframe, discontinuity: self.take_discontinuity(pcr) };
        write_pes_packets(&mut self.out, PID_VIDEO, &mut self.cc_video, &header[..hlen], &self.video_au, af);
    }

    /// `prepare_video` + `commit_video`.
    pub fn write_video(&mut self, frame: &VideoFrame) -> Result<(), MuxError> {
        self.prepare_video(frame)?;
        self.commit_video(frame);
        Ok(())
    }

    /// Checks that an audio frame can be muxed, without writing anything.
    pub fn check_audio(&self, frame: &AudioFrame) -> Result<(), MuxError> {
        let cfg = self.audio.as_deref().and_then(AudioConfig::aac).ok_or(MuxError::NoAudioConfig)?;
        cfg.adts_header(frame.data.len())?;
        Ok(())
    }

    /// Buffers an AAC frame (with its ADTS header) into the pending audio PES;
    /// the PES is written when it would exceed its bound, on a gap, before a
    /// video keyframe and at the end of the segment.
    pub fn write_audio(&mut self, frame: &AudioFrame) -> Result<(), MuxError> {
        let cfg = self.audio.as_deref().and_then(AudioConfig::aac).ok_or(MuxError::NoAudioConfig)?;
        let adts = cfg.adts_header(frame.data.len())?;
        let dur = i64::try_from(cfg.frame_duration_90k()).unwrap_or(1);
        let pts = ms_to_90k(frame.pts);
        let p = &self.pending;
        if p.frames > 0 {
            let gap = (pts - p.end_90k).abs() > dur / 2;
            let too_long = pts + dur - p.first_pts_90k > self.max_audio_pes_90k;
            let too_big = p.data.len() + adts.len() + frame.data.len() > MAX_AUDIO_PES_BYTES;
            if gap || too_long || too_big {
                self.flush_audio();
            }
        }
        let p = &mut self.pending;
        if p.frames == 0 {
            p.first_pts_90k = pts;
            p.end_90k = pts;
        }
        p.data.put_slice(&adts);
        p.data.put_slice(&frame.data);
        p.frames += 1;
        p.end_90k += dur;
        Ok(())
    }

    /// Writes the pending audio PES, if any.
    pub fn flush_audio(&mut self) {
        if self.pending.frames == 0 {
            return;
        }
        let pts = self.pending.first_pts_90k;
        let (header, hlen) = pes_header(STREAM_ID_AUDIO, pts, None, self.pending.data.len(), true);
        let pcr = if self.tracks.pcr_pid() == PID_AUDIO {
            Some(self.next_pcr(pts))
        } else {
            self.standalone_pcr_if_due(pts);
            None
        };
        let af = FirstPacketAf { pcr, random_access: !self.tracks.video, discontinuity: self.take_discontinuity(pcr) };
        write_pes_packets(&mut self.out, PID_AUDIO, &mut self.cc_audio, &header[..hlen], &self.pending.data, af);
        self.pending.data.clear();
        self.pending.frames = 0;
    }

    /// The PCR for data decoded at `dts` (90 kHz, unwrapped): `PCR_DELAY_MS`
    /// behind it, never going backwards within a timeline.
    fn next_pcr(&mut self, dts: i64) -> i64 {
        let candidate = dts - PCR_DELAY_MS * 90;
        let pcr = self.last_pcr.map_or(candidate, |last| last.max(candidate));
        self.last_pcr = Some(pcr);
        self.pcr_due = false;
        pcr
    }

    fn standalone_pcr_if_due(&mut self, dts: i64) {
        let candidate = dts - PCR_DELAY_MS * 90;
        let due = self.pcr_due || self.last_pcr.is_none_or(|last| candidate - last >= PCR_MAX_INTERVAL_90K);
        if !due {
            return;
        }
        let pcr = self.next_pcr(dts);
        let pid = self.tracks.pcr_pid();
        let cc = if pid == PID_VIDEO { self.cc_video } else { self.cc_audio };
        let disc = self.take_discontinuity(Some(pcr));
        write_pcr_packet(&mut self.out, pid, cc, pcr, disc);
    }

    fn take_discontinuity(&mut self, pcr: Option<i64>) -> bool {
        pcr.is_some() && std::mem::take(&mut self.pcr_discontinuity)
    }
}

/// Adaptation-field content of the first TS packet of a PES.
#[derive(Debug, Clone, Copy, Default)]
struct FirstPacketAf {
    pcr: Option<i64>,
    random_access: bool,
    discontinuity: bool,
}

impl FirstPacketAf {
    /// Adaptation field bytes (length byte included) before stuffing.
    fn len(&self) -> usize {
        if self.pcr.is_some() {
            8
        } else if self.random_access || self.discontinuity {
            2
        } else {
            0
        }
    }

    fn flags(&self) -> u8 {
        (u8::from(self.discontinuity) << 7) | (u8::from(self.random_access) << 6) | (u8::from(self.pcr.is_some()) << 4)
    }
}

fn put_pcr(out: &mut BytesMut, pcr: i64) {
    let base = mask33(pcr);
    out.put_slice(&[
        (base >> 25) as u8,
        (base >> 17) as u8,
        (base >> 9) as u8,
        (base >> 1) as u8,
        (((base & 1) as u8) << 7) | 0x7e, // 6 reserved bits, extension high bit 0
        0,                                // extension low bits
    ]);
}

/// Splits one PES (header + payload) into TS packets. The first packet
/// carries the `af` fields; the last one is padded with adaptation-field
/// stuffing.
fn write_pes_packets(out: &mut BytesMut, pid: u16, cc: &mut u8, header: &[u8], payload: &[u8], af: FirstPacketAf) {
    let total = header.len() + payload.len();
    out.reserve(total.div_ceil(TS_PACKET_SIZE - 4 - 8) * TS_PACKET_SIZE + TS_PACKET_SIZE);
    let mut written = 0;
    let mut first = true;
    while written < total {
        let pkt_af = if first { af } else { FirstPacketAf::default() };
        let fixed = pkt_af.len();
        let space = TS_PACKET_SIZE - 4 - fixed;
        let take = space.min(total - written);
        let af_total = fixed + (space - take);
        out.put_u8(0x47);
        out.put_u8((u8::from(first) << 6) | ((pid >> 8) as u8 & 0x1f));
        out.put_u8(pid as u8);
        out.put_u8(if af_total > 0 { 0x30 } else { 0x10 } | *cc);
        *cc = (*cc + 1) & 0x0f;
        if af_total > 0 {
            out.put_u8((af_total - 1) as u8);
            if af_total > 1 {
                out.put_u8(pkt_af.flags());
                let mut used = 2;
                if let Some(pcr) = pkt_af.pcr {
                    put_pcr(out, pcr);
                    used += 6;
                }
                out.put_bytes(0xff, af_total - used);
            }
        }
        let mut left = take;
        if written < header.len() {
            let n = left.min(header.len() - written);
            out.put_slice(&header[written..written + n]);
            written += n;
            left -= n;
        }
        if left > 0 {
            let start = written - header.len();
            out.put_slice(&payload[start..start + left]);
            written += left;
        }
        first = false;
    }
}

/// An adaptation-field-only packet carrying a PCR. `cc` is the counter of the
/// last payload packet on the PID: packets without payload do not advance it.
fn write_pcr_packet(out: &mut BytesMut, pid: u16, next_cc: u8, pcr: i64, discontinuity: bool) {
    out.put_u8(0x47);
    out.put_u8((pid >> 8) as u8 & 0x1f);
    out.put_u8(pid as u8);
    out.put_u8(0x20 | (next_cc.wrapping_sub(1) & 0x0f));
    out.put_u8(183);
    out.put_u8((u8::from(discontinuity) << 7) | 0x10);
    put_pcr(out, pcr);
    out.put_bytes(0xff, 183 - 7);
}

fn put_timestamp(buf: &mut [u8], prefix: u8, ticks: i64) {
    let ts = mask33(ticks);
    buf[0] = (prefix << 4) | (((ts >> 29) as u8) & 0x0e) | 1;
    buf[1] = (ts >> 22) as u8;
    buf[2] = (((ts >> 14) as u8) & 0xfe) | 1;
    buf[3] = (ts >> 7) as u8;
    buf[4] = (((ts << 1) as u8) & 0xfe) | 1;
}

/// A PES header with PTS (and DTS when given). PES_packet_length is the real
/// length when it fits in 16 bits, else 0 (allowed for video only; audio PES
/// are bounded well below).
fn pes_header(stream_id: u8, pts: i64, dts: Option<i64>, payload_len: usize, aligned: bool) -> ([u8; 19], usize) {
    let mut h = [0u8; 19];
    h[..4].copy_from_slice(&[0, 0, 1, stream_id]);
    let header_data_len: usize = if dts.is_some() { 10 } else { 5 };
    let pes_len = 3 + header_data_len + payload_len;
    let pes_len = if pes_len > 0xffff { 0 } else { pes_len as u16 };
    h[4..6].copy_from_slice(&pes_len.to_be_bytes());
    h[6] = 0x80 | (u8::from(aligned) << 2);
    h[7] = if dts.is_some() { 0xc0 } else { 0x80 };
    h[8] = header_data_len as u8;
    match dts {
        Some(dts) => {
            put_timestamp(&mut h[9..14], 0b0011, pts);
            put_timestamp(&mut h[14..19], 0b0001, dts);
        }
        None => put_timestamp(&mut h[9..14], 0b0010, pts),
    }
    (h, 9 + header_data_len)
}

fn psi_error(e: mpeg2ts::Error) -> MuxError {
    MuxError::Psi(e.to_string())
}

fn encode_packet(pid: u16, payload: TsPayload) -> Result<[u8; TS_PACKET_SIZE], MuxError> {
    let packet = TsPacket {
        header: TsHeader {
            transport_error_indicator: false,
            transport_priority: false,
            pid: Pid::new(pid).map_err(psi_error)?,
            transport_scrambling_control: TransportScramblingControl::NotScrambled,
            continuity_counter: ContinuityCounter::new(),
        },
        adaptation_field: None,
        payload: Some(payload),
    };
    let mut writer = TsPacketWriter::new(Vec::with_capacity(TS_PACKET_SIZE));
    writer.write_ts_packet(&packet).map_err(psi_error)?;
    let bytes = writer.into_stream();
    bytes.try_into().map_err(|v: Vec<u8>| MuxError::Psi(format!("PSI packet of {} bytes", v.len())))
}

fn encode_pat() -> Result<[u8; TS_PACKET_SIZE], MuxError> {
    let pat = Pat {
        transport_stream_id: 1,
        version_number: VersionNumber::new(),
        table: vec![ProgramAssociation { program_num: 1, program_map_pid: Pid::new(PID_PMT).map_err(psi_error)? }],
    };
    encode_packet(PID_PAT, TsPayload::Pat(pat))
}

fn encode_pmt(tracks: Tracks, version: u8) -> Result<[u8; TS_PACKET_SIZE], MuxError> {
    let mut es_info = Vec::new();
    if tracks.video {
        es_info.push(EsInfo {
            stream_type: StreamType::H264,
            elementary_pid: Pid::new(PID_VIDEO).map_err(psi_error)?,
            descriptors: Vec::new(),
        });
    }
    if tracks.audio {
        es_info.push(EsInfo {
            stream_type: StreamType::AdtsAac,
            elementary_pid: Pid::new(PID_AUDIO).map_err(psi_error)?,
            descriptors: Vec::new(),
        });
    }
    let pmt = Pmt {
        program_num: 1,
        pcr_pid: Some(Pid::new(tracks.pcr_pid()).map_err(psi_error)?),
        version_number: VersionNumber::from_u8(version).map_err(psi_error)?,
        program_info: Vec::new(),
        es_info,
    };
    encode_packet(PID_PMT, TsPayload::Pmt(pmt))
}

#[cfg(test)]
mod tests;
