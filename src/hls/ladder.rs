//! The HLS side of a multitrack publish: its other video and audio tracks are streams of
//! their own (`NAME~N`, `NAME~aN`, see `StreamKey::track`); each video track has a
//! video-only playlist and each audio track an audio-only one (the publish's own video
//! and audio too, as `NAME~0` and `NAME~a0`, see `task`); `NAME.m3u8` lists the video
//! playlists as variants and the audio ones as their `EXT-X-MEDIA` group, and each
//! rendition's Low-Latency playlist reports the others.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use livegate_proto::hls::{AudioRendition, Variant};

use super::store::Blocked;
use super::{HlsStore, PlaylistReply};
use crate::hub::{lock, Hub, StreamKey, Track};

/// How often a request for a ladder that has no segment yet looks again.
const LADDER_POLL: Duration = Duration::from_millis(50);

/// The group id of a ladder's audio renditions.
const AUDIO_GROUP: &str = "audio";

/// A rendition of a ladder: its track, the key of its playlist and the hub stream it
/// comes from (the publish itself for its own video and audio, track 0).
struct Rendition {
    track: Track,
    playlist: StreamKey,
    source: StreamKey,
}

/// The renditions of the multitrack publish on `base`: its video tracks, track 0 first,
/// then its audio tracks. None when `base` is not live or has no other track.
fn renditions(hub: &Hub, base: &StreamKey) -> Option<Vec<Rendition>> {
    let stream = hub.get(base)?;
    let (video, audio) = (stream.tracks(), stream.audio_tracks());
    if video.is_empty() && audio.is_empty() {
        return None;
    }
    let own = |track: Track, playlist: StreamKey| Rendition { track, playlist, source: base.clone() };
    let other = |track: Track, key: StreamKey| Rendition { track, playlist: key.clone(), source: key };
    let mut out = vec![own(Track::Video(0), base.track(0))];
    out.extend(video.into_iter().map(|t| other(Track::Video(t), base.track(t))));
    out.push(own(Track::Audio(0), base.audio_track(0)));
    out.extend(audio.into_iter().map(|t| other(Track::Audio(t), base.audio_track(t))));
    Some(out)
}

/// A track's media playlist, relative to the multivariant playlist.
fn uri(base: &StreamKey, track: Track) -> String {
    match track {
        Track::Video(t) => format!("{}~{t}.m3u8", base.name),
        Track::Audio(t) => format!("{}~a{t}.m3u8", base.name),
    }
}

impl HlsStore {
    /// What `NAME.m3u8` answers: the multivariant playlist of a multitrack publish (unless
    /// `variant`: the request named one, `NAME~N.m3u8` or `NAME~aN.m3u8`), else the key's
    /// media playlist, with rendition reports when it is a rendition of a ladder.
    pub async fn playlist_or_ladder(&self, hub: &Hub, key: &StreamKey, variant: bool, query: &str) -> PlaylistReply {
        if !variant {
            // a multitrack publish in its first seconds, whose renditions have no segment
            // yet: wait for its ladder rather than answer the muxed playlist of track 0,
            // which a player would keep (hls.js never loads the multivariant playlist again).
            // Only while a ladder can still come: HLS on, a video track (the variants), and
            // within 3 target durations of the publish start, so later reloads never wait.
            let policy = self.policy(key);
            let window = Duration::from_millis(policy.target_duration_ms.saturating_mul(3));
            let until = hub
                .get(key)
                .filter(|s| policy.enabled && s.codec().video.is_some())
                .and_then(|s| window.checked_sub(s.uptime()))
                .map(|left| Instant::now() + left);
            // a waiting request counts against max_blocked_requests like a blocking reload
            let mut blocked = None;
            loop {
                if let Some(text) = self.multivariant(hub, key) {
                    return PlaylistReply::Text { text, blocking: false };
                }
                let waiting = until.is_some_and(|u| Instant::now() < u);
                if !waiting || renditions(hub, key).is_none() {
                    break;
                }
                if blocked.is_none() {
                    let Some(entered) = Blocked::enter(self, key) else { return PlaylistReply::Unavailable };
                    blocked = Some(entered);
                }
                tokio::time::sleep(LADDER_POLL).await;
            }
            drop(blocked);
        }
        match self.playlist(key, query).await {
            PlaylistReply::Text { text, blocking } => {
                PlaylistReply::Text { text: self.with_rendition_reports(hub, key, text), blocking }
            }
            other => other,
        }
    }

    /// The multivariant playlist of a multitrack publish: one video-only variant per
    /// video track that has segments, highest bandwidth first, and an `EXT-X-MEDIA` group
    /// of one audio-only rendition per audio track that has segments, named and tagged
    /// with a language when the publisher's metadata gave them. Track N's playlists are
    /// `NAME~N.m3u8` and `NAME~aN.m3u8` (track 0 is the publish's own video and audio).
    /// None until a variant has a segment.
    fn multivariant(&self, hub: &Hub, key: &StreamKey) -> Option<Bytes> {
        let tracks = renditions(hub, key)?;
        let labels = hub.get(key).map(|s| s.audio_labels()).unwrap_or_default();
        let mut audio_group: Vec<AudioRendition> = Vec::new();
        let mut audio_codecs: Vec<String> = Vec::new();
        // what the largest audio rendition adds to a variant (bits per second)
        let (mut audio_peak, mut audio_average) = (0, 0);
        for r in &tracks {
            let Track::Audio(t) = r.track else { continue };
            let Some(audio) = hub.get(&r.source).and_then(|s| s.codec().audio.clone()) else { continue };
            let Some((peak, average)) = self.bandwidth(&r.playlist) else { continue };
            audio_peak = audio_peak.max(peak);
            audio_average = audio_average.max(average);
            let label = labels.iter().find(|l| l.track == t);
            let mut name =
                label.and_then(|l| l.name.clone().or_else(|| l.language.clone())).unwrap_or(format!("Audio {t}"));
            // names are unique within a group
            if audio_group.iter().any(|a| a.name == name) {
                name = format!("{name} ({t})");
            }
            if !audio_codecs.contains(&audio.codec_string()) {
                audio_codecs.push(audio.codec_string());
            }
            audio_group.push(AudioRendition {
                group: AUDIO_GROUP.into(),
                name,
                language: label.and_then(|l| l.language.clone()),
                uri: Some(uri(key, r.track)),
                default: audio_group.is_empty(),
                channels: Some(audio.channels()),
            });
        }
        let mut variants = Vec::new();
        for r in &tracks {
            let Track::Video(_) = r.track else { continue };
            let Some(stream) = hub.get(&r.source) else { continue };
            let codec = stream.codec();
            let Some(video) = codec.video.as_ref() else { continue };
            let Some((peak, average)) = self.bandwidth(&r.playlist) else { continue };
            let codecs = std::iter::once(video.codec_string()).chain(audio_codecs.iter().cloned()).collect::<Vec<_>>();
            let uptime = stream.uptime().as_secs_f64();
            let frames = stream.stats.video_frames_in.load(Ordering::Relaxed) as f64;
            let frame_rate = (uptime > 1.0).then(|| (frames / uptime * 1000.0).round() / 1000.0);
            variants.push(Variant {
                uri: uri(key, r.track),
                bandwidth: peak + audio_peak,
                average_bandwidth: Some(average + audio_average),
                codecs: codecs.join(","),
                resolution: Some((video.width(), video.height())).filter(|(w, h)| *w > 0 && *h > 0),
                frame_rate,
                audio: (!audio_group.is_empty()).then(|| AUDIO_GROUP.to_string()),
            });
        }
        if variants.is_empty() {
            return None;
        }
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        Some(livegate_proto::hls::render_multivariant(&variants, &audio_group))
    }

    /// A Low-Latency media playlist of a ladder's rendition, with an
    /// `EXT-X-RENDITION-REPORT` for each other rendition (its last part), as LL-HLS asks of
    /// multivariant presentations (RFC 8216bis §4.4.5.4). Added when served: the other
    /// renditions move on their own.
    fn with_rendition_reports(&self, hub: &Hub, key: &StreamKey, playlist: Bytes) -> Bytes {
        let Some((base, own)) = key.split_track() else { return playlist };
        let Some(tracks) = renditions(hub, &base) else { return playlist };
        if playlist.ends_with(b"#EXT-X-ENDLIST\n") || !playlist.windows(12).any(|w| w == b"#EXT-X-PART:") {
            return playlist;
        }
        let mut out = String::from_utf8_lossy(&playlist).into_owned();
        for r in tracks.into_iter().filter(|r| r.track != own) {
            if let Some((msn, part)) = self.last_part(&r.playlist) {
                out.push_str(&format!(
                    "#EXT-X-RENDITION-REPORT:URI=\"{}\",LAST-MSN={msn},LAST-PART={part}\n",
                    uri(&base, r.track)
                ));
            }
        }
        Bytes::from(out)
    }

    /// The durations (ms) of a key's listed segments, oldest first.
    pub fn segment_durations(&self, key: &StreamKey) -> Vec<u64> {
        let Some(state) = self.state(key) else { return Vec::new() };
        let st = lock(&state);
        let d = st.playlist.segments().map(|s| s.duration_ms).collect();
        d
    }

    /// The last part a key's playlist lists (its media sequence number and index): what an
    /// `EXT-X-RENDITION-REPORT` for it tells.
    fn last_part(&self, key: &StreamKey) -> Option<(u64, u32)> {
        let state = self.state(key)?;
        let st = lock(&state);
        let last = st.playlist.parts().next_back().map(|p| (p.sequence, p.index));
        last
    }

    /// Peak and average bits per second of a key's listed segments (BANDWIDTH and
    /// AVERAGE-BANDWIDTH of its variant), once it has one.
    fn bandwidth(&self, key: &StreamKey) -> Option<(u64, u64)> {
        let state = self.state(key)?;
        let st = lock(&state);
        let (mut peak, mut bytes, mut ms) = (0u64, 0u64, 0u64);
        for s in st.playlist.segments() {
            let len = st.segments.get(&s.sequence).map_or(0, |b| b.len() as u64);
            if let Some(rate) = (len * 8000).checked_div(s.duration_ms) {
                peak = peak.max(rate);
            }
            bytes += len;
            ms += s.duration_ms;
        }
        (ms > 0).then(|| (peak, bytes * 8000 / ms))
    }
}
