//! One publisher's ingest: unwraps timestamps (once, here), demuxes FLV tag
//! bodies and feeds the hub. Codec configuration is announced to the hub just
//! before the first frame that follows a change, so viewers see the complete
//! set of tracks (an encoder sends the video and audio sequence headers as two
//! separate messages).

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::flv::{demux_audio, demux_video, Demuxed};
use crate::hub::{HubEvent, Publisher, StreamKey};
use crate::media::{CodecConfig, Frame, Unwrapper};
use crate::rtmp::MediaKind;

/// A forward or backward jump of the timeline larger than this is a discontinuity.
const MAX_TIMESTAMP_JUMP_MS: i64 = 10_000;

pub(super) struct Ingest {
    publisher: Publisher,
    stream_id: u32,
    query: String,
    clock: Unwrapper,
    config: CodecConfig,
    config_dirty: bool,
    last_dts: Option<i64>,
    warned_no_config: bool,
    demux_errors: u64,
}

impl Ingest {
    pub(super) fn new(publisher: Publisher, stream_id: u32, query: String) -> Self {
        Self {
            publisher,
            stream_id,
            query,
            clock: Unwrapper::new(),
            config: CodecConfig::default(),
            config_dirty: false,
            last_dts: None,
            warned_no_config: false,
            demux_errors: 0,
        }
    }

    pub(super) fn key(&self) -> &StreamKey {
        self.publisher.stream().key()
    }

    pub(super) fn stream(&self) -> &std::sync::Arc<crate::hub::Stream> {
        self.publisher.stream()
    }

    /// The RTMP message stream the publish runs on.
    pub(super) fn stream_id(&self) -> u32 {
        self.stream_id
    }

    /// The publish URL's query string.
    pub(super) fn query(&self) -> &str {
        &self.query
    }

    pub(super) fn count_bytes(&self, n: usize) {
        self.publisher.stream().count_bytes_in(n as u64);
    }

    pub(super) fn metadata(&mut self, payload: Bytes) {
        self.publisher.send(HubEvent::Metadata(payload));
    }

    pub(super) fn media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        let ts = self.clock.unwrap(timestamp);
        let demuxed = match kind {
            MediaKind::Video => demux_video(ts, payload),
            MediaKind::Audio => demux_audio(ts, payload),
        };
        match demuxed {
            Ok(Demuxed::VideoConfig(v)) => {
                if self.config.video.as_deref() != Some(&v) {
                    info!(stream = %self.key(), codec = %v.codec_string(), width = v.width, height = v.height, "video config");
                    self.config.video = Some(Arc::new(v));
                    self.config_dirty = true;
                }
            }
            Ok(Demuxed::AudioConfig(a)) => {
                if self.config.audio.as_deref() != Some(&a) {
                    info!(stream = %self.key(), codec = %a.codec_string(), rate = a.sample_rate, channels = a.channels, "audio config");
                    self.config.audio = Some(Arc::new(a));
                    self.config_dirty = true;
                }
            }
            Ok(Demuxed::Frame(frame)) => self.frame(frame),
            Ok(Demuxed::Skip) => {}
            Err(e) => {
                self.demux_errors += 1;
                // the first few, then one in a thousand, so a broken encoder cannot flood the log
                if self.demux_errors <= 3 || self.demux_errors.is_multiple_of(1000) {
                    warn!(stream = %self.key(), count = self.demux_errors, "dropping media message: {e}");
                }
            }
        }
    }

    fn frame(&mut self, frame: Frame) {
        let has_config = match &frame {
            Frame::Video(_) => self.config.video.is_some(),
            Frame::Audio(_) => self.config.audio.is_some(),
        };
        if !has_config {
            if !self.warned_no_config {
                self.warned_no_config = true;
                warn!(stream = %self.key(), "dropping frames that arrive before their sequence header");
            }
            return;
        }
        if self.config_dirty {
            self.config_dirty = false;
            self.config.generation += 1;
            self.publisher.send(HubEvent::Config(self.config.clone()));
        }
        let dts = frame.dts();
        if let Some(last) = self.last_dts {
            if (dts - last).abs() > MAX_TIMESTAMP_JUMP_MS {
                warn!(stream = %self.key(), from = last, to = dts, "timestamp jump; marking a discontinuity");
                self.publisher.send(HubEvent::Discontinuity);
            }
        }
        self.last_dts = Some(dts);
        self.publisher.send(HubEvent::Frame(frame));
    }
}
