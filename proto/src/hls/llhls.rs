//! Low-Latency HLS (RFC 8216bis, Apple's LL-HLS rules): the media playlist with parts,
//! the delivery directives of a blocking reload (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) and
//! whether a playlist can answer them yet. Sans-IO: the caller waits and renders.
//!
//! m3u8-rs (6.0.1) has none of these tags and no place after the last segment for the
//! open segment's parts and the preload hint, so this playlist is written by hand.

use std::fmt::Write as _;

use bytes::Bytes;

use super::playlist::{format_iso8601_ms, PartInfo, Playlist};

/// A blocking reload's delivery directives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Directives {
    pub msn: Option<u64>,
    pub part: Option<u32>,
    /// `_HLS_skip=YES` (or `v2`): a delta update is asked for.
    pub skip: bool,
}

/// Why directives are refused (HTTP 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadDirectives {
    /// `_HLS_part` without `_HLS_msn`.
    PartWithoutMsn,
    /// A value that is not a number (or `YES`/`v2` for `_HLS_skip`).
    Malformed(&'static str),
    /// A segment more than two beyond the last one, or a part beyond the advance part limit.
    TooFarAhead,
}

impl std::fmt::Display for BadDirectives {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadDirectives::PartWithoutMsn => f.write_str("_HLS_part without _HLS_msn"),
            BadDirectives::Malformed(what) => write!(f, "malformed {what}"),
            BadDirectives::TooFarAhead => {
                f.write_str("the requested segment or part is too far ahead of the live edge")
            }
        }
    }
}

impl Directives {
    /// Reads the directives from a query string (other parameters are left alone).
    pub fn parse(query: &str) -> Result<Self, BadDirectives> {
        let mut d = Directives::default();
        for pair in query.split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let number = |what| {
                if v.is_empty() || v.len() > 19 || !v.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(BadDirectives::Malformed(what));
                }
                v.parse::<u64>().map_err(|_| BadDirectives::Malformed(what))
            };
            match k {
                "_HLS_msn" => d.msn = Some(number("_HLS_msn")?),
                "_HLS_part" => {
                    d.part =
                        Some(u32::try_from(number("_HLS_part")?).map_err(|_| BadDirectives::Malformed("_HLS_part"))?)
                }
                "_HLS_skip" => match v {
                    "YES" | "v2" => d.skip = true,
                    _ => return Err(BadDirectives::Malformed("_HLS_skip")),
                },
                _ => {}
            }
        }
        if d.part.is_some() && d.msn.is_none() {
            return Err(BadDirectives::PartWithoutMsn);
        }
        Ok(d)
    }

    /// Whether this is a blocking request.
    pub fn blocks(&self) -> bool {
        self.msn.is_some()
    }
}

/// Whether `playlist` can answer `d` now: `Ok(true)` when it holds the segment (or the
/// part, or something later) asked for, `Ok(false)` when the request must wait,
/// `Err(TooFarAhead)` when it asks for more than two segments ahead of the last one or a
/// part beyond the advance part limit (3 / part target, for part targets under 1 s).
pub fn ready(playlist: &Playlist, d: &Directives, part_target_ms: u64, ended: bool) -> Result<bool, BadDirectives> {
    let Some(msn) = d.msn else { return Ok(true) };
    if ended {
        return Ok(true); // directives are ignored once the playlist has EXT-X-ENDLIST
    }
    let next = playlist.next_sequence();
    let complete = |m: u64| playlist.started() && m < next;
    if msn > next + 1 {
        return Err(BadDirectives::TooFarAhead);
    }
    let Some(n) = d.part else { return Ok(complete(msn)) };
    let limit = if part_target_ms < 1000 { 3000u64.div_ceil(part_target_ms.max(1)) } else { 3 } as u32;
    let newest = playlist.parts().next_back().map(|p| (p.sequence, p.index));
    let open_index = newest.filter(|(s, _)| *s >= next).map_or(0, |(_, i)| i + 1);
    if msn >= next && n > open_index + limit {
        return Err(BadDirectives::TooFarAhead);
    }
    if complete(msn) {
        let count = playlist.parts().filter(|p| p.sequence == msn).count() as u32;
        // a part of a complete segment, or past its end (then the first part of the next)
        return Ok(count == 0 || n < count || playlist.parts().any(|p| p.sequence > msn) || complete(msn + 1));
    }
    Ok(newest.is_some_and(|p| p >= (msn, n)))
}

/// The part `EXT-X-PRELOAD-HINT` names: the one after the newest.
pub fn next_part(playlist: &Playlist) -> (u64, u32) {
    let next = playlist.next_sequence();
    match playlist.parts().next_back() {
        Some(p) if p.sequence >= next => (p.sequence, p.index + 1),
        _ => (next, 0),
    }
}

/// How a Low-Latency playlist names its files.
pub struct Names<'a> {
    pub segment: &'a dyn Fn(u64) -> String,
    pub part: &'a dyn Fn(u64, u32) -> String,
    pub map: &'a dyn Fn(u32) -> String,
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// Renders the Low-Latency media playlist: `EXT-X-SERVER-CONTROL` (blocking reload,
/// `PART-HOLD-BACK` = 3 part targets, `CAN-SKIP-UNTIL` = 6 target durations),
/// `EXT-X-PART-INF`, the segments with `EXT-X-PART` lines for the newest ones, the open
/// segment's parts and an `EXT-X-PRELOAD-HINT` for the next part (until it ended).
/// `skip`: a delta update (`EXT-X-SKIP` in place of the segments older than
/// `CAN-SKIP-UNTIL`).
///
/// `EXT-X-PART-INF:PART-TARGET` is the configured part target plus 1 ms: the segmenter
/// cuts parts of whole frames, which millisecond timestamps round up to it (10 frames at
/// 30 fps are 333 or 334 ms), and no part may be longer than the target.
pub fn render(playlist: &Playlist, part_target_ms: u64, ended: bool, skip: bool, names: &Names<'_>) -> Bytes {
    let part_target_ms = part_target_ms + 1;
    let target = playlist.target_duration_secs();
    let skip_until_ms = 6 * 1000 * target;
    let mut out = String::with_capacity(512 + 160 * playlist.len() + 96 * playlist.parts().count());
    // segments older than CAN-SKIP-UNTIL from the end of the playlist may be skipped
    let skipped = if skip {
        let mut from_end = 0u64;
        let mut keep = 0usize;
        for s in playlist.segments().rev() {
            if from_end + s.duration_ms > skip_until_ms {
                break;
            }
            from_end += s.duration_ms;
            keep += 1;
        }
        playlist.len() - keep
    } else {
        0
    };
    let _ = writeln!(out, "#EXTM3U\n#EXT-X-VERSION:{}", if skipped > 0 { 9 } else { 6 });
    let _ = writeln!(out, "#EXT-X-TARGETDURATION:{target}");
    let _ = writeln!(
        out,
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={},CAN-SKIP-UNTIL={}",
        secs(3 * part_target_ms),
        secs(skip_until_ms)
    );
    let _ = writeln!(out, "#EXT-X-PART-INF:PART-TARGET={}", secs(part_target_ms));
    let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", playlist.media_sequence());
    if playlist.discontinuity_sequence() > 0 {
        let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", playlist.discontinuity_sequence());
    }
    if playlist.segments().all(|s| s.independent) {
        out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    }
    if skipped > 0 {
        let _ = writeln!(out, "#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}");
    }
    let parts_of = |seq: u64| playlist.parts().filter(move |p| p.sequence == seq);
    let write_parts = |out: &mut String, parts: &mut dyn Iterator<Item = &PartInfo>| {
        for p in parts {
            let _ = write!(
                out,
                "#EXT-X-PART:DURATION={},URI=\"{}\"",
                secs(p.duration_ms),
                (names.part)(p.sequence, p.index)
            );
            out.push_str(if p.independent { ",INDEPENDENT=YES\n" } else { "\n" });
        }
    };
    // the map in force before the first segment written (a skipped one's counts)
    let mut map = playlist.segments().take(skipped).filter_map(|s| s.map).last();
    let mut first = true;
    let mut end_wall = None;
    for s in playlist.segments().skip(skipped) {
        if s.discontinuity && !first {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(id) = s.map {
            if first || map != Some(id) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", (names.map)(id));
            }
        }
        map = s.map;
        first = false;
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_iso8601_ms(s.wall_clock_ms));
        write_parts(&mut out, &mut parts_of(s.sequence));
        let _ = writeln!(out, "#EXTINF:{},\n{}", secs(s.duration_ms), (names.segment)(s.sequence));
        end_wall = Some(s.wall_clock_ms + s.duration_ms as i64);
    }
    // the segment being written: its parts so far
    let next = playlist.next_sequence();
    let mut open = playlist.parts().filter(|p| p.sequence >= next).peekable();
    if let Some(head) = open.peek().copied() {
        if head.discontinuity && !first {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        if let Some(id) = head.map {
            if first || map != Some(id) {
                let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}\"", (names.map)(id));
            }
        }
        let wall = end_wall.filter(|_| !head.discontinuity).unwrap_or(head.wall_clock_ms);
        let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_iso8601_ms(wall));
        write_parts(&mut out, &mut open);
    }
    if ended {
        out.push_str("#EXT-X-ENDLIST\n");
    } else if playlist.started() || playlist.parts().next().is_some() {
        let (seq, index) = next_part(playlist);
        let _ = writeln!(out, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"{}\"", (names.part)(seq, index));
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
