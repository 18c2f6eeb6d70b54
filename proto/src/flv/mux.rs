//! `media` → FLV bytes: the file header, tag headers and the small tag-body
//! headers that precede a shared payload. Callers write header and payload as
//! separate buffers (vectored), so payloads are never copied per viewer.

use bytes::Bytes;

use crate::media::{AudioCodec, AudioConfig, CodecConfig, Event, Frame, VideoCodec, VideoConfig, VideoFrame};

pub const TAG_HEADER_LEN: usize = 11;
pub const PREV_TAG_SIZE_LEN: usize = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagType {
    Audio = 8,
    Video = 9,
    Script = 18,
}

/// The 9-byte FLV header followed by PreviousTagSize0.
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// An 11-byte tag header. `timestamp` is the low 32 bits of the ms timeline
/// (FLV stores 24 bits plus an 8-bit extension, so it wraps like RTMP).
pub fn tag_header(tag_type: TagType, data_size: usize, timestamp: i64) -> [u8; TAG_HEADER_LEN] {
    let ts = timestamp as u32;
    let size = (data_size as u32).min(0x00ff_ffff);
    [
        tag_type as u8,
        (size >> 16) as u8,
        (size >> 8) as u8,
        size as u8,
        (ts >> 16) as u8,
        (ts >> 8) as u8,
        ts as u8,
        (ts >> 24) as u8,
        0,
        0,
        0,
    ]
}

/// The codecs of the tracks a viewer is being sent, which decide the tag-body headers:
/// legacy FLV for H.264, AAC and MP3 (every player reads it), Enhanced RTMP (FourCC
/// headers) for the others. Updated from each `Event::Config`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TagCodecs {
    pub video: Option<VideoCodec>,
    pub audio: Option<AudioCodec>,
    /// Send the Enhanced RTMP video Metadata (colour/HDR `colorInfo`) after the sequence
    /// start. RTMP play does (relays and ffmpeg read it); HTTP-FLV does not: mpegts.js
    /// 1.8 stops with a fatal FormatError on that packet type.
    pub video_metadata: bool,
}

impl TagCodecs {
    /// For a viewer that is sent the video Metadata (RTMP play).
    pub fn with_video_metadata() -> Self {
        Self { video_metadata: true, ..Self::default() }
    }

    fn update(&mut self, cfg: &CodecConfig) {
        self.video = cfg.video.as_ref().map(|v| v.codec());
        self.audio = cfg.audio.as_ref().map(|a| a.codec());
    }
}

/// Longest codec header before a payload: the enhanced video header with a FourCC and a
/// composition time.
pub const MAX_CODEC_HEADER: usize = 8;
const EX_VIDEO: u8 = 0x80;
const EX_AUDIO: u8 = 0x90;

fn ex_header(first: u8, fourcc: &[u8; 4]) -> [u8; 5] {
    [first, fourcc[0], fourcc[1], fourcc[2], fourcc[3]]
}

/// The video tag-body header for a coded frame of `codec` (H.264 when unknown).
pub fn video_tag_header(frame: &VideoFrame, codec: Option<VideoCodec>) -> ([u8; MAX_CODEC_HEADER], usize) {
    let cts = frame.cts as u32;
    let cts = [(cts >> 16) as u8, (cts >> 8) as u8, cts as u8];
    let mut h = [0u8; MAX_CODEC_HEADER];
    let frame_type: u8 = if frame.keyframe { 1 } else { 2 };
    let len = match codec.unwrap_or(VideoCodec::Avc) {
        VideoCodec::Avc => {
            h[..5].copy_from_slice(&[(frame_type << 4) | 7, 1, cts[0], cts[1], cts[2]]);
            5
        }
        c => {
            // CodedFrames; only HEVC (and H.264) carry a composition time in it
            h[..5].copy_from_slice(&ex_header(EX_VIDEO | (frame_type << 4) | 1, c.fourcc()));
            if c == VideoCodec::Hevc {
                h[5..8].copy_from_slice(&cts);
                8
            } else {
                5
            }
        }
    };
    (h, len)
}

/// The audio tag-body header for a frame of `codec` (AAC when unknown).
pub fn audio_tag_header(codec: Option<AudioCodec>) -> ([u8; MAX_CODEC_HEADER], usize) {
    let mut h = [0u8; MAX_CODEC_HEADER];
    let len = match codec.unwrap_or(AudioCodec::Aac) {
        // AAC always signals 44 kHz, 16-bit, stereo; the real values are in the AudioSpecificConfig
        AudioCodec::Aac => {
            h[..2].copy_from_slice(&[0xaf, 1]);
            2
        }
        // legacy MP3: the MPEG audio frame header carries the real parameters
        AudioCodec::Mp3 => {
            h[0] = 0x2f;
            1
        }
        c => {
            h[..5].copy_from_slice(&ex_header(EX_AUDIO | 1, c.fourcc()));
            5
        }
    };
    (h, len)
}

/// The video sequence header: legacy for H.264, an Enhanced RTMP SequenceStart otherwise.
fn video_config_header(cfg: &VideoConfig) -> ([u8; MAX_CODEC_HEADER], usize) {
    let mut h = [0u8; MAX_CODEC_HEADER];
    match cfg.codec() {
        VideoCodec::Avc => h[..5].copy_from_slice(&[0x17, 0, 0, 0, 0]),
        c => h[..5].copy_from_slice(&ex_header(EX_VIDEO | 0x10, c.fourcc())),
    }
    (h, 5)
}

/// The audio sequence header, or none (MP3 has no sequence header).
fn audio_config_header(cfg: &AudioConfig) -> Option<([u8; MAX_CODEC_HEADER], usize)> {
    let mut h = [0u8; MAX_CODEC_HEADER];
    match cfg.codec() {
        AudioCodec::Aac => {
            h[..2].copy_from_slice(&[0xaf, 0]);
            Some((h, 2))
        }
        AudioCodec::Mp3 => None,
        c => {
            h[..5].copy_from_slice(&ex_header(EX_AUDIO, c.fourcc()));
            Some((h, 5))
        }
    }
}

/// The full video tag body of the sequence header.
pub fn video_config_body(cfg: &VideoConfig) -> Vec<u8> {
    let (h, len) = video_config_header(cfg);
    [&h[..len], &cfg.record()[..]].concat()
}

/// The full audio tag body of the sequence header (empty for MP3, which has none).
pub fn audio_config_body(cfg: &AudioConfig) -> Vec<u8> {
    match audio_config_header(cfg) {
        Some((h, len)) => [&h[..len], &cfg.record()[..]].concat(),
        None => Vec::new(),
    }
}

/// One FLV tag body as a small codec header and a shared payload: what HTTP-FLV writes
/// after its tag header and RTMP play sends as one message. Built from a
/// [`media::Event`](crate::media::Event) by [`tag_bodies`] without copying or allocating:
/// sequence-header bodies are the codec header and the configuration record the stream
/// already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagBody {
    pub tag_type: TagType,
    /// Milliseconds on the stream's 64-bit timeline.
    pub timestamp: i64,
    header: [u8; MAX_CODEC_HEADER],
    header_len: u8,
    pub payload: bytes::Bytes,
}

impl TagBody {
    fn new(tag_type: TagType, timestamp: i64, (header, len): ([u8; MAX_CODEC_HEADER], usize), payload: Bytes) -> Self {
        Self { tag_type, timestamp, header, header_len: len as u8, payload }
    }

    /// The script-data (`onMetaData`) tag body of `metadata`.
    pub fn script(metadata: bytes::Bytes, timestamp: i64) -> Self {
        Self::new(TagType::Script, timestamp, ([0; MAX_CODEC_HEADER], 0), metadata)
    }

    /// The codec header that precedes the payload in the tag body.
    pub fn header(&self) -> &[u8] {
        &self.header[..usize::from(self.header_len)]
    }

    /// The codec header (as an array and its length) and the payload, taken apart.
    pub fn into_parts(self) -> ([u8; MAX_CODEC_HEADER], usize, bytes::Bytes) {
        (self.header, usize::from(self.header_len), self.payload)
    }

    /// Length of the whole tag body.
    pub fn len(&self) -> usize {
        usize::from(self.header_len) + self.payload.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The tag bodies of one event, in order: the sequence headers of a codec configuration
/// (stamped `config_ts`, the time of the last frame) and its Enhanced RTMP video metadata,
/// a frame, or metadata; nothing for the other events. `codecs` follows the
/// configurations. The one mapping from events to FLV, shared by HTTP-FLV and RTMP play;
/// the event is taken by value, so a frame's payload moves into its body.
pub fn tag_bodies(ev: Event, config_ts: i64, codecs: &mut TagCodecs) -> impl Iterator<Item = TagBody> {
    let (a, b, c) = match ev {
        Event::Metadata(m) => (Some(TagBody::script(m, config_ts)), None, None),
        Event::Config(cfg) => {
            codecs.update(&cfg);
            let video = cfg.video.as_ref();
            let meta = cfg.video_metadata.as_ref().filter(|_| codecs.video_metadata);
            let meta = video.filter(|v| v.codec() != VideoCodec::Avc).and(meta).map(|m| {
                let fourcc = video.map_or(b"avc1", |v| v.codec().fourcc());
                // frame type 5 (command) with packet type Metadata, as encoders send it
                let mut h = [0u8; MAX_CODEC_HEADER];
                h[..5].copy_from_slice(&ex_header(EX_VIDEO | 0x50 | 4, fourcc));
                TagBody::new(TagType::Video, config_ts, (h, 5), m.clone())
            });
            (
                video.map(|v| TagBody::new(TagType::Video, config_ts, video_config_header(v), v.record().clone())),
                meta,
                cfg.audio.as_ref().and_then(|a| {
                    audio_config_header(a).map(|h| TagBody::new(TagType::Audio, config_ts, h, a.record()))
                }),
            )
        }
        // the payload moves into the body: no reference count is taken per viewer here
        Event::Frame(Frame::Video(v)) => {
            let header = video_tag_header(&v, codecs.video);
            (Some(TagBody::new(TagType::Video, v.dts, header, v.data)), None, None)
        }
        Event::Frame(Frame::Audio(a)) => {
            (Some(TagBody::new(TagType::Audio, a.pts, audio_tag_header(codecs.audio), a.data)), None, None)
        }
        Event::Discontinuity | Event::EndOfStream => (None, None, None),
    };
    a.into_iter().chain(b).chain(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::{demux_audio, demux_video, Demuxed};
    use crate::media::{AacConfig, AudioFrame, AvcConfig};

    #[test]
    fn tag_bodies_equal_the_full_bodies_and_share_the_payload() {
        use crate::media::h264::tests::AVCC_320X240;
        use std::sync::Arc;
        let avc = Arc::new(VideoConfig::Avc(AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap()));
        let aac = Arc::new(AudioConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap()));
        let cfg =
            CodecConfig { video: Some(avc.clone()), audio: Some(aac.clone()), generation: 1, ..Default::default() };
        let mut codecs = TagCodecs::default();
        let bodies: Vec<TagBody> = tag_bodies(Event::Config(cfg), 7, &mut codecs).collect();
        assert_eq!(bodies.len(), 2);
        let whole = |b: &TagBody| [b.header(), &b.payload[..]].concat();
        assert_eq!((bodies[0].tag_type, bodies[0].timestamp), (TagType::Video, 7));
        assert_eq!(whole(&bodies[0]), video_config_body(&avc));
        assert_eq!(bodies[0].payload.as_ptr(), avc.record().as_ptr(), "the record is shared, not copied");
        assert_eq!(whole(&bodies[1]), audio_config_body(&aac));
        let frame = VideoFrame { dts: 40, cts: 80, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 1, 0x65]) };
        let b: Vec<_> = tag_bodies(Event::Frame(Frame::Video(frame.clone())), 0, &mut codecs).collect();
        assert_eq!((b[0].tag_type, b[0].timestamp, b[0].len()), (TagType::Video, 40, 10));
        assert_eq!(b[0].header(), &[0x17, 1, 0, 0, 80]);
        assert_eq!(tag_bodies(Event::EndOfStream, 0, &mut codecs).count(), 0);
    }

    #[test]
    fn tag_header_extended_timestamp_and_size() {
        let h = tag_header(TagType::Video, 0x01_0203, 0x1234_5678);
        assert_eq!(h, [9, 0x01, 0x02, 0x03, 0x34, 0x56, 0x78, 0x12, 0, 0, 0]);
        // timestamps past 2^32 ms wrap like the RTMP clock
        let h = tag_header(TagType::Audio, 1, (1i64 << 32) + 5);
        assert_eq!(&h[4..8], &[0, 0, 5, 0]);
    }

    #[test]
    fn video_header_round_trips_negative_cts() {
        let frame = VideoFrame { dts: 10, cts: -40, keyframe: false, data: Bytes::from_static(&[0, 0, 0, 1, 1]) };
        for codec in [VideoCodec::Avc, VideoCodec::Hevc] {
            let (h, len) = video_tag_header(&frame, Some(codec));
            let mut out = Vec::new();
            demux_video(10, Bytes::from([&h[..len], &frame.data[..]].concat()), &mut out).unwrap();
            assert_eq!(out, vec![(0, Demuxed::Video(codec, frame.clone()))]);
        }
    }

    #[test]
    fn enhanced_outputs_demux_back_to_what_the_encoder_sent() {
        // every fixture through demux → tag_bodies → demux: the same configs and frames
        for file in [
            &include_bytes!("../../../fixtures/ertmp/hevc_opus.flv")[..],
            include_bytes!("../../../fixtures/ertmp/av1_aac.flv"),
            include_bytes!("../../../fixtures/ertmp/vp9_flac.flv"),
            include_bytes!("../../../fixtures/ertmp/h264_eac3.flv"),
            include_bytes!("../../../fixtures/ertmp/h264_mp3.flv"),
        ] {
            let tags = crate::flv::file::read_tags(&Bytes::copy_from_slice(file)).unwrap();
            let (mut d, mut events, mut notes) = (crate::flv::TagDemuxer::new(), Vec::new(), Vec::new());
            for t in tags.into_iter().filter(|t| t.tag_type != 18) {
                let kind =
                    if t.tag_type == 8 { crate::media::MediaKind::Audio } else { crate::media::MediaKind::Video };
                d.push(kind, t.timestamp, t.body, &mut events, &mut notes).unwrap();
            }
            let (mut again, mut codecs) = (crate::flv::TagDemuxer::new(), TagCodecs::with_video_metadata());
            let mut replayed = Vec::new();
            for ev in &events {
                for body in tag_bodies(ev.clone(), 0, &mut codecs) {
                    let kind = match body.tag_type {
                        TagType::Audio => crate::media::MediaKind::Audio,
                        TagType::Video => crate::media::MediaKind::Video,
                        TagType::Script => continue,
                    };
                    let ts = body.timestamp as u32;
                    let whole = Bytes::from([body.header(), &body.payload[..]].concat());
                    again.push(kind, ts, whole, &mut replayed, &mut notes).unwrap();
                }
            }
            let frames = |e: &[Event]| e.iter().filter(|e| matches!(e, Event::Frame(_))).cloned().collect::<Vec<_>>();
            assert_eq!(frames(&replayed), frames(&events));
            let cfg =
                |e: &[Event]| e.iter().find_map(|e| if let Event::Config(c) = e { Some(c.clone()) } else { None });
            let (a, b) = (cfg(&events).unwrap(), cfg(&replayed).unwrap());
            assert_eq!((a.video, a.audio, a.video_metadata), (b.video, b.audio, b.video_metadata));
        }
        let _ = (demux_audio, AudioFrame { pts: 0, data: Bytes::new() });
    }

    #[test]
    fn file_header_flags() {
        assert_eq!(file_header(true, true)[4], 5);
        assert_eq!(file_header(false, true)[4], 1);
        assert_eq!(file_header(true, false)[4], 4);
    }
}
