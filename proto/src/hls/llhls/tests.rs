//! Unit tests of `llhls`: directives, readiness, and the playlist text.

use super::*;
use crate::hls::playlist::{PlaylistConfig, SegmentInfo};

const WALL0: i64 = 1_700_000_000_000;
const PART: u64 = 333;

/// A playlist of `segments` complete 2 s segments of 6 parts each, and `open` parts of the
/// next one.
fn playlist(segments: u64, open: u32, config: PlaylistConfig) -> Playlist {
    let mut p = Playlist::new(config, 2);
    let part = |sequence, index| PartInfo {
        sequence,
        index,
        duration_ms: if index == 5 { 335 } else { PART },
        independent: index == 0,
        discontinuity: false,
        map: Some(1),
        wall_clock_ms: WALL0 + sequence as i64 * 2000,
    };
    for seq in 0..segments {
        for i in 0..6 {
            p.push_part(&part(seq, i));
        }
        p.push(&SegmentInfo {
            sequence: seq,
            duration_ms: 2000,
            discontinuity: false,
            wall_clock_ms: WALL0 + seq as i64 * 2000 + (seq as i64 % 3) * 7, // arrival jitter
            independent: true,
            map: Some(1),
        });
    }
    for i in 0..open {
        p.push_part(&part(segments, i));
    }
    p
}

fn render_text(p: &Playlist, ended: bool, skip: bool) -> String {
    let names = Names {
        segment: &|s| format!("s{s}.m4s"),
        part: &|s, i| format!("s{s}.{i}.m4s"),
        map: &|n| format!("init{n}.mp4"),
    };
    String::from_utf8(render(p, PART, ended, skip, &names).to_vec()).unwrap()
}

#[test]
fn directives_parse_and_bad_ones_are_refused() {
    assert_eq!(Directives::parse(""), Ok(Directives::default()));
    let d = Directives::parse("key=a&_HLS_msn=12&_HLS_part=3&_HLS_skip=YES").unwrap();
    assert_eq!(d, Directives { msn: Some(12), part: Some(3), skip: true });
    assert!(d.blocks());
    assert!(Directives::parse("_HLS_skip=v2").unwrap().skip);
    assert_eq!(Directives::parse("_HLS_part=1"), Err(BadDirectives::PartWithoutMsn));
    for bad in
        ["_HLS_msn=", "_HLS_msn=-1", "_HLS_msn=+1", "_HLS_msn=1x", "_HLS_msn=1&_HLS_part=99999999999", "_HLS_skip=NO"]
    {
        assert!(matches!(Directives::parse(bad), Err(BadDirectives::Malformed(_))), "{bad}");
    }
}

#[test]
fn a_blocking_reload_is_answered_once_the_part_exists() {
    let p = playlist(3, 2, PlaylistConfig::default());
    let d = |msn, part| Directives { msn: Some(msn), part, skip: false };
    assert_eq!(ready(&p, &d(3, Some(1)), PART, false), Ok(true), "the open segment's part 1 exists");
    assert_eq!(ready(&p, &d(3, Some(2)), PART, false), Ok(false), "part 2 is being written");
    assert_eq!(ready(&p, &d(2, None), PART, false), Ok(true), "segment 2 is complete");
    assert_eq!(ready(&p, &d(3, None), PART, false), Ok(false), "segment 3 is not");
    assert_eq!(ready(&p, &d(2, Some(6)), PART, false), Ok(true), "past segment 2's end: part 0 of 3 exists");
    assert_eq!(ready(&p, &d(4, Some(0)), PART, false), Ok(false));
    assert_eq!(ready(&p, &d(5, None), PART, false), Err(BadDirectives::TooFarAhead), "more than 2 ahead");
    assert_eq!(ready(&p, &d(3, Some(2 + 10 + 1)), PART, false), Err(BadDirectives::TooFarAhead), "advance part limit");
    assert_eq!(ready(&p, &d(5, None), PART, true), Ok(true), "directives are ignored after ENDLIST");
    assert_eq!(next_part(&p), (3, 2));
    assert_eq!(next_part(&playlist(3, 0, PlaylistConfig::default())), (3, 0));
}

#[test]
fn the_playlist_lists_recent_parts_the_open_segment_and_a_preload_hint() {
    let p = playlist(8, 2, PlaylistConfig::default());
    let text = render_text(&p, false, false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0..3], ["#EXTM3U", "#EXT-X-VERSION:6", "#EXT-X-TARGETDURATION:2"]);
    assert!(
        text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.002,CAN-SKIP-UNTIL=12.000\n"),
        "{text}"
    );
    assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.334\n"));
    assert_eq!(text.matches("#EXT-X-MAP:URI=\"init1.mp4\"").count(), 1);
    // parts only for the segments within 3 target durations of the live edge (5, 6, 7)
    assert!(
        !text.contains("s4.0.m4s") && text.contains("#EXT-X-PART:DURATION=0.333,URI=\"s5.0.m4s\",INDEPENDENT=YES\n")
    );
    assert!(text.contains("#EXT-X-PART:DURATION=0.335,URI=\"s7.5.m4s\"\n#EXTINF:2.000,\ns7.m4s\n"), "{text}");
    // the open segment: its PDT continues the last EXTINF, its parts, then the hint
    let tail = text.split("s7.m4s\n").nth(1).unwrap();
    let want = "#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:36.000Z\n\
                #EXT-X-PART:DURATION=0.333,URI=\"s8.0.m4s\",INDEPENDENT=YES\n\
                #EXT-X-PART:DURATION=0.333,URI=\"s8.1.m4s\"\n\
                #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s8.2.m4s\"\n";
    assert_eq!(tail, want);
    // PDT of consecutive segments differs by exactly the EXTINF before (arrival jitter dropped)
    assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:28.000Z\n") && !text.contains(".007Z"), "{text}");
    // players that know no LL tags still read it as a live media playlist
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("parses");
    assert_eq!((pl.media_sequence, pl.segments.len(), pl.end_list), (p.media_sequence(), p.len(), false));
    // ended: no hint, ENDLIST
    let ended = render_text(&p, true, false);
    assert!(ended.ends_with("#EXT-X-ENDLIST\n") && !ended.contains("PRELOAD-HINT"));
}

#[test]
fn a_delta_update_skips_the_segments_older_than_can_skip_until() {
    let p = playlist(20, 1, PlaylistConfig { window_segments: 10, min_window_ms: 36_000 });
    assert_eq!(p.len(), 18);
    let full = render_text(&p, false, false);
    let delta = render_text(&p, false, true);
    assert!(delta.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n"), "{delta}");
    // 6 segments (12 s) stay, the 12 before them are skipped; the map is repeated
    assert!(delta.contains("#EXT-X-SKIP:SKIPPED-SEGMENTS=12\n"), "{delta}");
    assert_eq!(delta.matches("#EXTINF").count(), 6);
    assert!(delta.contains("#EXT-X-MAP:URI=\"init1.mp4\"\n"));
    assert_eq!(delta.lines().find(|l| l.starts_with("#EXT-X-MEDIA-SEQUENCE")), Some("#EXT-X-MEDIA-SEQUENCE:2"));
    assert_eq!(full.matches("#EXTINF").count(), 18);
    // a short window has nothing to skip
    let short = playlist(8, 1, PlaylistConfig::default());
    assert!(!render_text(&short, false, true).contains("EXT-X-SKIP"));
}
