//! One publisher's ingest: the sans-IO `flv::TagDemuxer` turns RTMP media
//! messages into hub events; this feeds them to the hub and logs what the
//! demuxer noticed.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::flv::{Note, TagDemuxer};
use crate::hub::{HubEvent, Publisher, Stream, StreamKey};
use crate::rtmp::MediaKind;

pub(super) struct Ingest {
    publisher: Publisher,
    stream_id: u32,
    query: String,
    demuxer: TagDemuxer,
    events: Vec<HubEvent>,
    warned_no_config: bool,
    demux_errors: u64,
}

impl Ingest {
    pub(super) fn new(publisher: Publisher, stream_id: u32, query: String) -> Self {
        Self {
            publisher,
            stream_id,
            query,
            demuxer: TagDemuxer::new(),
            events: Vec::with_capacity(4),
            warned_no_config: false,
            demux_errors: 0,
        }
    }

    pub(super) fn key(&self) -> &StreamKey {
        self.publisher.stream().key()
    }

    pub(super) fn stream(&self) -> &Arc<Stream> {
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
        let key = self.publisher.stream().key();
        match self.demuxer.push(kind, timestamp, payload, &mut self.events) {
            Ok(None) => {}
            Ok(Some(Note::VideoConfig(v))) => {
                info!(stream = %key, codec = %v.codec_string(), width = v.width, height = v.height, "video config")
            }
            Ok(Some(Note::AudioConfig(a))) => {
                info!(stream = %key, codec = %a.codec_string(), rate = a.sample_rate, channels = a.channels, "audio config")
            }
            Ok(Some(Note::FrameBeforeConfig)) => {
                if !self.warned_no_config {
                    self.warned_no_config = true;
                    warn!(stream = %key, "dropping frames that arrive before their sequence header");
                }
            }
            Ok(Some(Note::Jump { from, to })) => {
                warn!(stream = %key, from, to, "timestamp jump; marking a discontinuity")
            }
            Err(e) => {
                self.demux_errors += 1;
                // the first few, then one in a thousand, so a broken encoder cannot flood the log
                if self.demux_errors <= 3 || self.demux_errors.is_multiple_of(1000) {
                    warn!(stream = %key, count = self.demux_errors, "dropping media message: {e}");
                }
            }
        }
        for ev in self.events.drain(..) {
            self.publisher.send(ev);
        }
    }
}
