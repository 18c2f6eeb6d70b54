//! Events for the hub's unit tests.

use std::sync::Arc;

use bytes::Bytes;

use super::HubEvent;
use crate::media::{AudioFrame, CodecConfig, Frame, VideoFrame};

/// avcC from x264, 320x240 High profile (the same as livegate-proto's test fixture).
const AVCC_320X240: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10,
    0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb,
    0xe3, 0xcb, 0x22, 0xc0,
];

/// A 100-byte video frame.
pub(super) fn video(dts: i64, key: bool) -> HubEvent {
    HubEvent::Frame(Frame::Video(VideoFrame { dts, cts: 0, keyframe: key, data: Bytes::from(vec![7u8; 100]) }))
}

/// A 1-byte audio frame.
pub(super) fn audio(pts: i64) -> HubEvent {
    HubEvent::Frame(Frame::Audio(AudioFrame { pts, data: Bytes::from_static(&[1]) }))
}

/// A video-only codec config.
pub(super) fn config() -> CodecConfig {
    let avc = crate::media::AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
    CodecConfig {
        video: Some(Arc::new(crate::media::VideoConfig::Avc(avc))),
        audio: None,
        generation: 1,
        ..Default::default()
    }
}
