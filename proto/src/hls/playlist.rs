//! The live media playlist of one stream: a sliding window of segments,
//! rendered with `m3u8-rs`. It survives republishes (the caller keeps it and
//! starts the next segmenter at [`Playlist::next_sequence`]), so
//! `EXT-X-MEDIA-SEQUENCE` never decreases or resets. Sans-IO: it does not
//! store segments; [`Playlist::push`] returns the sequences that left the
//! window so the store can expire them (after a grace period of its choice).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use m3u8_rs::{ExtTag, MediaPlaylist, MediaSegment, WRITE_OPT_FLOAT_PRECISION};

use super::segmenter::Segment;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistConfig {
    /// Minimum number of segments in the window.
    pub window_segments: usize,
    /// Minimum media duration in the window; at least 3 × target is always kept.
    pub min_window_ms: u64,
}

impl Default for PlaylistConfig {
    fn default() -> Self {
        Self { window_segments: 6, min_window_ms: 0 }
    }
}

/// What the playlist needs to know about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentInfo {
    pub sequence: u64,
    pub duration_ms: u64,
    pub discontinuity: bool,
    /// Unix ms of the first frame (`EXT-X-PROGRAM-DATE-TIME`).
    pub wall_clock_ms: i64,
    /// Starts with a keyframe; `EXT-X-INDEPENDENT-SEGMENTS` is written only
    /// while every segment in the window is.
    pub independent: bool,
    /// fMP4: the initialization segment the segment needs (`EXT-X-MAP`), by the store's
    /// number for it; `None` for MPEG-TS.
    pub map: Option<u32>,
}

impl From<&Segment> for SegmentInfo {
    fn from(s: &Segment) -> Self {
        Self {
            sequence: s.sequence,
            duration_ms: s.duration_ms,
            discontinuity: s.discontinuity,
            wall_clock_ms: s.wall_clock_ms,
            independent: s.independent,
            map: None,
        }
    }
}

/// What the playlist needs to know about a part (Low-Latency HLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartInfo {
    /// The media sequence number of its segment.
    pub sequence: u64,
    pub index: u32,
    pub duration_ms: u64,
    pub independent: bool,
    /// Of its segment (the first part brings them): `EXT-X-DISCONTINUITY`, `EXT-X-MAP`
    /// and the wall clock of its first frame.
    pub discontinuity: bool,
    pub map: Option<u32>,
    pub wall_clock_ms: i64,
}

#[derive(Debug, Clone)]
pub struct Playlist {
    config: PlaylistConfig,
    target_secs: u64,
    segments: VecDeque<SegmentInfo>,
    /// Parts of the newest segments (those within 3 target durations of the live edge) and
    /// of the segment being written, oldest first.
    parts: VecDeque<PartInfo>,
    window_ms: u64,
    /// Discontinuities that left the window.
    discontinuity_sequence: u64,
    next_sequence: u64,
    started: bool,
}

impl Playlist {
    pub fn new(config: PlaylistConfig, target_duration_secs: u64) -> Self {
        Self {
            config,
            target_secs: target_duration_secs.max(1),
            segments: VecDeque::new(),
            parts: VecDeque::new(),
            window_ms: 0,
            discontinuity_sequence: 0,
            next_sequence: 0,
            started: false,
        }
    }

    /// Sets `EXT-X-TARGETDURATION`. Only before the first segment: the target
    /// is fixed for the life of the stream, so later calls are ignored.
    pub fn set_target_duration(&mut self, secs: u64) {
        if self.started {
            if secs != self.target_secs {
                tracing::warn!(secs, current = self.target_secs, "hls: target duration is fixed; change ignored");
            }
            return;
        }
        self.target_secs = secs.max(1);
    }

    pub fn target_duration_secs(&self) -> u64 {
        self.target_secs
    }

    /// Starts the media sequence at `sequence` (before the first segment; ignored after).
    /// Low-Latency playlists start at 1: hls.js 1.7 does not block on a playlist whose
    /// newest segment is number 0.
    pub fn start_at(&mut self, sequence: u64) {
        if !self.started {
            self.next_sequence = sequence;
        }
    }

    /// Sequence number for the next segment (continue here after a republish).
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// Appends a segment; returns the sequences that left the window. A
    /// segment whose sequence does not increase is refused (logged, ignored).
    pub fn push(&mut self, seg: &SegmentInfo) -> Vec<u64> {
        if self.started && seg.sequence < self.next_sequence {
            tracing::warn!(
                seq = seg.sequence,
                next = self.next_sequence,
                "hls: segment sequence went backwards; ignored"
            );
            return Vec::new();
        }
        self.started = true;
        self.next_sequence = seg.sequence + 1;
        self.window_ms += self.counted_ms(seg);
        let mut seg = *seg;
        // EXT-X-PROGRAM-DATE-TIME of consecutive segments differs by exactly the previous
        // EXTINF (wall-clock arrival times jitter); a discontinuity re-anchors it
        if let Some(prev) = self.segments.back().filter(|_| !seg.discontinuity) {
            seg.wall_clock_ms = prev.wall_clock_ms + prev.duration_ms as i64;
        }
        self.segments.push_back(seg);
        self.prune_parts();
        let min_ms = self.config.min_window_ms.max(3 * 1000 * self.target_secs);
        let min_segments = self.config.window_segments.max(1);
        let mut removed = Vec::new();
        while self.segments.len() > min_segments {
            let front = self.segments[0];
            if self.window_ms - self.counted_ms(&front) < min_ms {
                break;
            }
            removed.extend(self.pop_oldest());
        }
        removed
    }

    /// Appends a part of the segment being written (its segment is pushed after its last
    /// part). A part of an older segment, or one that does not follow the last, is ignored.
    pub fn push_part(&mut self, part: &PartInfo) {
        let follows = match self.parts.back() {
            Some(last) if last.sequence == part.sequence => part.index == last.index + 1,
            _ => part.index == 0,
        };
        if part.sequence < self.next_sequence || !follows {
            tracing::warn!(seq = part.sequence, index = part.index, "hls: part out of order; ignored");
            return;
        }
        self.parts.push_back(*part);
    }

    /// Keeps the parts of the segment being written and of the complete segments that end
    /// within 3 target durations of the live edge (RFC 8216bis §6.2.2).
    fn prune_parts(&mut self) {
        let mut span = 0;
        let mut oldest_kept = self.next_sequence;
        for s in self.segments.iter().rev() {
            if span >= 3 * 1000 * self.target_secs {
                break;
            }
            span += s.duration_ms;
            oldest_kept = s.sequence;
        }
        while self.parts.front().is_some_and(|p| p.sequence < oldest_kept) {
            self.parts.pop_front();
        }
    }

    /// Parts listed, oldest first (see [`Self::push_part`]).
    pub fn parts(&self) -> impl DoubleEndedIterator<Item = &PartInfo> {
        self.parts.iter()
    }

    /// Segments listed, oldest first.
    pub fn segments(&self) -> impl DoubleEndedIterator<Item = &SegmentInfo> + Clone {
        self.segments.iter()
    }

    /// `EXT-X-MEDIA-SEQUENCE`.
    pub fn media_sequence(&self) -> u64 {
        self.segments.front().map_or(self.next_sequence, |s| s.sequence)
    }

    /// `EXT-X-DISCONTINUITY-SEQUENCE`.
    pub fn discontinuity_sequence(&self) -> u64 {
        self.discontinuity_sequence
    }

    /// The duration a segment counts for in the window: at least half the target, so
    /// that tiny segments (keyframes after timestamp jumps, cuts at the byte bound) cannot
    /// make the window list thousands of them. The window therefore lists at most
    /// `window_segments + 2 × max(min_window_ms, 3 × target) / target + 1` segments.
    fn counted_ms(&self, seg: &SegmentInfo) -> u64 {
        seg.duration_ms.max(self.target_secs * 500)
    }

    /// Removes the oldest listed segment (e.g. when the store must free memory early);
    /// returns its sequence.
    pub fn pop_oldest(&mut self) -> Option<u64> {
        let front = self.segments.pop_front()?;
        self.window_ms -= self.counted_ms(&front);
        if front.discontinuity {
            self.discontinuity_sequence += 1;
        }
        Some(front.sequence)
    }

    /// A segment was ever pushed.
    pub fn started(&self) -> bool {
        self.started
    }

    /// Segments currently listed.
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// Sequences currently listed.
    pub fn sequences(&self) -> impl Iterator<Item = u64> + '_ {
        self.segments.iter().map(|s| s.sequence)
    }

    /// Renders the playlist; `ended` adds `EXT-X-ENDLIST`. `uri(seq)` names segments,
    /// `map_uri(id)` initialization segments: `EXT-X-MAP` goes before the first segment and
    /// wherever the segment's map differs from the one before (a new codec configuration,
    /// a republish), and the playlist then declares version 6.
    ///
    /// EXTINF is written with three decimals through m3u8-rs's process-wide
    /// `WRITE_OPT_FLOAT_PRECISION` (set to 3 once, the first time any playlist renders;
    /// m3u8-rs has no per-call option). PROGRAM-DATE-TIME goes in as a raw tag: m3u8-rs
    /// wants a `chrono` value and we format it ourselves.
    pub fn render(&self, ended: bool, uri: impl Fn(u64) -> String, map_uri: impl Fn(u32) -> String) -> Bytes {
        configure_float_precision();
        let media_sequence = self.segments.front().map_or(self.next_sequence, |s| s.sequence);
        let has_maps = self.segments.iter().any(|s| s.map.is_some());
        let mut previous_map = None;
        let playlist = MediaPlaylist {
            version: Some(if has_maps { 6 } else { 3 }),
            target_duration: self.target_secs,
            media_sequence,
            discontinuity_sequence: self.discontinuity_sequence,
            end_list: ended,
            independent_segments: self.segments.iter().all(|s| s.independent),
            segments: self
                .segments
                .iter()
                .map(|s| MediaSegment {
                    uri: uri(s.sequence),
                    duration: s.duration_ms as f32 / 1000.0,
                    discontinuity: s.discontinuity,
                    map: match s.map {
                        Some(id) if previous_map.replace(id) != Some(id) => {
                            Some(m3u8_rs::Map { uri: map_uri(id), ..m3u8_rs::Map::default() })
                        }
                        _ => None,
                    },
                    unknown_tags: vec![ExtTag {
                        tag: "X-PROGRAM-DATE-TIME".into(),
                        rest: Some(format_iso8601_ms(s.wall_clock_ms)),
                    }],
                    ..MediaSegment::default()
                })
                .collect(),
            ..MediaPlaylist::default()
        };
        let mut out = Vec::with_capacity(128 + 96 * self.segments.len());
        playlist.write_to(&mut out).expect("writing to a Vec cannot fail");
        if media_sequence == 0 {
            // m3u8-rs omits a zero MEDIA-SEQUENCE (the default); write it anyway,
            // right after TARGETDURATION, so every playlist states it.
            let text = String::from_utf8(out).expect("m3u8-rs writes UTF-8");
            let tag = format!("#EXT-X-TARGETDURATION:{}\n", self.target_secs);
            let text = text.replacen(&tag, &format!("{tag}#EXT-X-MEDIA-SEQUENCE:0\n"), 1);
            return Bytes::from(text);
        }
        Bytes::from(out)
    }
}

/// Unix milliseconds as ISO 8601 UTC with milliseconds: `2023-11-14T22:13:20.000Z`.
pub fn format_iso8601_ms(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let ms_of_day = unix_ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    let (h, min, s, ms) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60, ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{ms:03}Z")
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day)
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// m3u8-rs writes floats with a process-wide precision: 3 decimals, set once.
fn configure_float_precision() {
    static PRECISION: std::sync::Once = std::sync::Once::new();
    PRECISION.call_once(|| WRITE_OPT_FLOAT_PRECISION.store(3, Ordering::Relaxed));
}

/// One variant of a multivariant playlist: a video track of a multitrack publish with the
/// audio muxed in (each variant's fMP4 carries the publish's first audio track).
#[derive(Debug, Clone, PartialEq)]
pub struct Variant {
    /// The media playlist's URI, relative to the multivariant playlist.
    pub uri: String,
    /// Peak bits per second over the listed segments (RFC 8216 §4.3.4.2).
    pub bandwidth: u64,
    pub average_bandwidth: Option<u64>,
    /// RFC 6381 codecs of the video and audio tracks.
    pub codecs: String,
    pub resolution: Option<(u32, u32)>,
    pub frame_rate: Option<f64>,
    /// The `GROUP-ID` of the audio renditions it plays with.
    pub audio: Option<String>,
}

/// An audio rendition (`EXT-X-MEDIA:TYPE=AUDIO`) of a multivariant playlist.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioRendition {
    pub group: String,
    /// Unique within the group.
    pub name: String,
    pub language: Option<String>,
    /// Its audio-only media playlist; None: the audio is in each variant's segments.
    pub uri: Option<String>,
    pub default: bool,
    pub channels: Option<u8>,
}

/// The multivariant playlist listing `variants` (highest bandwidth first, as players
/// start from the first listed) and the audio `renditions` their groups name.
pub fn render_multivariant(variants: &[Variant], renditions: &[AudioRendition]) -> Bytes {
    configure_float_precision();
    let playlist = m3u8_rs::MasterPlaylist {
        version: Some(6),
        independent_segments: true,
        alternatives: renditions
            .iter()
            .map(|r| m3u8_rs::AlternativeMedia {
                media_type: m3u8_rs::AlternativeMediaType::Audio,
                uri: r.uri.clone(),
                group_id: r.group.clone(),
                language: r.language.clone(),
                name: r.name.clone(),
                default: r.default,
                autoselect: true,
                channels: r.channels.map(|c| c.to_string()),
                ..Default::default()
            })
            .collect(),
        variants: variants
            .iter()
            .map(|v| m3u8_rs::VariantStream {
                uri: v.uri.clone(),
                bandwidth: v.bandwidth.max(1),
                average_bandwidth: v.average_bandwidth,
                codecs: Some(v.codecs.clone()),
                resolution: v.resolution.map(|(w, h)| m3u8_rs::Resolution { width: w.into(), height: h.into() }),
                frame_rate: v.frame_rate,
                audio: v.audio.clone(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(128 + 160 * variants.len());
    // writing into a Vec cannot fail
    let _ = playlist.write_to(&mut out);
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multivariant_lists_variants_with_their_audio_group() {
        let variant = |uri: &str, bandwidth, size| Variant {
            uri: uri.into(),
            bandwidth,
            average_bandwidth: Some(bandwidth / 2),
            codecs: "avc1.64000c,mp4a.40.2,opus".into(),
            resolution: Some(size),
            frame_rate: Some(25.0),
            audio: Some("audio".into()),
        };
        let renditions = [
            AudioRendition {
                group: "audio".into(),
                name: "Audio 0".into(),
                language: Some("en".into()),
                uri: None,
                default: true,
                channels: Some(2),
            },
            AudioRendition {
                group: "audio".into(),
                name: "Français".into(),
                language: Some("fr".into()),
                uri: Some("demo~a1.m3u8".into()),
                default: false,
                channels: Some(1),
            },
        ];
        let text = render_multivariant(
            &[variant("demo~0.m3u8", 900_000, (640, 360)), variant("demo~1.m3u8", 300_000, (320, 180))],
            &renditions,
        );
        let s = std::str::from_utf8(&text).unwrap();
        assert!(s.contains("#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",LANGUAGE=\"en\",NAME=\"Audio 0\",DEFAULT=YES,AUTOSELECT=YES,CHANNELS=\"2\"\n"), "{s}");
        let Ok((_, m3u8_rs::Playlist::MasterPlaylist(parsed))) = m3u8_rs::parse_playlist(&text) else { panic!("{s}") };
        assert_eq!(parsed.variants.len(), 2);
        assert!(parsed.variants.iter().all(|v| v.audio.as_deref() == Some("audio")), "{s}");
        assert_eq!(parsed.alternatives.len(), 2);
        let alt = &parsed.alternatives[1];
        assert_eq!(
            (alt.uri.as_deref(), alt.name.as_str(), alt.default, alt.autoselect),
            (Some("demo~a1.m3u8"), "Français", false, true)
        );
    }

    const WALL0: i64 = 1_700_000_000_000; // 2023-11-14T22:13:20Z

    fn info(sequence: u64, duration_ms: u64, discontinuity: bool) -> SegmentInfo {
        SegmentInfo {
            sequence,
            duration_ms,
            discontinuity,
            wall_clock_ms: WALL0 + sequence as i64 * 2000,
            independent: true,
            map: None,
        }
    }

    fn uri(seq: u64) -> String {
        format!("STREAM-{seq}.ts")
    }

    fn map_uri(id: u32) -> String {
        format!("STREAM-init{id}.mp4")
    }

    fn parse(bytes: &[u8]) -> MediaPlaylist {
        m3u8_rs::parse_media_playlist_res(bytes).expect("valid media playlist")
    }

    #[test]
    fn iso8601_formatting() {
        assert_eq!(format_iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_iso8601_ms(WALL0 + 7), "2023-11-14T22:13:20.007Z");
        assert_eq!(format_iso8601_ms(951_782_400_000), "2000-02-29T00:00:00.000Z"); // leap day
        assert_eq!(format_iso8601_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z"); // 2100 is not leap
        assert_eq!(format_iso8601_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn renders_header_segments_and_parses_back() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        for seq in 0..3 {
            p.push(&info(seq, 2002, false));
        }
        let text = p.render(false, uri, map_uri);
        let s = std::str::from_utf8(&text).unwrap();
        assert!(s.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n"));
        assert!(s.contains("#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n"), "{s}");
        assert!(s.contains("#EXT-X-INDEPENDENT-SEGMENTS\n"));
        // PDT follows the EXTINF before it (2.002 s), not the arrival times (2.000 s apart)
        assert!(s.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:22.002Z\n#EXTINF:2.002,\nSTREAM-1.ts\n"), "{s}");
        assert!(!s.contains("ENDLIST"));
        let pl = parse(&text);
        assert_eq!(pl.version, Some(3));
        assert_eq!(pl.target_duration, 2);
        assert_eq!(pl.media_sequence, 0);
        assert!(pl.independent_segments);
        assert_eq!(pl.segments.len(), 3);
        assert_eq!(pl.segments[2].uri, "STREAM-2.ts");
        assert!((pl.segments[2].duration - 2.002).abs() < 1e-6);
        let pdt = pl.segments[1].program_date_time.expect("PROGRAM-DATE-TIME parsed");
        assert_eq!(pdt.timestamp_millis(), WALL0 + 2002);
        assert!(parse(&p.render(true, uri, map_uri)).end_list);
    }

    #[test]
    fn window_slides_and_reports_removed_sequences() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        let mut removed = Vec::new();
        for seq in 10..20 {
            removed.extend(p.push(&info(seq, 2000, false)));
        }
        assert_eq!(removed, vec![10, 11, 12, 13]);
        assert_eq!(p.sequences().collect::<Vec<_>>(), (14..20).collect::<Vec<_>>());
        assert_eq!(p.next_sequence(), 20);
        let pl = parse(&p.render(false, uri, map_uri));
        assert_eq!(pl.media_sequence, 14);
        assert_eq!(pl.segments.len(), 6);
        assert_eq!(pl.segments[0].uri, "STREAM-14.ts");
    }

    #[test]
    fn window_keeps_three_target_durations() {
        // 2.5 s segments with a 4 s target and a window of 3: 3 segments are only 7.5 s;
        // keep 5 (12.5 s)
        let mut p = Playlist::new(PlaylistConfig { window_segments: 3, min_window_ms: 0 }, 4);
        for seq in 0..40 {
            p.push(&info(seq, 2500, false));
        }
        assert_eq!(p.sequences().count(), 5);
        // segments shorter than half the target count as half the target: 0.5 s ones with a
        // 4 s target count 2 s each, so 6 of them make the 12 s
        let mut p = Playlist::new(PlaylistConfig::default(), 4);
        for seq in 0..40 {
            p.push(&info(seq, 500, false));
        }
        assert_eq!(p.sequences().count(), 6);
        let mut p = Playlist::new(PlaylistConfig { window_segments: 3, min_window_ms: 10_000 }, 2);
        for seq in 0..40 {
            p.push(&info(seq, 2000, false));
        }
        assert_eq!(p.sequences().count(), 5);
    }

    #[test]
    fn tiny_segments_count_as_half_a_target_each() {
        // 1 ms segments (keyframes after timestamp jumps): counted by media time the window
        // would list 6,000 of them; each counts as at least half the target duration
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        for seq in 0..10_000 {
            p.push(&info(seq, 1, false));
        }
        assert_eq!(p.len(), 6, "3 × target = 6 s of window at 1 s counted per segment");
        let mut p = Playlist::new(PlaylistConfig { window_segments: 3, min_window_ms: 60_000 }, 2);
        for seq in 0..10_000 {
            p.push(&info(seq, 0, false));
        }
        assert_eq!(p.len(), 60);
        // normal segments are unaffected
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        for seq in 0..100 {
            p.push(&info(seq, 2000, false));
        }
        assert_eq!(p.len(), 6);
    }

    #[test]
    fn discontinuity_sequence_counts_discontinuities_that_left() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        for seq in 0..8 {
            p.push(&info(seq, 2000, seq == 1 || seq == 5));
        }
        // window 2..8: the discontinuity before 1 left, the one before 5 is listed
        let text = p.render(false, uri, map_uri);
        let pl = parse(&text);
        assert_eq!(pl.media_sequence, 2);
        assert_eq!(pl.discontinuity_sequence, 1);
        let flagged: Vec<_> = pl.segments.iter().filter(|s| s.discontinuity).map(|s| s.uri.clone()).collect();
        assert_eq!(flagged, vec!["STREAM-5.ts"]);
        assert!(std::str::from_utf8(&text).unwrap().contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"));
        for seq in 8..12 {
            p.push(&info(seq, 2000, false));
        }
        assert_eq!(parse(&p.render(false, uri, map_uri)).discontinuity_sequence, 2);
    }

    #[test]
    fn target_duration_is_fixed_after_the_first_segment_and_sequence_never_goes_back() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        p.set_target_duration(3);
        p.push(&info(5, 2000, false));
        p.set_target_duration(6);
        assert_eq!(p.target_duration_secs(), 3);
        assert!(p.push(&info(2, 2000, false)).is_empty());
        assert_eq!(p.next_sequence(), 6);
        assert_eq!(parse(&p.render(false, uri, map_uri)).media_sequence, 5);
    }

    #[test]
    fn non_independent_segment_drops_independent_segments_tag() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        p.push(&info(0, 2000, false));
        p.push(&SegmentInfo { independent: false, ..info(1, 2000, false) });
        assert!(!parse(&p.render(false, uri, map_uri)).independent_segments);
    }

    #[test]
    fn empty_playlist_renders() {
        let p = Playlist::new(PlaylistConfig::default(), 2);
        let pl = parse(&p.render(true, uri, map_uri));
        assert!(pl.segments.is_empty() && pl.end_list);
    }

    #[test]
    fn fmp4_segments_get_a_map_first_and_where_it_changes() {
        let mut p = Playlist::new(PlaylistConfig::default(), 2);
        p.push(&SegmentInfo { map: Some(1), ..info(0, 2000, false) });
        p.push(&SegmentInfo { map: Some(1), ..info(1, 2000, false) });
        p.push(&SegmentInfo { map: Some(2), ..info(2, 2000, true) });
        let text = p.render(false, uri, map_uri);
        let s = std::str::from_utf8(&text).unwrap();
        assert!(s.starts_with("#EXTM3U\n#EXT-X-VERSION:6\n"), "{s}");
        assert_eq!(s.matches("#EXT-X-MAP:").count(), 2, "{s}");
        let pl = parse(&text);
        let maps: Vec<_> = pl.segments.iter().map(|s| s.map.as_ref().map(|m| m.uri.clone())).collect();
        assert_eq!(maps, vec![Some("STREAM-init1.mp4".into()), None, Some("STREAM-init2.mp4".into())]);
        // MPEG-TS playlists stay at version 3, without maps
        let mut ts = Playlist::new(PlaylistConfig::default(), 2);
        ts.push(&info(0, 2000, false));
        let text = ts.render(false, uri, map_uri);
        assert!(text.starts_with(b"#EXTM3U\n#EXT-X-VERSION:3\n") && !text.windows(8).any(|w| w == b"EXT-X-MAP"));
    }
}
