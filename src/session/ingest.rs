//! A publisher's ingest, whatever brings its media (an RTMP connection, a pull from an
//! origin): the sans-IO `flv::TagDemuxer` turns FLV tag bodies (RTMP media messages) into
//! hub events; this feeds them to the hub, starts the track streams of a multitrack
//! publish, and logs what the demuxer noticed.

use std::sync::Arc;

use bytes::Bytes;
use tracing::{info, warn};

use crate::flv::{FlvError, Note, TagDemuxer, TrackDemuxed};
use crate::hub::{HubEvent, Publisher, Stream, StreamKey, Track};
use crate::metrics::Metrics;
use crate::rtmp::MediaKind;

pub struct Ingest {
    publisher: Publisher,
    query: String,
    demuxer: TagDemuxer,
    events: Vec<HubEvent>,
    notes: Vec<Note>,
    /// A multitrack message demuxed once, for the publish's own demuxer and each track's
    /// (emptied after each message: it holds the message's payloads).
    items: Vec<TrackDemuxed>,
    warned_no_config: bool,
    demux_errors: u64,
    /// Unsupported codecs already logged (a few per stream, then no more lines).
    unsupported_logged: Vec<String>,
    metrics: Arc<Metrics>,
    /// The other video tracks of a multitrack publish, each its own hub stream
    /// (`NAME~TRACK`, see `StreamKey::track`) with its own demuxer.
    tracks: Vec<TrackIngest>,
    /// Starts the hub stream of another track.
    start_track: StartTrack,
}

/// Starts the hub stream of a multitrack publish's other track (None: refused, e.g. at the
/// stream limit).
pub(super) type StartTrack = Box<dyn Fn(&StreamKey) -> Option<Publisher> + Send>;

/// Track streams of each kind one multitrack publish may start (the variants and audio
/// renditions of its HLS ladder).
pub const MAX_TRACKS: usize = 7;

struct TrackIngest {
    track: Track,
    demuxer: TagDemuxer,
    publisher: Publisher,
}

impl Ingest {
    pub(super) fn new(publisher: Publisher, query: String, metrics: Arc<Metrics>, start_track: StartTrack) -> Self {
        Self {
            publisher,
            query,
            demuxer: TagDemuxer::new(),
            events: Vec::with_capacity(4),
            notes: Vec::new(),
            items: Vec::new(),
            warned_no_config: false,
            demux_errors: 0,
            unsupported_logged: Vec::new(),
            metrics,
            tracks: Vec::new(),
            start_track,
        }
    }

    pub fn key(&self) -> &StreamKey {
        self.publisher.stream().key()
    }

    pub fn stream(&self) -> &Arc<Stream> {
        self.publisher.stream()
    }

    /// The publish URL's query string.
    pub fn query(&self) -> &str {
        &self.query
    }

    pub fn count_bytes(&self, n: usize) {
        self.publisher.stream().count_bytes_in(n as u64);
    }

    pub fn metadata(&mut self, payload: Bytes) {
        // the names and languages of a multitrack publish's audio tracks, if it gives any
        self.publisher.stream().set_audio_labels(crate::flv::audio_track_labels(&payload));
        self.publisher.send(HubEvent::Metadata(payload));
    }
}

/// Whether another track of `kind` with id `track` gets a stream of its own, besides
/// `tracks`.
fn can_start(tracks: &[TrackIngest], kind: MediaKind, track: u8) -> bool {
    {
        let same =
            |t: &Track| matches!((kind, t), (MediaKind::Video, Track::Video(_)) | (MediaKind::Audio, Track::Audio(_)));
        let wanted = match kind {
            MediaKind::Video => Track::Video(track),
            MediaKind::Audio => Track::Audio(track),
        };
        tracks.iter().filter(|t| same(&t.track)).count() < MAX_TRACKS && !tracks.iter().any(|t| t.track == wanted)
    }
}

impl Ingest {
    pub fn media(&mut self, kind: MediaKind, timestamp: u32, payload: Bytes) {
        // the stream (not its key) is held: no allocation per message
        let stream = Arc::clone(self.publisher.stream());
        let key = stream.key();
        // A multitrack publish's message is demuxed once; the publish's own demuxer and each
        // track stream's take their tracks from it (the first notes the tracks it does not
        // serve, which start track streams below).
        let shared = !self.tracks.is_empty() || crate::flv::is_multitrack(kind, &payload);
        let result = if shared {
            let r = self.demuxer.demux(kind, timestamp, payload, &mut self.items);
            if r.is_ok() {
                self.demuxer.serve(kind, &self.items, &mut self.events, &mut self.notes);
            }
            r
        } else {
            self.demuxer.push(kind, timestamp, payload, &mut self.events, &mut self.notes)
        };
        for note in self.notes.drain(..) {
            match note {
                Note::VideoConfig(v) => {
                    info!(stream = %key, codec = %v.codec_string(), width = v.width(), height = v.height(), "video config")
                }
                Note::AudioConfig(a) => info!(
                    stream = %key,
                    codec = %a.codec_string(),
                    rate = a.sample_rate(),
                    channels = a.channels(),
                    "audio config"
                ),
                Note::FrameBeforeConfig => {
                    self.metrics.media_dropped("before_config");
                    if !self.warned_no_config {
                        self.warned_no_config = true;
                        warn!(stream = %key, "dropping frames that arrive before their sequence header");
                    }
                }
                Note::CodecMismatch { kind, configured, frame } => {
                    self.metrics.media_dropped("codec_mismatch");
                    self.demux_errors += 1;
                    if self.demux_errors <= 3 || self.demux_errors.is_multiple_of(1000) {
                        warn!(stream = %key, ?kind, configured, frame, count = self.demux_errors,
                            "dropping a frame whose codec is not its track's (no new sequence start)");
                    }
                }
                Note::OtherTrack { kind, track } if can_start(&self.tracks, kind, track) => {
                    let (track, track_key, demuxer) = match kind {
                        MediaKind::Video => {
                            (Track::Video(track), key.track(track), TagDemuxer::for_track(track, &self.demuxer))
                        }
                        MediaKind::Audio => {
                            (Track::Audio(track), key.audio_track(track), TagDemuxer::for_audio_track(track))
                        }
                    };
                    match (self.start_track)(&track_key) {
                        Some(publisher) => {
                            info!(stream = %key, ?track, track_stream = %track_key, "multitrack publish: track served as its own stream (an HLS rendition)");
                            self.publisher.stream().add_track(track);
                            self.tracks.push(TrackIngest { track, demuxer, publisher });
                        }
                        None => {
                            self.metrics.media_dropped("other_track");
                            warn!(stream = %key, ?track, "multitrack publish: the track's stream could not be started; dropped");
                        }
                    }
                }
                Note::OtherTrack { kind, track } => {
                    self.metrics.media_dropped("other_track");
                    warn!(stream = %key, ?kind, track, "multitrack publish: more than {MAX_TRACKS} tracks of a kind; this one is dropped")
                }
                Note::Jump { from, to } => {
                    warn!(stream = %key, from, to, "timestamp jump; marking a discontinuity")
                }
            }
        }
        let demuxed = result.is_ok();
        match result {
            Ok(()) => {}
            Err(e @ (FlvError::UnsupportedCodec { .. } | FlvError::UnsupportedFourCc { .. })) => {
                self.metrics.media_dropped("unsupported_codec");
                let what = e.to_string();
                if self.unsupported_logged.len() < 8 && !self.unsupported_logged.contains(&what) {
                    warn!(stream = %key, "dropping media: {what} (logged once per codec; counted in livegate_media_dropped_total)");
                    self.unsupported_logged.push(what);
                }
            }
            Err(e) => {
                self.metrics.media_dropped("malformed");
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
        // every track stream takes its track (and a video track the first audio track) from
        // the demuxed message
        if shared && demuxed {
            for t in &mut self.tracks {
                t.demuxer.serve(kind, &self.items, &mut self.events, &mut self.notes);
                // (what a track stream's demuxer notes is the publish's business, noted above)
                self.notes.clear();
                for ev in self.events.drain(..) {
                    if let HubEvent::Frame(f) = &ev {
                        t.publisher.stream().count_bytes_in(f.payload_len() as u64);
                    }
                    t.publisher.send(ev);
                }
            }
        }
        self.items.clear();
    }
}
