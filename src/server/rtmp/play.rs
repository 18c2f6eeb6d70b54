//! RTMP play: admission of a viewer (auth, the stream's viewer limit) and the mapping of
//! hub events to RTMP messages, through the same `flv::tag_bodies` as HTTP-FLV.

use tokio::io::{AsyncRead, AsyncWrite};
use tracing::info;

use super::conn::{Connection, Role};
use crate::auth::Action;
use crate::flv::{tag_bodies, TagCodecs, TagType};
use crate::hub::{HubEvent, Protocol, StreamKey};
use crate::rtmp::{MediaKind, RequestId};

impl<S: AsyncRead + AsyncWrite + Send + 'static> Connection<S> {
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
            return self.refuse(req, NOT_FOUND, "invalid app or stream name", "bad_name");
        };
        // `?track=N`: track N of a multitrack publish
        let key = crate::server::http::with_track(key, query);
        if !self.authorize(req, Action::Play, &key, query, "NetStream.Play.Unauthorized").await {
            return;
        }
        let ctx = self.ctx.clone();
        let Some(stream) = ctx.hub.get(&key) else {
            return self.refuse(req, NOT_FOUND, &format!("stream {key} is not live"), "not_found");
        };
        if let Some(why) = self.codec_refusal(&stream.codec(), &key) {
            return self.refuse(req, "NetStream.Play.Failed", &why, "codec_not_announced");
        }
        let max = ctx.settings.get().limits.max_viewers_per_stream;
        let Some(_guard) = stream.admit_viewer(Protocol::RtmpPlay, max) else {
            let why = format!("stream {key} has reached its limit of {max} viewers");
            return self.refuse(req, "NetStream.Play.Failed", &why, "viewer_limit");
        };
        info!(stream = %key, "RTMP viewer joined");
        self.session.accept(req);
        let sub = stream.subscribe();
        self.role = Role::Playing {
            sub,
            stream_id,
            last_ts: 0,
            codecs: TagCodecs::with_video_metadata(),
            query: query.to_string(),
            _guard,
        };
    }

    /// Why this client cannot be sent the stream's codecs, if it cannot: a client that
    /// announced a `fourCcList` (Enhanced RTMP) without a codec the stream sends in the
    /// enhanced form. A client that announced nothing gets the stream (ffmpeg 9 plays
    /// Enhanced RTMP but announces nothing), unless `[rtmp] only_announced_codecs` is set.
    /// H.264, AAC and MP3 go out as legacy FLV, which needs no announcement.
    fn codec_refusal(&self, codec: &crate::media::CodecConfig, key: &StreamKey) -> Option<String> {
        use crate::media::{AudioCodec, VideoCodec};
        let video = codec.video.as_ref().map(|v| v.codec()).filter(|c| *c != VideoCodec::Avc).map(|c| c.fourcc());
        let audio = codec.audio.as_ref().map(|a| a.codec()).filter(|c| !matches!(c, AudioCodec::Aac | AudioCodec::Mp3));
        for fourcc in video.into_iter().chain(audio.map(AudioCodec::fourcc)) {
            let announced = self.caps.announced(fourcc).unwrap_or(!self.ctx.config.only_announced_codecs);
            if !announced {
                let name = String::from_utf8_lossy(fourcc);
                let list = self.caps.codecs.as_ref().map_or("nothing".to_string(), |l| l.join(", "));
                return Some(format!(
                    "stream {key} is {name}, which this client did not announce in connect's fourCcList (it announced {list})"
                ));
            }
        }
        None
    }

    pub(super) fn send_play_events(&mut self, events: &mut Vec<HubEvent>) {
        let Role::Playing { stream_id, last_ts, codecs, .. } = &mut self.role else { return };
        let sid = *stream_id;
        for ev in events.drain(..) {
            if let HubEvent::Frame(f) = &ev {
                *last_ts = f.dts();
            }
            if ev == HubEvent::EndOfStream {
                self.session.send_end_of_stream(sid);
                self.close_after_flush = true;
                continue;
            }
            // the same event → tag body mapping as HTTP-FLV (sequence headers share the
            // configuration record: nothing is built per viewer)
            for body in tag_bodies(&ev, *last_ts, codecs) {
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
