//! One task per live stream: it follows the stream's subscription, feeds the sans-IO
//! segmenter and hands finished segments to the store; and the driver that starts those
//! tasks (told of each new stream losslessly by the hub) and sleeps until the store's next
//! lifecycle deadline.

use std::sync::{Arc, Weak};
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::store::{unix_ms, MIN_SWEEP_INTERVAL};
use super::{ts, Container, HlsStore, Segmenter, SegmenterConfig};
use crate::hub::{lock, Hub, HubEvent, Stream, StreamKey, Track};
use crate::media::CodecConfig;

/// What a playlist carries of its stream's tracks. A multitrack publish is a ladder of
/// video-only variants and audio-only renditions (players such as hls.js cannot add an
/// alternative audio track to fMP4 segments that already hold one): its track streams
/// (`NAME~N`, `NAME~aN`) and the publish's own video and audio (`NAME~0`, `NAME~a0`) are
/// segmented apart; the publish's muxed playlist (`NAME`) stays for players of one stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Both,
    Video,
    Audio,
}

impl Media {
    fn for_key(key: &StreamKey) -> Self {
        match key.split_track() {
            Some((_, Track::Video(_))) => Media::Video,
            Some((_, Track::Audio(_))) => Media::Audio,
            None => Media::Both,
        }
    }

    /// `ev` as this playlist sees it; None when it carries nothing of it (a configuration
    /// without this playlist's track is held back until one has it).
    fn filter(self, ev: HubEvent) -> Option<HubEvent> {
        match (self, ev) {
            (Media::Both, ev) => Some(ev),
            (_, HubEvent::Frame(f)) if f.is_video() != (self == Media::Video) => None,
            (Media::Video, HubEvent::Config(c)) => {
                c.video.is_some().then(|| HubEvent::Config(CodecConfig { audio: None, ..c }))
            }
            (Media::Audio, HubEvent::Config(c)) => {
                c.audio.is_some().then(|| HubEvent::Config(CodecConfig { video: None, video_metadata: None, ..c }))
            }
            (_, ev) => Some(ev),
        }
    }
}

/// Follows every stream the hub starts, until `shutdown`.
pub async fn run(hub: Hub, store: HlsStore, shutdown: CancellationToken) {
    let mut new_streams = hub.watch_new_streams();
    let mut tasks = tokio::task::JoinSet::new();
    // multitrack publishes whose own video and audio have playlists of their own
    let mut ladders: Vec<Weak<Stream>> = Vec::new();
    let mut last_sweep = Instant::now();
    loop {
        // sleep until the next deadline (none: until something is scheduled); sweeps at
        // most every 250 ms, since deadlines of many streams come close together
        let rescheduled = store.inner.rescheduled.notified();
        let wake = store.poll_timeout().map(|at| at.max(last_sweep + MIN_SWEEP_INTERVAL));
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = rescheduled => {}
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now).into()), if wake.is_some() => {
                last_sweep = Instant::now();
                store.sweep(last_sweep, false).await;
            }
            started = new_streams.recv() => match started {
                Some(stream) if store.policy(stream.key()).enabled => {
                    let key = stream.key().clone();
                    // a track of a multitrack publish: the publish becomes a ladder, whose
                    // first variant and first audio rendition are its own video and audio
                    if let Some(base) = key.split_track().and_then(|(base, _)| hub.get(&base)) {
                        ladders.retain(|w| w.strong_count() > 0);
                        if !ladders.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&base))) {
                            ladders.push(Arc::downgrade(&base));
                            for (own, media) in [(base.key().track(0), Media::Video), (base.key().audio_track(0), Media::Audio)] {
                                let span = tracing::info_span!("hls", stream = %own);
                                tasks.spawn(follow(base.clone(), own, media, store.clone(), shutdown.clone()).instrument(span));
                            }
                        }
                    }
                    let span = tracing::info_span!("hls", stream = %key);
                    let media = Media::for_key(&key);
                    tasks.spawn(follow(stream, key, media, store.clone(), shutdown.clone()).instrument(span));
                }
                Some(_) => {}
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // let every stream flush its last segment and mark its playlist ended
    while tasks.join_next().await.is_some() {}
    store.sweep(Instant::now(), true).await;
}

/// Segments one publish session of a stream (what `media` says of it) as the playlist of
/// `key`.
async fn follow(stream: Arc<Stream>, key: StreamKey, media: Media, store: HlsStore, shutdown: CancellationToken) {
    // Low-Latency HLS finishes a part when the next frame arrives: be woken for every
    // frame, not in the viewers' merged batches (segments can wait for the batch)
    let eager = store.policy(&key).parts().is_some();
    let subscribe = |s: &Arc<Stream>| if eager { s.subscribe_eager() } else { s.subscribe() };
    let mut sub = subscribe(&stream);
    // MPEG-TS carries H.264/AAC only: the container follows the first codec configuration,
    // so the playlist starts when it arrives (the latest metadata before it is kept)
    let mut container = store.policy(&key).variant.container();
    let mut early = Vec::new();
    while early.last().is_none_or(|ev| !matches!(ev, HubEvent::Config(_) | HubEvent::EndOfStream)) {
        let ev = tokio::select! {
            _ = shutdown.cancelled() => break,
            ev = sub.recv() => ev,
        };
        let ev = match ev {
            Ok(Some(ev)) => match media.filter(ev) {
                Some(ev) => Ok(Some(ev)),
                None => continue,
            },
            other => other,
        };
        match ev {
            Ok(Some(HubEvent::Config(c))) => {
                if container == Container::MpegTs && !ts::carries(&c) {
                    container = Container::Fmp4;
                    let video = c.video.as_ref().map(|v| v.codec_string());
                    let audio = c.audio.as_ref().map(|a| a.codec_string());
                    info!(?video, ?audio, "hls: MPEG-TS cannot carry these codecs; serving fMP4 segments instead");
                }
                early.push(HubEvent::Config(c));
            }
            // before the first configuration only metadata comes (frames wait for their
            // sequence header): keep the latest, so a publisher that sends nothing else
            // cannot make this grow
            Ok(Some(ev @ HubEvent::Metadata(_))) => {
                early.retain(|e| !matches!(e, HubEvent::Metadata(_)));
                early.push(ev);
            }
            Ok(Some(HubEvent::EndOfStream)) => early.push(HubEvent::EndOfStream),
            // nothing else precedes a configuration (the segmenter would drop it anyway)
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                warn!("hls: {e}; resubscribing");
                early.clear();
                sub = subscribe(&stream);
            }
        }
    }
    let (state, session, resumed, dropped) = store.begin(&key, container);
    for (old, names) in dropped {
        store.remove_files(&old, &names).await;
    }
    let cfg = store.policy(&key);
    let mut segmenter = Segmenter::new(
        SegmenterConfig {
            container,
            part_target_ms: cfg.parts().filter(|_| container == Container::Fmp4),
            target_duration_ms: cfg.target_duration_ms,
            max_segment_bytes: cfg.max_segment_bytes,
            ..SegmenterConfig::default()
        },
        lock(&state).playlist.next_sequence(),
    );
    if resumed {
        segmenter.lock_target_duration(lock(&state).playlist.target_duration_secs());
        segmenter.mark_discontinuity();
        info!("hls: republish continues the playlist with a discontinuity");
    }
    let mut early = early.into_iter();
    let mut errors = 0u64;
    loop {
        let ev = match early.next() {
            Some(ev) => Ok(Some(ev)),
            None => tokio::select! {
                _ = shutdown.cancelled() => break,
                ev = sub.recv() => ev,
            },
        };
        let ev = match ev {
            Ok(Some(ev)) => match media.filter(ev) {
                Some(ev) => ev,
                None => continue,
            },
            Ok(None) => break,
            Err(e) => {
                warn!("hls: {e}; resubscribing");
                sub = subscribe(&stream);
                segmenter.mark_discontinuity();
                continue;
            }
        };
        let end = ev == HubEvent::EndOfStream;
        let pushed = segmenter.push(&ev, unix_ms());
        // a segment's parts come before the segment (its last part is finished with it)
        while let Some(part) = segmenter.poll_part() {
            store.add_part(&key, &state, part);
        }
        match pushed {
            Ok(Some(seg)) => {
                if seg.byte_limited {
                    store.inner.metrics.limit_hit("hls_segment_bytes");
                }
                // fixes the playlist's target at the first segment; later calls are no-ops
                lock(&state).playlist.set_target_duration(segmenter.target_duration_secs());
                store.add_segment(&key, &state, seg).await;
            }
            Ok(None) => {}
            Err(e) => {
                if matches!(e, crate::hls::MuxError::H264(crate::media::h264::H264Error::TooManyNalus(_))) {
                    store.inner.metrics.limit_hit("h264_nal_units");
                }
                errors += 1;
                if errors <= 3 || errors.is_multiple_of(1000) {
                    warn!(count = errors, "hls: dropping a frame: {e}");
                }
            }
        }
        if end {
            break;
        }
    }
    let last = segmenter.flush();
    while let Some(part) = segmenter.poll_part() {
        store.add_part(&key, &state, part);
    }
    if let Some(seg) = last {
        store.add_segment(&key, &state, seg).await;
    }
    // a stream that waited out its reconnect grace already gave the publisher its chance:
    // the playlist ends now, not `endlist_delay_ms` later
    store.end(&key, &state, session, shutdown.is_cancelled() || stream.expired()).await;
    info!("hls: playlist ended");
}
