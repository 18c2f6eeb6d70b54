//! One task per live stream: it follows the stream's subscription, feeds the sans-IO
//! segmenter and hands finished segments to the store; and the driver that starts those
//! tasks (told of each new stream losslessly by the hub) and sleeps until the store's next
//! lifecycle deadline.

use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use super::store::{unix_ms, MIN_SWEEP_INTERVAL};
use super::{ts, Container, HlsStore, Segmenter, SegmenterConfig};
use crate::hub::{lock, Hub, HubEvent, Stream};

/// Follows every stream the hub starts, until `shutdown`.
pub async fn run(hub: Hub, store: HlsStore, shutdown: CancellationToken) {
    let mut new_streams = hub.watch_new_streams();
    let mut tasks = tokio::task::JoinSet::new();
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
                    let span = tracing::info_span!("hls", stream = %stream.key());
                    tasks.spawn(follow(stream, store.clone(), shutdown.clone()).instrument(span));
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

/// Segments one publish session of a stream.
async fn follow(stream: Arc<Stream>, store: HlsStore, shutdown: CancellationToken) {
    let key = stream.key().clone();
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
            Ok(Some(ev)) => ev,
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
    store.end(&key, &state, session, shutdown.is_cancelled()).await;
    info!("hls: playlist ended");
}
