//! Unit tests of the locked stream: one publisher per key, viewer counting, parked viewers
//! woken without loss. The ring and lag policy are tested in `fanout::tests`.

use std::sync::atomic::AtomicUsize;
use std::task::{Context, Poll};

use super::super::*;

use super::*;
use crate::hub::fanout::MAX_HELD_FRAMES;
use crate::hub::testutil::{audio, config as cfg, video};
use crate::media::{AudioFrame, Frame};

fn peer() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
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
fn at_shutdown_streams_end_for_their_viewers_and_no_publish_is_taken() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    let mut sub = p.stream().subscribe();
    hub.end_for_viewers();
    // what the viewer had not read, then the end
    let got = drain(&mut sub).unwrap();
    assert!(matches!(got.first(), Some(HubEvent::Config(_))), "{got:?}");
    assert_eq!(got.last(), Some(&HubEvent::EndOfStream));
    assert!(matches!(sub.try_recv_many(&mut Vec::new(), 10), Ok(false)), "ended");
    // no stream starts (or resumes) that would not be ended
    assert!(matches!(hub.publish(StreamKey::new("live", "b"), peer()), Err(PublishError::ShuttingDown)));
    drop(p);
    assert!(matches!(hub.publish(key, peer()), Err(PublishError::ShuttingDown)));
}

#[test]
fn viewer_limit_counts_viewers_until_they_go() {
    let hub = Hub::new(HubConfig::default());
    let p = hub.publish(StreamKey::new("live", "a"), peer()).unwrap();
    let s = p.stream();
    let a = s.admit_viewer(2).unwrap();
    let b = s.admit_viewer(2).unwrap();
    assert!(s.admit_viewer(2).is_none());
    drop(a);
    assert_eq!(s.viewers(), 1);
    let _c = s.admit_viewer(2).unwrap();
    assert_eq!(s.stats.viewers(), 2);
    drop(b);
    assert!(s.admit_viewer(2).is_some());
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

/// The lag policy itself is the fan-out core's (see `fanout::tests`); the stream counts it.
#[test]
fn lag_skips_and_evictions_are_counted() {
    let hub = Hub::new(HubConfig { ring_events: 50, max_lag_skips: 1, ..Default::default() });
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    let mut sub = hub.subscribe(&key).unwrap();
    let feed = |from: i64| (from..from + 100).for_each(|i| p.send(video(i * 40, i % 25 == 0)));
    let mut out = Vec::new();
    feed(0); // the ring holds only 50: the viewer fell out of it
    assert!(sub.try_recv_many(&mut out, 1).unwrap());
    feed(100);
    assert_eq!(sub.try_recv_many(&mut out, 1), Err(Evicted));
    assert_eq!(p.stream().stats.lag_skips.load(Ordering::Relaxed), 2);
    assert_eq!(p.stream().stats.evictions.load(Ordering::Relaxed), 1);
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

/// When to wake is the fan-out core's decision (see `fanout::tests`); the stream wakes the
/// parked viewers then, and what was held back comes along.
#[test]
fn held_frames_come_along_with_the_wake_up() {
    let (p, mut sub, mut viewer) = stream_with_parked_viewer(0);
    p.send(audio(10));
    p.send(audio(31));
    assert!(!viewer.woken(), "audio alone does not wake viewers of a video stream");
    p.send(video(40, false));
    assert!(viewer.woken());
    assert_eq!(viewer.poll(&mut sub).len(), 3, "the held audio comes with the video frame");
    let mut pushed = 0;
    while !viewer.woken() {
        p.send(video(40, false)); // a publisher whose timestamps never advance
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
fn a_viewer_is_registered_once_per_wake_up() {
    let (p, mut sub, mut viewer) = stream_with_parked_viewer(50);
    p.send(video(100, false));
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

#[test]
fn an_eager_subscription_is_woken_by_every_event() {
    let hub = Hub::new(HubConfig { merge_write_ms: 50, ..Default::default() });
    let key = StreamKey::new("live", "a");
    let p = hub.publish(key.clone(), peer()).unwrap();
    p.send(HubEvent::Config(cfg()));
    p.send(video(0, true));
    let mut batched = hub.subscribe(&key).unwrap();
    let mut eager = p.stream().subscribe_eager();
    let (mut b, mut e) = (Parked::new(), Parked::new());
    b.poll(&mut batched);
    e.poll(&mut eager);
    p.send(audio(10)); // audio of a video stream: batched viewers wait for the next video frame
    assert!(!b.woken());
    assert!(e.woken(), "the eager subscription hears of it at once");
    assert_eq!(e.poll(&mut eager).len(), 1);
    p.send(video(33, false)); // within merge_write_ms: batched viewers still wait
    assert!(!b.woken() && e.woken());
}

#[tokio::test]
async fn a_publisher_that_comes_back_within_the_grace_continues_the_stream() {
    let hub = Hub::new(HubConfig::default());
    let key = StreamKey::new("live", "a");
    let grace = std::time::Duration::from_millis(300);
    let gop = GopCacheConfig::default();
    let p = hub.publish_with(key.clone(), peer(), Credential::OPEN, gop.clone(), grace).unwrap();
    p.send(HubEvent::Config(cfg()));
    p.send(video(1000, true));
    let stream = p.stream().clone();
    let mut sub = stream.subscribe();
    drain(&mut sub).unwrap();
    drop(p);
    // waiting: still listed, no end for the viewer, a new viewer may join (the last GOP)
    assert!(stream.waiting_since().is_some());
    assert!(Arc::ptr_eq(&hub.get(&key).unwrap(), &stream));
    assert!(drain(&mut sub).unwrap().is_empty(), "nothing, not the end");
    let mut late = stream.subscribe();
    assert!(drain(&mut late).unwrap().iter().any(|e| matches!(e, HubEvent::Frame(f) if f.is_keyframe())));
    // back: the same stream, its clock at 0, rebased after the last frame
    let p =
        hub.publish_with(key.clone(), "127.0.0.1:2".parse().unwrap(), Credential::OPEN, gop.clone(), grace).unwrap();
    assert!(Arc::ptr_eq(p.stream(), &stream));
    assert_eq!((stream.reconnects(), stream.waiting_since()), (1, None));
    p.send(HubEvent::Config(cfg()));
    p.send(video(0, true));
    let got = drain(&mut sub).unwrap();
    assert!(!got.iter().any(|e| matches!(e, HubEvent::Config(_))), "the same config is not sent again: {got:?}");
    let dts: Vec<i64> =
        got.iter().filter_map(|e| if let HubEvent::Frame(f) = e { Some(f.dts()) } else { None }).collect();
    assert_eq!(dts.len(), 1);
    assert!(dts[0] > 1000 && dts[0] < 1000 + 2000, "continues after 1000 by the pause: {dts:?}");
    // gone again, and nobody comes back: the stream ends after the grace
    drop(p);
    assert!(!drain(&mut sub).unwrap().contains(&HubEvent::EndOfStream));
    tokio::time::sleep(grace * 2).await;
    assert!(drain(&mut sub).unwrap().contains(&HubEvent::EndOfStream));
    assert!(hub.get(&key).is_none() && stream.expired());
    // an admin kick ends at once
    let p = hub.publish_with(key.clone(), peer(), Credential::OPEN, gop, grace).unwrap();
    p.stream().kick_and_end("admin");
    drop(p);
    assert!(hub.get(&key).is_none());
}

fn at(ip: &str) -> SocketAddr {
    format!("{ip}:1935").parse().unwrap()
}

#[tokio::test]
async fn waiting_streams_do_not_take_live_slots_and_are_bounded_per_address_and_in_all() {
    let limits = StreamLimits { max_streams: 3, max_waiting_streams: 4, max_waiting_streams_per_ip: 2 };
    let hub = Hub::with_limits(HubConfig::default(), limits, Arc::new(NoObserver));
    let (gop, grace) = (GopCacheConfig::default(), Duration::from_secs(60));
    let publish = |name: &str, ip: &str| {
        hub.publish_with(StreamKey::new("live", name), at(ip), Credential::OPEN, gop.clone(), grace)
    };
    // an attacker publishes new names and leaves, over and over: ten streams wait for it
    for i in 0..10 {
        drop(publish(&format!("ghost{i}"), "10.0.0.66").expect("a waiting stream takes no live slot"));
    }
    let waiting = |ip: &str| {
        let main = |s: &&Arc<Stream>| s.key().split_track().is_none();
        let of = |s: &&Arc<Stream>| s.waiting_peer().is_some_and(|(_, p)| p == at(ip));
        hub.streams().iter().filter(main).filter(of).map(|s| s.key().name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(waiting("10.0.0.66"), ["ghost8", "ghost9"], "the address keeps its newest two");
    assert_eq!(hub.live_publishes(), 0);
    // honest publishes all get live slots, up to max_streams
    let honest: Vec<_> = (0..3).map(|i| publish(&format!("honest{i}"), "10.0.0.1").unwrap()).collect();
    assert_eq!(publish("one-more", "10.0.0.2").err(), Some(PublishError::TooManyStreams(3)));
    // a multitrack publish's track streams ride on it: not counted
    drop(honest);
    let main = publish("multi", "10.0.0.3").unwrap();
    let tracks: Vec<_> = (1..8u8)
        .flat_map(|t| [StreamKey::new("live", "multi").track(t), StreamKey::new("live", "multi").audio_track(t)])
        .map(|k| hub.publish_with(k, at("10.0.0.3"), Credential::OPEN, gop.clone(), grace).unwrap())
        .collect();
    for t in 1..8 {
        main.stream().add_track(Track::Video(t));
        main.stream().add_track(Track::Audio(t));
    }
    assert_eq!(hub.live_publishes(), 1, "one publish, 15 streams");
    // in all: 2 of the attacker's + 3 honest + the multitrack one would be 6 waiting; past 4,
    // the address with the most waiting gives up its oldest first
    drop(main);
    drop(tracks);
    assert_eq!(hub.streams().iter().filter(|s| s.key().name.starts_with("multi~")).count(), 14, "its tracks wait too");
    // the attacker's address and the honest one had two each: of equals, the older went
    assert_eq!(waiting("10.0.0.66"), ["ghost9"]);
    assert_eq!(waiting("10.0.0.1"), ["honest1", "honest2"]);
    assert_eq!(waiting("10.0.0.3"), ["multi"]);
    drop(publish("honest9", "10.0.0.9").unwrap());
    assert_eq!(waiting("10.0.0.1"), ["honest2"], "the address with the most gave up its oldest");
    let left = hub.streams().iter().filter(|s| s.waiting_peer().is_some() && s.key().split_track().is_none()).count();
    assert_eq!(left, 4, "never more than max_waiting_streams wait");
    // a waiting stream ended early takes its track streams with it
    let limits = StreamLimits { max_streams: 3, max_waiting_streams: 4, max_waiting_streams_per_ip: 1 };
    hub.set_limits(limits);
    drop(publish("multi-evicter", "10.0.0.3").unwrap());
    assert!(hub.get(&StreamKey::new("live", "multi")).is_none(), "the older one of the address ended");
    assert_eq!(hub.streams().iter().filter(|s| s.key().name.starts_with("multi~")).count(), 0, "with its tracks");
}

#[tokio::test]
async fn only_the_credential_a_stream_was_published_with_continues_it_within_the_grace() {
    let hub = Hub::new(HubConfig::default());
    let (gop, grace) = (GopCacheConfig::default(), Duration::from_millis(300));
    let key = StreamKey::new("live", "a");
    let (a, b) = (Credential::of(&["key-a"]), Credential::of(&["key-b"]));
    let publish = |c: Credential| hub.publish_with(key.clone(), peer(), c, gop.clone(), grace);
    let p = publish(a).unwrap();
    let stream = p.stream().clone();
    assert!(!stream.admits(&b) && stream.admits(&a), "another key may not take it over");
    drop(p);
    assert_eq!(publish(b).err(), Some(PublishError::WaitingForPublisher(key.clone())));
    assert_eq!(publish(Credential::OPEN).err(), Some(PublishError::WaitingForPublisher(key.clone())));
    let p = publish(a).expect("the same key continues it");
    assert!(Arc::ptr_eq(p.stream(), &stream) && stream.reconnects() == 1);
    drop(p);
    tokio::time::sleep(grace * 2).await;
    let p = publish(b).expect("after the grace another key publishes a new stream");
    assert!(!Arc::ptr_eq(p.stream(), &stream));
    drop(p);
    // a stream published openly (before a reload closed publishing) is continued by anyone admitted
    let key = StreamKey::new("live", "open");
    drop(hub.publish_with(key.clone(), peer(), Credential::OPEN, gop.clone(), grace).unwrap());
    assert!(hub.publish_with(key, peer(), b, gop.clone(), grace).is_ok());
}
