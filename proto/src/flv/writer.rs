//! Hub events → an FLV byte stream (HTTP-FLV). Sans-IO: produces `Bytes`
//! pieces; each tag is one small header piece (previous tag size, tag header,
//! codec header) followed by the shared payload, never a copy of it.

use bytes::{BufMut, Bytes};

use super::mux::{file_header, tag_bodies, tag_header, TagBody, TagCodecs, MAX_CODEC_HEADER, TAG_HEADER_LEN};
use crate::media::Event;
use crate::piece::{Inline, Piece, INLINE};

// a tag's PreviousTagSize, tag header and codec header always fit a piece held inline
const _: () = assert!(4 + TAG_HEADER_LEN + MAX_CODEC_HEADER <= INLINE);

#[derive(Debug, Default)]
pub struct FlvWriter {
    header_written: bool,
    stashed_metadata: Option<Bytes>,
    prev_tag_size: u32,
    last_ts: i64,
    codecs: TagCodecs,
}

impl FlvWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once the FLV file header went out (after the first codec config).
    pub fn started(&self) -> bool {
        self.header_written
    }

    /// Appends the bytes for `ev` to `out`. Frames before the first codec
    /// configuration are dropped: a player cannot decode them. A frame's payload moves
    /// into `out` as it is (taken by value: a viewer's copy of the event is not cloned again).
    pub fn push(&mut self, ev: Event, out: &mut Vec<Piece>) {
        match &ev {
            Event::Metadata(m) if !self.header_written => {
                self.stashed_metadata = Some(m.clone());
                return;
            }
            Event::Config(cfg) if !self.header_written => {
                self.header_written = true;
                out.push(Piece::copy_from_slice(&file_header(cfg.audio.is_some(), cfg.video.is_some())));
                if let Some(m) = self.stashed_metadata.take() {
                    self.tag(TagBody::script(m, 0), out);
                }
            }
            Event::Frame(frame) if self.header_written => self.last_ts = frame.dts(),
            _ if !self.header_written => return,
            _ => {}
        }
        for body in tag_bodies(ev, self.last_ts, &mut self.codecs) {
            self.tag(body, out);
        }
    }

    fn tag(&mut self, body: TagBody, out: &mut Vec<Piece>) {
        let codec_header = body.header();
        let data_size = body.len();
        let (ty, ts) = (body.tag_type, body.timestamp);
        // PreviousTagSize, tag header and codec header: at most 4 + 11 + 8 bytes, held inline
        let prev = self.prev_tag_size;
        out.push(Piece::Inline(Inline::build(|w| {
            if prev != 0 {
                w.put_u32(prev);
            }
            w.put_slice(&tag_header(ty, data_size, ts));
            w.put_slice(codec_header);
        })));
        let (_, _, payload) = body.into_parts();
        if !payload.is_empty() {
            out.push(Piece::Shared(payload));
        }
        self.prev_tag_size = (TAG_HEADER_LEN + data_size) as u32;
    }

    /// Ends a batch of tags with the last tag's trailing PreviousTagSize; the next tag goes
    /// out without one in front. A writer of a live body calls it after every batch it hands
    /// the socket, and at the end: flv.js and mpegts.js demux a tag only once the four bytes
    /// after it arrived, so a tag whose size waited for the next tag's header reached the
    /// player a frame late, and the last frame before a pause not at all until media resumed.
    /// Within a batch the size rides in front of the next tag's header (one piece per tag).
    pub fn end_batch(&mut self, out: &mut Vec<Piece>) {
        if self.prev_tag_size != 0 {
            out.push(Piece::copy_from_slice(&self.prev_tag_size.to_be_bytes()));
            self.prev_tag_size = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::media::h264::tests::AVCC_320X240;
    use crate::media::{AacConfig, AudioConfig, AudioFrame, AvcConfig, CodecConfig, Frame, VideoConfig, VideoFrame};

    fn config() -> CodecConfig {
        CodecConfig {
            video: Some(Arc::new(VideoConfig::Avc(AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap()))),
            audio: Some(Arc::new(AudioConfig::Aac(AacConfig::parse(Bytes::from_static(&[0x12, 0x10])).unwrap()))),
            generation: 1,
            ..Default::default()
        }
    }

    /// Walks an FLV byte stream, returning (type, timestamp, body) per tag and checking every PreviousTagSize.
    fn parse(flv: &[u8]) -> Vec<(u8, u32, Vec<u8>)> {
        assert_eq!(&flv[..3], b"FLV");
        let mut pos = 9;
        let mut tags = Vec::new();
        let mut prev = 0u32;
        while pos + 4 <= flv.len() {
            let p = u32::from_be_bytes(flv[pos..pos + 4].try_into().unwrap());
            assert_eq!(p, prev, "PreviousTagSize at {pos}");
            pos += 4;
            if pos == flv.len() {
                break;
            }
            let h = crate::flv::file::TagHeader::parse(flv[pos..pos + 11].try_into().unwrap());
            let size = h.size;
            tags.push((h.tag_type, h.timestamp, flv[pos + 11..pos + 11 + size].to_vec()));
            pos += 11 + size;
            prev = (11 + size) as u32;
        }
        assert_eq!(pos, flv.len());
        tags
    }

    #[test]
    fn writes_header_metadata_sequence_headers_then_frames() {
        let mut w = FlvWriter::new();
        let mut out = Vec::new();
        let key = VideoFrame { dts: 1000, cts: 80, keyframe: true, data: Bytes::from_static(&[0, 0, 0, 1, 0x65]) };
        w.push(Event::Frame(Frame::Video(key.clone())), &mut out);
        assert!(out.is_empty(), "frames before the config are dropped");
        w.push(Event::Metadata(Bytes::from_static(b"\x02\x00\x0aonMetaData\x05")), &mut out);
        w.push(Event::Config(config()), &mut out);
        w.push(Event::Frame(Frame::Video(key.clone())), &mut out);
        w.push(Event::Frame(Frame::Audio(AudioFrame { pts: 1010, data: Bytes::from_static(&[0x21, 0]) })), &mut out);
        w.end_batch(&mut out);
        // the frame payload goes out as the very same buffer
        assert!(out.iter().any(|b| b.as_ptr() == key.data.as_ptr()));
        let flv: Vec<u8> = out.concat();
        assert_eq!(flv[4], 5, "audio and video flags");
        let tags = parse(&flv);
        let types: Vec<u8> = tags.iter().map(|t| t.0).collect();
        assert_eq!(types, vec![18, 9, 8, 9, 8]);
        assert_eq!(&tags[1].2[..5], &[0x17, 0, 0, 0, 0]);
        assert_eq!(&tags[1].2[5..], AVCC_320X240);
        assert_eq!(tags[3], (9, 1000, vec![0x17, 1, 0, 0, 80, 0, 0, 0, 1, 0x65]));
        assert_eq!(tags[4], (8, 1010, vec![0xaf, 1, 0x21, 0]));
    }

    #[test]
    fn every_batch_ends_on_a_whole_tag() {
        let mut w = FlvWriter::new();
        let (mut all, mut out) = (Vec::new(), Vec::new());
        w.push(Event::Config(config()), &mut out);
        w.end_batch(&mut out);
        for ts in [0, 33, 66] {
            let data = Bytes::from_static(&[0, 0, 0, 1, 0x41]);
            let frame = VideoFrame { dts: ts, cts: 0, keyframe: ts == 0, data };
            w.push(Event::Frame(Frame::Video(frame)), &mut out);
            w.push(Event::Frame(Frame::Audio(AudioFrame { pts: ts + 5, data: Bytes::from_static(&[0x21]) })), &mut out);
            w.end_batch(&mut out);
            // what went out so far is a whole FLV: the last tag's size is not held back
            all.extend(out.drain(..).flat_map(|p| p.to_vec()));
            let tags = parse(&all);
            assert_eq!(tags.last().map(|t| (t.0, t.1)), Some((8, ts as u32 + 5)));
        }
        w.end_batch(&mut out);
        assert!(out.is_empty(), "nothing is pending after a batch");
        assert_eq!(parse(&all).len(), 2 + 6);
    }

    #[test]
    fn video_only_header_flags() {
        let mut w = FlvWriter::new();
        let mut out = Vec::new();
        let cfg = CodecConfig { audio: None, ..config() };
        w.push(Event::Config(cfg), &mut out);
        assert_eq!(out[0][4], 1);
    }
}
