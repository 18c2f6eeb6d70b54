//! RTMP play: admission of a viewer (auth, the stream's viewer limit), its play control
//! (pause/resume at the live edge, audio/video on and off, seek answered as live) and the
//! mapping of hub events to RTMP messages, through the same `flv::tag_bodies` as HTTP-FLV.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::conn::{Connection, PlayState, Role};
use crate::flv::{tag_bodies, TagCodecs, TagType};
use crate::hub::{HubEvent, StreamKey};
use crate::rtmp::{MediaKind, PlayControl, RequestId};
use crate::session::{admit_viewer, Output, Refusal, Viewer};

/// Play-control commands (pause, receiveAudio, receiveVideo, seek) an RTMP viewer may send
/// a second; more are ignored.
const MAX_CONTROLS_PER_SECOND: u32 = 8;

impl<S: crate::net::writer::Halves + Send + 'static> Connection<S> {
    pub(super) async fn on_play(&mut self, req: RequestId, stream_id: u32, app: &str, name: &str, query: &str) {
        const NOT_FOUND: &str = "NetStream.Play.StreamNotFound";
        if !matches!(self.role, Role::Idle) {
            return self.refuse(
                req,
                "NetStream.Play.Failed",
                "this connection already publishes or plays",
                "bad_request",
            );
        }
        let Some(key) = StreamKey::parse(app, name) else {
            return self.refuse_with(req, NOT_FOUND, None, &Refusal::BadName);
        };
        // `?track=N`: track N of a multitrack publish
        let key = crate::server::http::with_track(key, query);
        let ctx = self.ctx.clone();
        let Viewer { stream, guard } =
            match admit_viewer(&ctx.svc, &key, Output::RtmpPlay, self.proto, self.peer, query).await {
                Ok(v) => v,
                Err(refusal) => {
                    let code = match refusal {
                        Refusal::Denied(_) => "NetStream.Play.Unauthorized",
                        Refusal::ViewerLimit { .. } => "NetStream.Play.Failed",
                        _ => NOT_FOUND,
                    };
                    return self.refuse_with(req, code, Some(&key), &refusal);
                }
            };
        if let Some(why) = self.codec_refusal(&stream.codec(), &key) {
            return self.refuse(req, "NetStream.Play.Failed", &why, "codec_not_announced");
        }
        info!(stream = %key, "RTMP viewer joined");
        self.session.accept(req);
        let sub = stream.subscribe();
        self.role = Role::Playing {
            sub,
            stream_id,
            last_ts: 0,
            codecs: TagCodecs::with_video_metadata(),
            query: query.to_string(),
            control: PlayState::default(),
            guard,
        };
    }

    /// `pause`, `receiveAudio`, `receiveVideo` and `seek` of the viewer's play. At most
    /// `MAX_CONTROLS_PER_SECOND` are followed (a resume replays the GOP cache: a viewer
    /// toggling pause cannot make that unbounded work); the rest are ignored.
    pub(super) fn on_play_control(&mut self, sid: u32, control: PlayControl) {
        let Role::Playing { sub, stream_id, codecs, control: state, .. } = &mut self.role else { return };
        if *stream_id != sid {
            return;
        }
        let now = Instant::now();
        if now.duration_since(state.window.0) >= Duration::from_secs(1) {
            state.window = (now, 0);
        }
        state.window.1 += 1;
        if state.window.1 > MAX_CONTROLS_PER_SECOND {
            if state.window.1 == MAX_CONTROLS_PER_SECOND + 1 {
                self.ctx.svc.metrics.limit_hit("rtmp_play_control");
                warn!(stream = %sub.stream().key(), peer = %self.peer, "RTMP viewer sends more than {MAX_CONTROLS_PER_SECOND} play controls a second; ignoring the rest of this second's");
            }
            return;
        }
        match control {
            PlayControl::Pause(true) if !state.paused => {
                state.paused = true;
                debug!(stream = %sub.stream().key(), "RTMP viewer paused");
                self.session.send_pause_notify(sid, true);
            }
            PlayControl::Pause(false) if state.paused => {
                // resume at the live edge: a new subscription starts with the metadata,
                // the sequence headers and the latest GOP
                state.paused = false;
                state.wait_keyframe = false;
                *sub = sub.stream().subscribe();
                *codecs = TagCodecs::with_video_metadata();
                debug!(stream = %sub.stream().key(), "RTMP viewer resumed");
                self.session.send_pause_notify(sid, false);
            }
            // a repeated pause or resume changes nothing but is answered
            PlayControl::Pause(paused) => self.session.send_pause_notify(sid, paused),
            PlayControl::ReceiveAudio(on) => state.audio = on,
            PlayControl::ReceiveVideo(on) => {
                state.wait_keyframe = on && !state.video;
                state.video = on;
            }
            PlayControl::Seek(ms) => {
                debug!(stream = %sub.stream().key(), ms, "RTMP viewer asked to seek a live stream");
                self.session.send_status(
                    sid,
                    "status",
                    "NetStream.Seek.Notify",
                    "live stream: seeking is not possible; playing on at the live edge",
                );
            }
        }
    }

    /// Why this client cannot be sent the stream's codecs, if it cannot: a client that
    /// announced a `fourCcList` (Enhanced RTMP) without a codec the stream sends in the
    /// enhanced form. A client that announced nothing gets the stream (ffmpeg 9 plays
    /// Enhanced RTMP but announces nothing), unless `[rtmp] only_announced_codecs` is set.
    /// H.264, AAC and MP3 go out as legacy FLV, which needs no announcement (see
    /// `session::unannounced_codec`).
    fn codec_refusal(&self, codec: &crate::media::CodecConfig, key: &StreamKey) -> Option<String> {
        let unlisted_ok = !self.ctx.config.only_announced_codecs;
        let fourcc = crate::session::unannounced_codec(codec, Some(&self.caps), unlisted_ok)?;
        let name = String::from_utf8_lossy(fourcc);
        let list = self.caps.codecs.as_ref().map_or("nothing".to_string(), |l| l.join(", "));
        Some(format!(
            "stream {key} is {name}, which this client did not announce in connect's fourCcList (it announced {list})"
        ))
    }

    pub(super) fn send_play_events(&mut self, events: &mut Vec<HubEvent>) {
        let Role::Playing { stream_id, last_ts, codecs, control, .. } = &mut self.role else { return };
        let sid = *stream_id;
        for ev in events.drain(..) {
            if let HubEvent::Frame(f) = &ev {
                // receiveAudio / receiveVideo false: that track is left out; video turned
                // back on resumes at a keyframe
                if f.is_video() {
                    if !control.video || (control.wait_keyframe && !f.is_keyframe()) {
                        continue;
                    }
                    control.wait_keyframe = false;
                } else if !control.audio {
                    continue;
                }
                *last_ts = f.dts();
            }
            if ev == HubEvent::EndOfStream {
                self.session.send_end_of_stream(sid);
                self.close_after_flush = true;
                continue;
            }
            // the same event → tag body mapping as HTTP-FLV (sequence headers share the
            // configuration record: nothing is built per viewer)
            for body in tag_bodies(ev, *last_ts, codecs) {
                let kind = match body.tag_type {
                    TagType::Script => {
                        self.session.send_metadata(sid, body.payload);
                        continue;
                    }
                    TagType::Video => MediaKind::Video,
                    TagType::Audio => MediaKind::Audio,
                };
                let ts = body.timestamp as u32;
                let (header, len, payload) = body.into_parts();
                self.session.send_media_parts(sid, kind, ts, &header[..len], payload);
            }
        }
    }

    pub(super) fn end_play(&mut self) {
        if let Role::Playing { stream_id, .. } = self.role {
            self.session.send_end_of_stream(stream_id);
        }
        self.close_after_flush = true;
    }
}
