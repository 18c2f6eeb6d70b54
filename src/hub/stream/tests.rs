//! Unit tests of the stream: fan-out, lag policy, merged wake-ups, viewer counting.

use std::task::{Context, Poll};

use super::super::*;

/// avcC from x264, 320x240 High profile (the same as livegate-proto's test fixture).
const AVCC_320X240: &[u8] = &[
    0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9, 0x41, 0x41, 0xfb, 0x01, 0x10,
    0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb,
    0xe3, 0xcb, 0x22, 0xc0,
];
use super::*;
use crate::media::{AudioFrame, Frame, VideoFrame};

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

fn video(dts: i64, key: bool) -> HubEvent {
    HubEvent::Frame(Frame::Video(VideoFrame { dts, cts: 0, keyframe: key, data: Bytes::from(vec![7u8; 100]) }))
}

fn cfg() -> CodecConfig {
    let avc = crate::media::AvcConfig::parse(Bytes::from_static(AVCC_320X240)).unwrap();
    CodecConfig { video: Some(Arc::new(avc)), audio: None, generation: 1 }
}

fn drain(sub: &mut Subscription) -> Result<Vec<HubEvent>, Evicted> {
    let mut out = Vec::new();
    while sub.try_recv_many(&mut out, 1000)? {}
    Ok(out)
}

#[test]
fn one_publisher_per_key_and_key_freed_on_drop() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    assert!(hub.publish(key.clone(), peer()).is_err());
    drop(p);
    assert!(hub.get(&key).is_none());
    assert!(hub.publish(key, peer()).is_ok());
}

#[test]
fn new_viewer_gets_config_then_gop_then_live_sharing_payloads() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Metadata(Bytes::from_static(b"meta")));
    p.send(HubEvent::Config(cfg()));
    p.send(video(0, true));
    p.send(video(40, false));
    p.send(video(2000, true));
    p.send(video(2040, false));
    let mut sub = hub.subscribe(&key).unwrap();
    p.send(video(2080, false));
    let evs = drain(&mut sub).unwrap();
    assert!(matches!(evs[0], HubEvent::Metadata(_)));
    assert!(matches!(evs[1], HubEvent::Config(_)));
    let dts: Vec<i64> = evs[2..].iter().map(|e| if let HubEvent::Frame(f) = e { f.dts() } else { -1 }).collect();
    assert_eq!(dts, vec![2000, 2040, 2080]);
    // the payload is shared with the ring, not copied
    let st = lock(&p.stream().state);
    let (HubEvent::Frame(Frame::Video(a)), Some(HubEvent::Frame(Frame::Video(b)))) = (&evs[4], st.ring.back()) else {
        panic!()
    };
    assert_eq!(a.data.as_ptr(), b.data.as_ptr());
}

#[test]
fn viewer_limit_counts_flv_and_rtmp_viewers_together() {
    let hub = Hub::new(HubConfig::default());
    let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
    let s = p.stream();
    let a = s.admit_viewer(Protocol::HttpFlv, 2).unwrap();
    let _hls = s.admit_viewer(Protocol::Hls, 2).unwrap();
    let b = s.admit_viewer(Protocol::RtmpPlay, 2).unwrap();
    assert!(s.admit_viewer(Protocol::HttpFlv, 2).is_none());
    assert!(s.admit_viewer(Protocol::RtmpPlay, 2).is_none());
    assert!(s.admit_viewer(Protocol::Hls, 2).is_some(), "HLS clients do not count");
    drop(a);
    assert_eq!(s.stats.viewers(Protocol::HttpFlv), 0);
    let _c = s.admit_viewer(Protocol::RtmpPlay, 2).unwrap();
    assert_eq!(s.stats.viewers(Protocol::RtmpPlay), 2);
    drop(b);
    assert!(s.admit_viewer(Protocol::HttpFlv, 2).is_some());
}

#[test]
fn end_of_stream_reaches_viewers() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    let mut sub = hub.subscribe(&key).unwrap();
    p.send(video(0, true));
    drop(p);
    let evs = drain(&mut sub).unwrap();
    assert_eq!(evs.last(), Some(&HubEvent::EndOfStream));
    assert!(!sub.try_recv_many(&mut Vec::new(), 10).unwrap());
}

#[test]
fn lagging_viewer_skips_to_latest_keyframe_then_is_evicted() {
    let config = HubConfig { ring_events: 50, max_lag_skips: 2, ..Default::default() };
    let hub = Hub::new(config);
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    let mut sub = hub.subscribe(&key).unwrap();
    let mut dts = 0;
    let mut feed = |n: usize| {
        for i in 0..n {
            p.send(video(dts, i % 25 == 0));
            dts += 40;
        }
    };
    feed(100); // ring holds only 50: the viewer fell out of it
    let evs = drain(&mut sub).unwrap();
    let first = evs.iter().find_map(|e| if let HubEvent::Frame(f) = e { Some(f.clone()) } else { None });
    assert!(first.as_ref().is_some_and(|f| f.is_keyframe() && f.dts() == 75 * 40), "{first:?}");
    assert_eq!(p.stream().stats.lag_skips.load(Ordering::Relaxed), 1);
    // caught up: the skip count resets; lag again twice more without catching up => evicted
    feed(100);
    let mut out = Vec::new();
    sub.try_recv_many(&mut out, 1).unwrap();
    feed(100);
    sub.try_recv_many(&mut out, 1).unwrap();
    feed(100);
    assert_eq!(sub.try_recv_many(&mut out, 1), Err(Evicted));
    assert_eq!(p.stream().stats.evictions.load(Ordering::Relaxed), 1);
}

#[test]
fn viewer_far_behind_in_time_skips_even_inside_the_ring() {
    let hub = Hub::new(HubConfig { max_lag_ms: 1000, ..Default::default() });
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    let mut sub = hub.subscribe(&key).unwrap();
    for i in 0..100 {
        p.send(video(i * 40, i % 50 == 0));
        p.send(HubEvent::Frame(Frame::Audio(AudioFrame { pts: i * 40, data: Bytes::from_static(&[1]) })));
    }
    let evs = drain(&mut sub).unwrap();
    assert!(matches!(&evs[0], HubEvent::Config(_)));
    assert!(matches!(&evs[1], HubEvent::Frame(f) if f.is_keyframe() && f.dts() == 2000), "{:?}", evs[1]);
}

#[test]
fn ring_drops_frames_older_than_max_lag_but_keeps_the_newest_keyframe() {
    let hub = Hub::new(HubConfig { max_lag_ms: 1000, ..Default::default() });
    let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    for i in 0..100 {
        p.send(video(i * 40, i % 25 == 0)); // keyframe every second
    }
    {
        let st = lock(&p.stream().state);
        let HubEvent::Frame(f) = st.ring.front().unwrap() else { panic!() };
        assert!(f.dts() >= 3960 - 1000 || f.is_keyframe(), "{}", f.dts());
        assert!(st.ring.len() < 40);
    }
    // a GOP longer than max_lag: its keyframe stays
    for i in 100..200 {
        p.send(video(i * 40, i == 100));
    }
    let st = lock(&p.stream().state);
    assert!(matches!(st.ring.front(), Some(HubEvent::Frame(f)) if f.is_keyframe() && f.dts() == 4000));
}

#[test]
fn timestamp_jump_is_not_lag_and_never_rewinds_a_viewer() {
    // A viewer one frame behind when the publisher's timeline jumps forward by
    // hours (ingest sends a Discontinuity first) is not lagging: it must get
    // every frame exactly once, not be sent back to the last keyframe.
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    let mut sub = hub.subscribe(&key).unwrap();
    for i in 0..10 {
        p.send(video(i * 40, i == 0));
    }
    let mut got = Vec::new();
    while got.iter().filter(|e| matches!(e, HubEvent::Frame(_))).count() < 9 {
        sub.try_recv_many(&mut got, 1).unwrap();
    }
    p.send(HubEvent::Discontinuity);
    for i in 0..10 {
        p.send(video(3 * 3_600_000 + i * 40, false));
    }
    got.extend(drain(&mut sub).unwrap());
    let dts: Vec<i64> =
        got.iter().filter_map(|e| if let HubEvent::Frame(f) = e { Some(f.dts()) } else { None }).collect();
    let want: Vec<i64> = (0..10).map(|i| i * 40).chain((0..10).map(|i| 3 * 3_600_000 + i * 40)).collect();
    assert_eq!(dts, want);
    assert_eq!(p.stream().stats.lag_skips.load(Ordering::Relaxed), 0);
}

#[test]
fn ring_is_bounded_by_bytes() {
    let hub = Hub::new(HubConfig { ring_bytes: 10_000, ..Default::default() });
    let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
    for i in 0..1000 {
        p.send(video(i * 40, i % 30 == 0));
    }
    assert!(lock(&p.stream().state).ring_bytes <= 10_000);
}

/// A waker that counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl futures_util::task::ArcWake for Wakes {
    fn wake_by_ref(me: &Arc<Self>) {
        me.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A viewer parked on `sub`: `woken()` says whether the stream woke it since it last parked.
struct Parked {
    wakes: Arc<Wakes>,
    seen: usize,
}

impl Parked {
    fn new() -> Self {
        Self { wakes: Arc::new(Wakes::default()), seen: 0 }
    }

    /// Takes what is available; parks when nothing is.
    fn poll(&mut self, sub: &mut Subscription) -> Vec<HubEvent> {
        let waker = futures_util::task::waker(self.wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Ok(true)) = sub.poll_recv_many(&mut cx, &mut out, 1000) {}
        self.seen = self.wakes.0.load(Ordering::SeqCst);
        out
    }

    fn woken(&self) -> bool {
        self.wakes.0.load(Ordering::SeqCst) > self.seen
    }
}

fn audio(pts: i64) -> HubEvent {
    HubEvent::Frame(Frame::Audio(AudioFrame { pts, data: Bytes::from_static(&[1]) }))
}

/// A stream with a config and a keyframe, and a parked viewer that took both.
fn stream_with_parked_viewer(merge_write_ms: u64) -> (Publisher, Subscription, Parked) {
    let hub = Hub::new(HubConfig { merge_write_ms, ..Default::default() });
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    p.send(video(0, true));
    let mut sub = hub.subscribe(&key).unwrap();
    let mut viewer = Parked::new();
    assert_eq!(viewer.poll(&mut sub).len(), 2);
    (p, sub, viewer)
}

#[test]
fn audio_rides_along_with_the_next_video_frame() {
    let (p, mut sub, mut viewer) = stream_with_parked_viewer(0);
    p.send(audio(10));
    p.send(audio(31));
    assert!(!viewer.woken(), "audio alone does not wake viewers of a video stream");
    p.send(video(40, false));
    assert!(viewer.woken());
    assert_eq!(viewer.poll(&mut sub).len(), 3, "the held audio comes with the video frame");
    // the video stalls: audio wakes viewers once 50 ms of it piled up
    for pts in [50, 71, 92] {
        p.send(audio(pts));
        assert!(!viewer.woken());
    }
    p.send(audio(113));
    assert!(viewer.woken());
    assert_eq!(viewer.poll(&mut sub).len(), 4);
}

#[test]
fn frozen_timestamps_still_reach_viewers() {
    let (p, mut sub, mut viewer) = stream_with_parked_viewer(50);
    let mut pushed = 0;
    while !viewer.woken() {
        p.send(video(0, false)); // a publisher whose timestamps never advance
        pushed += 1;
        assert!(pushed <= MAX_HELD_FRAMES, "never woken");
    }
    assert_eq!(viewer.poll(&mut sub).len(), pushed as usize);
}

#[test]
fn wakers_of_departed_viewers_do_not_pile_up() {
    let (p, _sub, _viewer) = stream_with_parked_viewer(50);
    // a stream that wakes nobody (silent publisher) while viewers come and go
    for _ in 0..10_000 {
        let mut sub = p.stream().subscribe();
        Parked::new().poll(&mut sub);
    }
    let st = lock(&p.stream().state);
    assert!(st.waiters.len() <= 2 * st.subscribers + 64, "{} waiters", st.waiters.len());
}

#[test]
fn merge_write_wakes_once_per_interval_of_video() {
    let (p, mut sub, mut viewer) = stream_with_parked_viewer(50);
    // 30 fps: every second frame wakes (33 ms < 50 ms <= 67 ms)
    let mut woke = Vec::new();
    for i in 1..=6 {
        p.send(video(i * 1000 / 30, false));
        if viewer.woken() {
            woke.push(i);
            let got = viewer.poll(&mut sub);
            assert!(!got.is_empty());
        }
    }
    assert_eq!(woke, vec![2, 4, 6]);
    // everything but frames wakes at once; the next frame after it too
    p.send(HubEvent::Metadata(Bytes::from_static(b"m")));
    assert!(viewer.woken());
    viewer.poll(&mut sub);
    p.send(video(7 * 1000 / 30, false));
    assert!(viewer.woken());
    viewer.poll(&mut sub);
    // a backwards step (a new timeline) wakes at once
    p.send(video(10, false));
    assert!(viewer.woken());
    // a viewer is registered once per wake-up however often it polls
    viewer.poll(&mut sub);
    viewer.poll(&mut sub);
    viewer.poll(&mut sub);
    assert_eq!(lock(&p.stream().state).waiters.len(), 1);
}

/// No wake-up is lost: viewers on other threads, parked and woken thousands of times
/// while the publisher pushes from its own thread, each receive every frame and the end.
#[test]
fn no_lost_wakeups_across_threads() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let hub = Hub::new(HubConfig { max_lag_ms: 1_000_000, ring_events: 100_000, ..Default::default() });
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    const FRAMES: i64 = 3000;
    let viewers: Vec<_> = (0..8)
        .map(|_| {
            let mut sub = hub.subscribe(&key).unwrap();
            rt.spawn(async move {
                let (mut frames, mut batch) = (0, Vec::new());
                loop {
                    batch.clear();
                    if !sub.recv_many(&mut batch, 7).await.unwrap() {
                        return frames;
                    }
                    frames += batch.iter().filter(|e| matches!(e, HubEvent::Frame(_))).count() as i64;
                }
            })
        })
        .collect();
    let publisher = std::thread::spawn(move || {
        for i in 0..FRAMES {
            p.send(video(i * 33, i % 60 == 0));
            if i % 3 == 0 {
                p.send(HubEvent::Frame(Frame::Audio(AudioFrame { pts: i * 33, data: Bytes::from_static(&[1]) })));
            }
            if i % 100 == 0 {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    });
    publisher.join().unwrap();
    rt.block_on(async {
        for v in viewers {
            let got = tokio::time::timeout(std::time::Duration::from_secs(10), v).await;
            assert_eq!(got.expect("a viewer was never woken").unwrap(), FRAMES + FRAMES / 3);
        }
    });
}

#[tokio::test]
async fn recv_wakes_on_publish() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    let mut sub = hub.subscribe(&key).unwrap();
    let h = tokio::spawn(async move { sub.recv().await });
    tokio::task::yield_now().await;
    p.send(video(0, true));
    let got = h.await.unwrap().unwrap();
    assert!(matches!(got, Some(HubEvent::Frame(_))));
}
