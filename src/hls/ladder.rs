//! The HLS side of a multitrack publish: its video tracks are streams of their own
//! (`NAME~N`, see `StreamKey::track`), each with a media playlist; `NAME.m3u8` lists them
//! as a multivariant playlist and each variant's Low-Latency playlist reports the others.

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{HlsStore, PlaylistReply};
use crate::hub::{lock, Hub, StreamKey};

/// The tracks of the multitrack publish on `base`, track 0 (the publish itself) first,
/// with their keys; None when `base` is not live or has no other track.
fn tracks(hub: &Hub, base: &StreamKey) -> Option<Vec<(u8, StreamKey)>> {
    let others = hub.get(base)?.tracks();
    if others.is_empty() {
        return None;
    }
    Some(std::iter::once((0, base.clone())).chain(others.into_iter().map(|t| (t, base.track(t)))).collect())
}

impl HlsStore {
    /// What `NAME.m3u8` answers: the multivariant playlist of a multitrack publish (unless
    /// `variant`: the request named one, `NAME~N.m3u8`), else the key's media playlist,
    /// with rendition reports when it is a variant of a ladder.
    pub async fn playlist_or_ladder(&self, hub: &Hub, key: &StreamKey, variant: bool, query: &str) -> PlaylistReply {
        if !variant {
            if let Some(text) = self.multivariant(hub, key) {
                return PlaylistReply::Text { text, blocking: false };
            }
        }
        match self.playlist(key, query).await {
            PlaylistReply::Text { text, blocking } => {
                PlaylistReply::Text { text: self.with_rendition_reports(hub, key, text), blocking }
            }
            other => other,
        }
    }

    /// The multivariant playlist of a multitrack publish: one variant per video track that
    /// has segments, highest bandwidth first. Each variant's media playlist is
    /// `NAME~TRACK.m3u8` (`NAME~0` is the publish's own playlist). None until a variant has
    /// a segment.
    fn multivariant(&self, hub: &Hub, key: &StreamKey) -> Option<Bytes> {
        let tracks = tracks(hub, key)?;
        let mut variants = Vec::new();
        for (track, track_key) in tracks {
            let Some(stream) = hub.get(&track_key) else { continue };
            let codec = stream.codec();
            let Some(video) = codec.video.as_ref() else { continue };
            let Some((peak, average)) = self.bandwidth(&track_key) else { continue };
            let codecs = match codec.audio.as_ref() {
                Some(a) => format!("{},{}", video.codec_string(), a.codec_string()),
                None => video.codec_string(),
            };
            let uptime = stream.uptime().as_secs_f64();
            let frames = stream.stats.video_frames_in.load(Ordering::Relaxed) as f64;
            let frame_rate = (uptime > 1.0).then(|| (frames / uptime * 1000.0).round() / 1000.0);
            variants.push(livegate_proto::hls::Variant {
                uri: format!("{}~{track}.m3u8", key.name),
                bandwidth: peak,
                average_bandwidth: Some(average),
                codecs,
                resolution: Some((video.width(), video.height())).filter(|(w, h)| *w > 0 && *h > 0),
                frame_rate,
            });
        }
        if variants.is_empty() {
            return None;
        }
        variants.sort_by_key(|v| std::cmp::Reverse(v.bandwidth));
        Some(livegate_proto::hls::render_multivariant(&variants))
    }

    /// A Low-Latency media playlist of a ladder's variant, with an
    /// `EXT-X-RENDITION-REPORT` for each other variant (its last part), as LL-HLS asks of
    /// multivariant presentations (RFC 8216bis §4.4.5.4). Added when served: the other
    /// variants move on their own.
    fn with_rendition_reports(&self, hub: &Hub, key: &StreamKey, playlist: Bytes) -> Bytes {
        let (base, own) = key.split_track().unwrap_or_else(|| (key.clone(), 0));
        let Some(tracks) = tracks(hub, &base) else { return playlist };
        if playlist.ends_with(b"#EXT-X-ENDLIST\n") || !playlist.windows(12).any(|w| w == b"#EXT-X-PART:") {
            return playlist;
        }
        let mut out = String::from_utf8_lossy(&playlist).into_owned();
        for (t, sibling) in tracks.into_iter().filter(|(t, _)| *t != own) {
            if let Some((msn, part)) = self.last_part(&sibling) {
                out.push_str(&format!(
                    "#EXT-X-RENDITION-REPORT:URI=\"{}~{t}.m3u8\",LAST-MSN={msn},LAST-PART={part}\n",
                    base.name
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
