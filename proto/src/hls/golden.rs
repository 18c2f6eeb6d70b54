//! Golden-output test: a fixture FLV through the tag demuxer and the
//! segmenter must give byte-identical segments to the committed ones, so any
//! change of the TS output is seen and reviewed (see fixtures/hls/README.md).

use std::path::PathBuf;

use bytes::Bytes;

use super::{Segment, Segmenter, SegmenterConfig};
use crate::flv::file::read_tags;
use crate::flv::TagDemuxer;
use crate::media::Event;
use crate::media::MediaKind;

const SOURCE: &[u8] = include_bytes!("../../../fixtures/hls/source.flv");
/// A fixed wall clock so PROGRAM-DATE-TIME inputs are deterministic.
const WALL_START_MS: i64 = 1_700_000_000_000;

fn segments() -> Vec<Segment> {
    let tags = read_tags(&Bytes::from_static(SOURCE)).expect("fixture is FLV");
    let mut demuxer = TagDemuxer::new();
    let mut segmenter = Segmenter::new(SegmenterConfig::default(), 0);
    let mut events = Vec::new();
    let mut out = Vec::new();
    for tag in tags {
        let kind = match tag.tag_type {
            8 => MediaKind::Audio,
            9 => MediaKind::Video,
            _ => continue,
        };
        demuxer.push(kind, tag.timestamp, tag.body, &mut events, &mut Vec::new()).expect("fixture demuxes");
        for ev in events.drain(..) {
            let wall = WALL_START_MS + if let Event::Frame(f) = &ev { f.dts() } else { 0 };
            out.extend(segmenter.push(&ev, wall).expect("fixture muxes"));
        }
    }
    out.extend(segmenter.flush());
    out
}

fn golden_path(i: usize) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("../fixtures/hls/golden-{i}.ts"))
}

#[test]
fn golden_segments_from_the_fixture_flv() {
    let segs = segments();
    // 1 s GOPs, 2 s target: a 2 s segment, then the 1 s rest
    let durations: Vec<u64> = segs.iter().map(|s| s.duration_ms).collect();
    assert_eq!(durations.len(), 2, "{durations:?}");
    assert!((1900..=2100).contains(&durations[0]), "{durations:?}");
    for (i, seg) in segs.iter().enumerate() {
        assert_eq!(seg.sequence, i as u64);
        assert!(seg.independent);
        assert_eq!(seg.data.len() % 188, 0);
        assert!(seg.data.chunks(188).all(|p| p[0] == 0x47));
        // PAT (PID 0) first, then the PMT
        assert_eq!((seg.data[1] & 0x1f, seg.data[2]), (0, 0));
        let path = golden_path(i);
        if std::env::var_os("LIVEGATE_UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &seg.data).expect("write golden");
            continue;
        }
        let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(golden == seg.data, "segment {i} differs from {} (see fixtures/hls/README.md)", path.display());
    }
}
