//! The fan-out core driven by plain calls: ring bounds, lag policy, wake decisions.

use super::*;
use crate::hub::testutil::{audio, config, video};

fn fanout(config: HubConfig) -> Fanout {
    Fanout::new(&config)
}

/// Everything available to `cursor` now.
fn drain(f: &Fanout, cursor: &mut Cursor) -> Result<Vec<HubEvent>, Evicted> {
    let mut out = Vec::new();
    cursor.take_pending(&mut out, usize::MAX);
    while f.read(cursor, &mut out, 1000)?.added {}
    Ok(out)
}

fn dts(evs: &[HubEvent]) -> Vec<i64> {
    evs.iter().filter_map(|e| if let HubEvent::Frame(f) = e { Some(f.dts()) } else { None }).collect()
}

#[test]
fn new_cursor_starts_with_metadata_config_and_gop_sharing_payloads() {
    let mut f = fanout(HubConfig::default());
    let _ = f.push(HubEvent::Metadata(Bytes::from_static(b"meta")));
    let _ = f.push(HubEvent::Config(config()));
    for (dts, key) in [(0, true), (40, false), (2000, true), (2040, false)] {
        let _ = f.push(video(dts, key));
    }
    let mut c = f.cursor();
    let _ = f.push(video(2080, false));
    let evs = drain(&f, &mut c).unwrap();
    assert!(matches!(evs[0], HubEvent::Metadata(_)));
    assert!(matches!(evs[1], HubEvent::Config(_)));
    assert_eq!(dts(&evs[2..]), vec![2000, 2040, 2080]);
    let (HubEvent::Frame(Frame::Video(a)), Some(HubEvent::Frame(Frame::Video(b)))) = (&evs[4], f.ring().next_back())
    else {
        panic!()
    };
    assert_eq!(a.data.as_ptr(), b.data.as_ptr(), "the payload is shared with the ring, not copied");
}

#[test]
fn end_of_stream_finishes_cursors_and_ignores_later_events() {
    let mut f = fanout(HubConfig::default());
    let mut c = f.cursor();
    let _ = f.push(video(0, true));
    assert!(f.push(HubEvent::EndOfStream));
    assert!(!f.push(video(40, false)), "nothing after the end");
    let evs = drain(&f, &mut c).unwrap();
    assert_eq!(evs.last(), Some(&HubEvent::EndOfStream));
    assert!(c.is_done());
    assert!(matches!(f.cursor().pending.back(), Some(HubEvent::EndOfStream)), "a late viewer learns of the end");
}

#[test]
fn lagging_cursor_skips_to_latest_keyframe_then_is_evicted() {
    let mut f = fanout(HubConfig { ring_events: 50, max_lag_skips: 2, ..Default::default() });
    let _ = f.push(HubEvent::Config(config()));
    let mut c = f.cursor();
    let mut dts = 0;
    let mut feed = |f: &mut Fanout, n: usize| {
        for i in 0..n {
            let _ = f.push(video(dts, i % 25 == 0));
            dts += 40;
        }
    };
    feed(&mut f, 100); // the ring holds only 50: the viewer fell out of it
    let mut out = Vec::new();
    c.take_pending(&mut out, 10);
    let read = f.read(&mut c, &mut out, 1000).unwrap();
    assert!(read.skipped && read.added);
    let first = out.iter().find_map(|e| if let HubEvent::Frame(f) = e { Some(f.clone()) } else { None });
    assert!(first.as_ref().is_some_and(|f| f.is_keyframe() && f.dts() == 75 * 40), "{first:?}");
    // caught up: the skip count resets; lag again twice more without catching up => evicted
    feed(&mut f, 100);
    assert!(f.read(&mut c, &mut out, 1).unwrap().skipped);
    feed(&mut f, 100);
    assert!(f.read(&mut c, &mut out, 1).unwrap().skipped);
    feed(&mut f, 100);
    assert_eq!(f.read(&mut c, &mut out, 1), Err(Evicted));
    assert!(c.is_done());
}

#[test]
fn cursor_far_behind_in_time_skips_even_inside_the_ring() {
    let mut f = fanout(HubConfig { max_lag_ms: 1000, ..Default::default() });
    let _ = f.push(HubEvent::Config(config()));
    let mut c = f.cursor();
    for i in 0..100 {
        let _ = f.push(video(i * 40, i % 50 == 0));
        let _ = f.push(audio(i * 40));
    }
    let evs = drain(&f, &mut c).unwrap();
    assert!(matches!(&evs[0], HubEvent::Config(_)));
    assert!(matches!(&evs[1], HubEvent::Frame(f) if f.is_keyframe() && f.dts() == 2000), "{:?}", evs[1]);
}

#[test]
fn ring_drops_frames_older_than_max_lag_but_keeps_the_newest_keyframe() {
    let mut f = fanout(HubConfig { max_lag_ms: 1000, ..Default::default() });
    let _ = f.push(HubEvent::Config(config()));
    for i in 0..100 {
        let _ = f.push(video(i * 40, i % 25 == 0)); // keyframe every second
    }
    let Some(HubEvent::Frame(front)) = f.ring().next() else { panic!() };
    assert!(front.dts() >= 3960 - 1000 || front.is_keyframe(), "{}", front.dts());
    assert!(f.ring().count() < 40);
    // a GOP longer than max_lag: its keyframe stays
    for i in 100..200 {
        let _ = f.push(video(i * 40, i == 100));
    }
    assert!(matches!(f.ring().next(), Some(HubEvent::Frame(f)) if f.is_keyframe() && f.dts() == 4000));
}

#[test]
fn timestamp_jump_is_not_lag_and_never_rewinds_a_cursor() {
    // A viewer one frame behind when the publisher's timeline jumps forward by
    // hours (ingest sends a Discontinuity first) is not lagging: it must get
    // every frame exactly once, not be sent back to the last keyframe.
    let mut f = fanout(HubConfig::default());
    let _ = f.push(HubEvent::Config(config()));
    let mut c = f.cursor();
    for i in 0..10 {
        let _ = f.push(video(i * 40, i == 0));
    }
    let mut got = Vec::new();
    c.take_pending(&mut got, usize::MAX);
    while dts(&got).len() < 9 {
        assert!(!f.read(&mut c, &mut got, 1).unwrap().skipped);
    }
    let _ = f.push(HubEvent::Discontinuity);
    for i in 0..10 {
        let _ = f.push(video(3 * 3_600_000 + i * 40, false));
    }
    loop {
        let read = f.read(&mut c, &mut got, 1000).unwrap();
        assert!(!read.skipped);
        if !read.added {
            break;
        }
    }
    let want: Vec<i64> = (0..10).map(|i| i * 40).chain((0..10).map(|i| 3 * 3_600_000 + i * 40)).collect();
    assert_eq!(dts(&got), want);
}

#[test]
fn ring_is_bounded_by_bytes_and_events() {
    let mut f = fanout(HubConfig { ring_bytes: 10_000, ring_events: 50, max_lag_ms: 1 << 40, ..Default::default() });
    for i in 0..1000 {
        let _ = f.push(video(i * 40, i % 30 == 0));
    }
    assert!(f.ring_bytes() <= 10_000, "{}", f.ring_bytes());
    let mut f = fanout(HubConfig { ring_events: 50, max_lag_ms: 1 << 40, ..Default::default() });
    for i in 0..1000 {
        let _ = f.push(audio(i * 20));
    }
    assert_eq!(f.ring().count(), 50);
}

/// Which of `events` woke viewers (by index).
fn wakes(f: &mut Fanout, events: Vec<HubEvent>) -> Vec<usize> {
    events.into_iter().enumerate().filter_map(|(i, ev)| f.push(ev).then_some(i)).collect()
}

#[test]
fn audio_rides_along_with_the_next_video_frame() {
    let mut f = fanout(HubConfig { merge_write_ms: 0, ..Default::default() });
    assert_eq!(wakes(&mut f, vec![HubEvent::Config(config()), video(0, true)]), vec![0, 1]);
    assert_eq!(wakes(&mut f, vec![audio(10), audio(31), video(40, false)]), vec![2], "audio waits for video");
    // the video stalls: audio wakes viewers once 50 ms of it piled up
    assert_eq!(wakes(&mut f, vec![audio(50), audio(71), audio(92), audio(113)]), vec![3]);
}

#[test]
fn audio_only_streams_wake_for_every_frame() {
    let mut f = fanout(HubConfig::default());
    assert_eq!(wakes(&mut f, vec![audio(0), audio(21), audio(42)]), vec![0, 1, 2]);
}

#[test]
fn frozen_timestamps_still_wake_viewers() {
    let mut f = fanout(HubConfig { merge_write_ms: 50, ..Default::default() });
    let _ = f.push(HubEvent::Config(config()));
    let _ = f.push(video(0, true));
    let woke = wakes(&mut f, (0..2 * MAX_HELD_FRAMES).map(|_| video(0, false)).collect());
    assert_eq!(woke, vec![MAX_HELD_FRAMES as usize - 1, 2 * MAX_HELD_FRAMES as usize - 1]);
}

#[test]
fn merge_write_wakes_once_per_interval_of_video() {
    let mut f = fanout(HubConfig { merge_write_ms: 50, ..Default::default() });
    let _ = f.push(HubEvent::Config(config()));
    let _ = f.push(video(0, true));
    // 30 fps: every second frame wakes (33 ms < 50 ms <= 67 ms)
    assert_eq!(wakes(&mut f, (1..=6).map(|i| video(i * 1000 / 30, false)).collect()), vec![1, 3, 5]);
    // everything but frames wakes at once; the next frame after it too; a backwards step
    // (a new timeline) wakes at once
    let evs = vec![HubEvent::Metadata(Bytes::from_static(b"m")), video(7 * 1000 / 30, false), video(10, false)];
    assert_eq!(wakes(&mut f, evs), vec![0, 1, 2]);
}
