//! Recording: a reader of a live stream, like a viewer, that writes it to disk as MP4.
//!
//! - Files are written as fragmented MP4 (`NAME-START.mp4.part`: the fMP4 muxer's
//!   initialization segment, then one `moof` + `mdat` per ~`fragment_ms`, each written and
//!   `fdatasync`ed as it is cut), so a crash or `kill -9` loses at most the fragment being
//!   written.
//! - When a file closes (the stream ends, the file reaches `max_duration_s` or
//!   `max_file_bytes` at a keyframe, the codecs change, the timeline breaks), it is finalized
//!   in place into a regular MP4 that every player seeks in (`proto::mux::mp4file`: the
//!   fragments' headers become `free` boxes and a full `moov` is appended) and renamed to
//!   `.mp4`.
//! - On start, the `.mp4.part` files a crash left are recovered: a torn last fragment is
//!   cut off and the rest finalized.
//! - The publisher never waits for the disk: the recorder reads its subscription like any
//!   viewer; while a write is slow the hub's ring holds the stream (bounded in bytes), and a
//!   recorder that falls too far behind skips to a keyframe like a lagging viewer (logged).
//!   An I/O error (disk full, read-only, a directory gone) ends that stream's recording
//!   (logged, counted); nothing else is affected.

pub mod clock;
mod file;
pub mod list;
pub mod playback;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::LiveSettings;
use crate::hub::{Hub, HubEvent, Stream};
use crate::media::{CodecConfig, Frame};
use crate::metrics::Metrics;
use livegate_proto::mux::Fmp4Muxer;

pub use file::{finalize, recover_dir};

/// `[record]` (every app) and `[apps.NAME.record]` (replaces it for that app).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Record every stream of the app(s).
    pub enabled: bool,
    /// Where files go: `DIR/APP/STREAM/STREAM-YYYYMMDD-HHMMSS.mp4`.
    pub dir: PathBuf,
    /// Fragment length: at most this much is lost on a crash.
    pub fragment_ms: u64,
    /// A file is closed and the next one started at the first keyframe past this length.
    pub max_duration_s: u64,
    /// ... or past this size.
    pub max_file_bytes: u64,
    /// Finalized files older than this many days are deleted (0: kept).
    pub keep_days: u64,
    /// The app's finalized files are deleted oldest first past this many bytes (0: no bound).
    pub keep_bytes: u64,
    /// Recording stops (and resumes by itself later) while the filesystem has less free
    /// space than this.
    pub min_free_bytes: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("recordings"),
            fragment_ms: 1000,
            max_duration_s: 3600,
            max_file_bytes: 4 << 30,
            keep_days: 0,
            keep_bytes: 0,
            min_free_bytes: 256 << 20,
        }
    }
}

impl RecordConfig {
    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            (100..=10_000).contains(&self.fragment_ms),
            "{section}.fragment_ms must be 100 to 10000, got {}",
            self.fragment_ms
        );
        anyhow::ensure!(self.max_duration_s >= 1, "{section}.max_duration_s must be at least 1");
        anyhow::ensure!(self.max_file_bytes >= 1 << 20, "{section}.max_file_bytes must be at least 1 MiB");
        anyhow::ensure!(!self.dir.as_os_str().is_empty(), "{section}.dir must not be empty");
        Ok(())
    }
}

/// Samples one file may hold (16 bytes each while it is finalized): 24 h of 60 fps video
/// and 48 kHz AAC, far past `max_duration_s`'s default (files an older build left).
const MAX_SAMPLES: usize = 24 * 3600 * (60 + 47);
/// A file gets a new one at the first keyframe past this many frames (2.6 h of 60 fps video
/// and 48 kHz AAC), and is cut at any frame at twice it: a flood of tiny frames (whose
/// timestamps stand still, so `max_duration_s` never comes) keeps each file's sample tables
/// at most ~32 MiB while it is finalized, and within [`MAX_SAMPLES`].
const SAMPLES_PER_FILE: usize = 1_000_000;

/// What `/api/streams` shows of a stream's recording.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RecordStatus {
    /// `recording`, `stopped` (ended, or stopped through the API) or `failed` (an I/O error).
    pub state: &'static str,
    /// The file being written (its path under the recording directory).
    pub file: Option<String>,
    /// Bytes written to it.
    pub bytes: u64,
    pub since_unix_ms: u64,
    pub last_error: Option<String>,
    /// Where it came from: `config` or `api`.
    pub source: &'static str,
}

/// A running recording: its status and a way to stop it.
#[derive(Debug)]
struct RecordHandle {
    status: std::sync::Mutex<RecordStatus>,
    stop: CancellationToken,
    run: Arc<std::sync::Mutex<Run>>,
    /// The stream, and where its state changes are reported (`record` on `/api/events`).
    stream: String,
    metrics: Arc<Metrics>,
}

/// The files one recording has written, in order: how a DVR window numbers its segments
/// across files (see `playback`).
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Segments of the files no longer listed here (the oldest, past [`RUN_FILES`]).
    pub dropped_segments: u64,
    /// Files no longer listed here.
    pub dropped_files: u64,
    pub files: std::collections::VecDeque<RunFile>,
}

/// One file of a [`Run`].
#[derive(Debug, Clone)]
pub struct RunFile {
    /// Its name as a URL gives it (`….mp4`).
    pub url_name: String,
    /// Its segments once it is finalized.
    pub segments: Option<u64>,
}

/// Files a [`Run`] lists.
const RUN_FILES: usize = 10_000;

impl RecordHandle {
    /// Sets the status; a change of state is reported.
    fn set(&self, f: impl FnOnce(&mut RecordStatus)) {
        let (before, after) = {
            let mut s = crate::hub::lock(&self.status);
            let before = s.state;
            f(&mut s);
            (before, s.clone())
        };
        if before != after.state {
            self.report(&after);
        }
    }

    fn report(&self, s: &RecordStatus) {
        let data = serde_json::json!({
            "stream": self.stream, "state": s.state, "file": s.file, "last_error": s.last_error,
        });
        self.metrics.events.emit("record", data);
    }
}

/// Why a recording could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("stream {0} is not live")]
    NotLive(crate::hub::StreamKey),
    #[error("stream {0} is being recorded already")]
    Already(crate::hub::StreamKey),
}

/// The recordings of every stream. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<RecorderInner>,
}

struct RecorderInner {
    hub: Hub,
    settings: Arc<LiveSettings>,
    metrics: Arc<Metrics>,
    active: std::sync::Mutex<std::collections::HashMap<crate::hub::StreamKey, Arc<RecordHandle>>>,
    playback: playback::Playback,
    auth: crate::auth::Authorizer,
}

impl Recorder {
    pub fn new(hub: Hub, settings: Arc<LiveSettings>, metrics: Arc<Metrics>, auth: crate::auth::Authorizer) -> Self {
        Self {
            inner: Arc::new(RecorderInner {
                hub,
                settings,
                metrics,
                active: Default::default(),
                playback: Default::default(),
                auth,
            }),
        }
    }

    /// Starts recording the live stream `key` with its app's `record` settings (whether
    /// `enabled` or not).
    /// The track streams of a multitrack publish (`NAME~N`, `NAME~aN`) are recorded with it,
    /// each to files of its own (a track that appears later is started when it does).
    pub fn start(&self, key: &crate::hub::StreamKey, source: &'static str) -> Result<RecordStatus, StartError> {
        let stream =
            self.inner.hub.get(key).filter(|s| !s.is_ended()).ok_or_else(|| StartError::NotLive(key.clone()))?;
        let status = self.spawn(stream, source)?;
        for track in self.tracks_of(key) {
            if let Err(e) = self.spawn(track, source) {
                debug!("track recording not started: {e}");
            }
        }
        Ok(status)
    }

    /// The live track streams of the publish `key`.
    fn tracks_of(&self, key: &crate::hub::StreamKey) -> Vec<Arc<Stream>> {
        let mut tracks: Vec<Arc<Stream>> = (self.inner.hub.streams().into_iter())
            .filter(|s| !s.is_ended() && s.key().split_track().is_some_and(|(main, _)| &main == key))
            .collect();
        tracks.sort_by(|a, b| a.key().name.cmp(&b.key().name));
        tracks
    }

    /// Whether `key` is being recorded now.
    fn recording(&self, key: &crate::hub::StreamKey) -> bool {
        crate::hub::lock(&self.inner.active).get(key).is_some_and(|h| crate::hub::lock(&h.status).state == "recording")
    }

    fn spawn(&self, stream: Arc<Stream>, source: &'static str) -> Result<RecordStatus, StartError> {
        let key = stream.key().clone();
        let config = self.inner.settings.get().apps.get(&key.app).record.clone();
        let now_ms = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let handle = Arc::new(RecordHandle {
            status: std::sync::Mutex::new(RecordStatus {
                state: "recording",
                file: None,
                bytes: 0,
                since_unix_ms: now_ms,
                last_error: None,
                source,
            }),
            stop: CancellationToken::new(),
            run: Default::default(),
            stream: key.to_string(),
            metrics: self.inner.metrics.clone(),
        });
        {
            let mut active = crate::hub::lock(&self.inner.active);
            if active.get(&key).is_some_and(|h| crate::hub::lock(&h.status).state == "recording") {
                return Err(StartError::Already(key));
            }
            active.insert(key.clone(), handle.clone());
        }
        let status = crate::hub::lock(&handle.status).clone();
        handle.report(&status);
        let (metrics, recorder) = (self.inner.metrics.clone(), self.clone());
        tokio::spawn(async move {
            info!(stream = %key, dir = %config.dir.display(), source, "recording");
            let hook = DoneHook {
                auth: recorder.inner.auth.clone(),
                settings: recorder.inner.settings.clone(),
                key: key.clone(),
            };
            match record(&stream, &config, &metrics, &handle, recorder.playback(), &hook).await {
                Ok(()) => {
                    handle.set(|s| s.state = "stopped");
                    info!(stream = %key, "recording ended");
                }
                Err(e) => {
                    metrics.limit_hit("record_io");
                    warn!(stream = %key, "recording stopped: {e:#}");
                    handle.set(|s| {
                        s.state = "failed";
                        s.last_error = Some(format!("{e:#}"));
                    });
                }
            }
            // a failed recording stays listed (its error) until the stream ends
            if crate::hub::lock(&handle.status).state != "failed" || stream.is_ended() {
                let mut active = crate::hub::lock(&recorder.inner.active);
                if active.get(&key).is_some_and(|h| Arc::ptr_eq(h, &handle)) {
                    active.remove(&key);
                }
            }
        });
        Ok(status)
    }

    /// Stops the recording of `key` (its file is finalized); false when there is none.
    /// Its track streams' recordings stop with it.
    pub fn stop(&self, key: &crate::hub::StreamKey) -> bool {
        let active = crate::hub::lock(&self.inner.active);
        let mut stopped = false;
        for (k, h) in active.iter() {
            let of_key = k == key || k.split_track().is_some_and(|(main, _)| &main == key);
            if of_key && crate::hub::lock(&h.status).state == "recording" {
                h.stop.cancel();
                stopped |= k == key;
            }
        }
        stopped
    }

    /// The recording of `key`, for `/api/streams`.
    pub fn status(&self, key: &crate::hub::StreamKey) -> Option<RecordStatus> {
        crate::hub::lock(&self.inner.active).get(key).map(|h| crate::hub::lock(&h.status).clone())
    }

    /// The files the recording of `key` has written so far (None: not being recorded).
    pub fn run(&self, key: &crate::hub::StreamKey) -> Option<Run> {
        let active = crate::hub::lock(&self.inner.active);
        let h = active.get(key).filter(|h| crate::hub::lock(&h.status).state == "recording")?;
        let run = crate::hub::lock(&h.run).clone();
        Some(run)
    }

    /// The index cache of recordings being played back.
    pub fn playback(&self) -> &playback::Playback {
        &self.inner.playback
    }

    /// Every directory recordings may be in (the default's and every app's).
    pub fn dirs(&self) -> Vec<PathBuf> {
        let s = self.inner.settings.get();
        let mut d: Vec<PathBuf> = s.apps.iter().map(|(_, p)| p.record.dir.clone()).collect();
        d.push(s.apps.get("").record.dir.clone());
        d.sort();
        d.dedup();
        d
    }

    /// The recording directory of `app`.
    pub fn dir_of(&self, app: &str) -> PathBuf {
        self.inner.settings.get().apps.get(app).record.dir.clone()
    }
}

/// Finalizes the `.mp4.part` files a crash left in the recording directories, then records
/// every stream of an app with recording on, until shutdown.
pub async fn run(recorder: Recorder, shutdown: CancellationToken) {
    let mut new_streams = recorder.inner.hub.watch_new_streams();
    for dir in recorder.dirs() {
        let recovered = tokio::task::spawn_blocking(move || recover_dir(&dir)).await;
        if let Ok(n) = recovered {
            if n > 0 {
                info!("recording: finalized {n} file(s) an earlier run left unfinished");
            }
        }
    }
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    loop {
        let stream = tokio::select! {
            _ = retention.tick() => {
                let settings = recorder.inner.settings.clone();
                let _ = tokio::task::spawn_blocking(move || sweep_all(&settings)).await;
                continue;
            }
            _ = shutdown.cancelled() => {
                // what is being written is finalized (within the shutdown grace; a file cut
                // short is recovered on the next start)
                let handles: Vec<_> = crate::hub::lock(&recorder.inner.active).values().cloned().collect();
                handles.iter().for_each(|h| h.stop.cancel());
                while handles.iter().any(|h| crate::hub::lock(&h.status).state == "recording") {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                return;
            }
            s = new_streams.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        // a track stream of a multitrack publish is recorded with its publish (to files of
        // its own), whether that was started by the config, the API or the callback
        let source = match stream.key().split_track() {
            Some((main, _)) if recorder.recording(&main) => "track",
            _ if recorder.inner.settings.get().apps.get(&stream.key().app).record.enabled => "config",
            _ => continue,
        };
        if let Err(e) = recorder.spawn(stream, source) {
            warn!("recording not started: {e}");
        }
    }
}

/// How often retention looks at every app's recordings (it also runs for an app whenever
/// one of its files is finalized).
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Retention for every app: the default policy over the apps without a section of their
/// own, each named app's over its own directory.
fn sweep_all(settings: &LiveSettings) {
    let s = settings.get();
    let named: Vec<String> = s.apps.iter().map(|(n, _)| n.to_string()).collect();
    let d = &s.apps.get("").record;
    file::sweep(&d.dir, None, &named, d.keep_days, d.keep_bytes);
    for (name, p) in s.apps.iter() {
        file::sweep(&p.record.dir, Some(&[name.to_string()]), &[], p.record.keep_days, p.record.keep_bytes);
    }
}

/// The open file of a recording.
struct Recording {
    file: Option<file::PartFile>,
    muxer: Fmp4Muxer,
    config: Option<CodecConfig>,
    /// DTS (ms) the open fragment started at.
    fragment_start: Option<i64>,
    /// DTS (ms) the open file started at.
    file_start: i64,
    has_video: bool,
    /// (keep_days, keep_bytes) of the app, applied when a file is finalized.
    retention: (u64, u64),
    /// When the open file started.
    file_started: SystemTime,
    /// Frames in the open file (its sample tables grow with them).
    samples: usize,
    hook: DoneHook,
    run: Arc<std::sync::Mutex<Run>>,
    playback: playback::Playback,
}

/// Who hears of a finalized file (`on_record_done`, the app's `[auth]` when it closes).
#[derive(Clone)]
struct DoneHook {
    auth: crate::auth::Authorizer,
    settings: Arc<LiveSettings>,
    key: crate::hub::StreamKey,
}

/// Media bytes an open fragment holds at most: the muxer keeps a fragment's frames until it
/// is cut, and a publisher whose timestamps stand still would otherwise never have it cut.
const FRAGMENT_MAX_BYTES: usize = 8 << 20;

/// What a buffered sample weighs besides its payload (the muxer's record of it and its
/// `trun` entry), against [`FRAGMENT_MAX_BYTES`].
const SAMPLE_WEIGHT: usize = 64;

/// How often a recording stopped by an I/O error (a full disk) tries again.
const RETRY: Duration = Duration::from_secs(5);

/// Records `stream` until it ends or the recording is stopped. An I/O error (a full or
/// read-only disk, a directory gone) or free space under `min_free_bytes` stops it with the
/// error in its status; it tries again every [`RETRY`] while the stream lives (first
/// finalizing a file the error left unfinished) and resumes in a new file.
async fn record(
    stream: &Arc<Stream>,
    config: &RecordConfig,
    metrics: &Metrics,
    handle: &RecordHandle,
    playback: &playback::Playback,
    hook: &DoneHook,
) -> anyhow::Result<()> {
    let dir = config.dir.join(&stream.key().app).join(&stream.key().name);
    let mut unfinished: Vec<PathBuf> = Vec::new();
    loop {
        let mut rec = Recording {
            file: None,
            muxer: Fmp4Muxer::new(),
            config: None,
            fragment_start: None,
            file_start: 0,
            has_video: false,
            retention: (config.keep_days, config.keep_bytes),
            file_started: SystemTime::now(),
            samples: 0,
            hook: hook.clone(),
            run: handle.run.clone(),
            playback: playback.clone(),
        };
        let mut error = record_once(stream, config, metrics, handle, &dir, &mut rec).await.err();
        // what the error left open: finalized if the disk lets it, else later
        if let Some(f) = rec.file.take() {
            let path = f.path().to_path_buf();
            match f.finish().await {
                Ok(fin) => finished(&rec, fin.as_ref()).await,
                Err(e) => {
                    unfinished.push(path);
                    error.get_or_insert(e);
                }
            }
        }
        let Some(e) = error else { return Ok(()) };
        metrics.limit_hit("record_io");
        warn!(stream = %stream.key(), "recording stopped: {e:#}; trying again every {RETRY:?} while the stream is live");
        handle.set(|s| {
            s.state = "failed";
            s.last_error = Some(format!("{e:#}"));
        });
        loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = handle.stop.cancelled() => return Err(e),
            }
            if stream.is_ended() {
                return Err(e);
            }
            let left = std::mem::take(&mut unfinished);
            unfinished = tokio::task::spawn_blocking(move || {
                left.into_iter().filter(|p| p.exists() && file::finalize(p).is_err()).collect()
            })
            .await
            .unwrap_or_default();
            if unfinished.is_empty() && file::space_left(&dir, config.min_free_bytes).is_ok() {
                break;
            }
        }
        info!(stream = %stream.key(), "recording resumes");
        handle.set(|s| s.state = "recording");
    }
}

async fn record_once(
    stream: &Arc<Stream>,
    config: &RecordConfig,
    metrics: &Metrics,
    handle: &RecordHandle,
    dir: &Path,
    rec: &mut Recording,
) -> anyhow::Result<()> {
    let mut sub = stream.subscribe();
    let mut skips = 0;
    let mut events = Vec::with_capacity(64);
    let fragment = i64::try_from(config.fragment_ms).unwrap_or(1000);
    let max_ms = i64::try_from(config.max_duration_s.saturating_mul(1000)).unwrap_or(i64::MAX);
    loop {
        let got = tokio::select! {
            got = sub.recv_many(&mut events, 64) => got,
            _ = handle.stop.cancelled() => break,
        };
        if sub.lag_skips() > skips {
            // the disk (or the muxer) kept the recorder behind: the hub skipped it ahead to
            // the latest keyframe; the hole is in the file (and its note)
            skips = sub.lag_skips();
            warn!(stream = %stream.key(), "recording fell behind the stream; skipped ahead to the latest keyframe");
            metrics.limit_hit("record_behind");
        }
        match got {
            Ok(true) => {}
            Ok(false) => break,
            Err(_evicted) => {
                // the disk kept the recorder too far behind: go on from the live edge (the
                // next keyframe), in the same file
                warn!(stream = %stream.key(), "recording fell behind the stream; a gap up to the next keyframe");
                metrics.limit_hit("record_behind");
                sub = stream.subscribe();
                skips = 0;
                rec.fragment_start = None;
                continue;
            }
        }
        for ev in events.drain(..) {
            match ev {
                HubEvent::Config(c) => {
                    let changed = rec.config.as_ref().is_some_and(|old| {
                        old.video.as_ref().map(|v| v.codec_string()) != c.video.as_ref().map(|v| v.codec_string())
                            || old.audio.as_ref().map(|a| a.codec_string())
                                != c.audio.as_ref().map(|a| a.codec_string())
                    });
                    if changed {
                        close(rec).await?;
                    }
                    rec.has_video = c.video.is_some();
                    if rec.muxer.set_config(&c).is_ok() {
                        rec.config = Some(c);
                    }
                }
                HubEvent::Discontinuity => {
                    // a new timeline: a new file
                    close(rec).await?;
                    rec.muxer.reset_timing();
                }
                HubEvent::Frame(f) => {
                    let dts = f.dts();
                    let starts = if rec.has_video { f.is_video() && f.is_keyframe() } else { true };
                    if rec.file.is_none() {
                        if !starts || rec.config.is_none() {
                            continue;
                        }
                        open(rec, dir, &stream.key().name, handle, dts, config.min_free_bytes).await?;
                    }
                    // a new file at a keyframe past the bounds
                    // (what the open fragment holds counts: with timestamps that stand still
                    // it is cut by bytes only)
                    let written = rec.file.as_ref().map_or(0, |f| f.len()) + rec.muxer.segment_len() as u64;
                    let past = dts - rec.file_start >= max_ms
                        || written >= config.max_file_bytes
                        || rec.samples >= SAMPLES_PER_FILE;
                    if starts && past {
                        close(rec).await?;
                        open(rec, dir, &stream.key().name, handle, dts, config.min_free_bytes).await?;
                    } else if rec.samples >= SAMPLES_PER_FILE * 2 {
                        // no keyframe for that long: the file ends here, the next starts at
                        // the next keyframe
                        warn!(stream = %stream.key(), "recording: {} frames without a keyframe; file cut", rec.samples);
                        close(rec).await?;
                        metrics.media_dropped("record_samples");
                        continue;
                    }
                    rec.samples += 1;
                    // cut the fragment before a frame that starts one (a video frame, or any
                    // frame of an audio-only stream) once it is long enough
                    let cuts = !rec.has_video || f.is_video();
                    // ...or, whatever the timestamps say (frozen ones never make a fragment
                    // long enough), once it holds FRAGMENT_MAX_BYTES
                    // (a sample weighs its bookkeeping too: a flood of tiny frames)
                    let full =
                        rec.muxer.segment_len() + rec.muxer.segment_samples() * SAMPLE_WEIGHT >= FRAGMENT_MAX_BYTES;
                    match rec.fragment_start {
                        Some(start) if (cuts && dts - start >= fragment) || full => {
                            write_fragment(rec, Some(dts), config.min_free_bytes).await?;
                            let bytes = rec.file.as_ref().map_or(0, |f| f.len());
                            handle.set(|s| s.bytes = bytes);
                            rec.fragment_start = Some(dts);
                        }
                        None => rec.fragment_start = Some(dts),
                        _ => {}
                    }
                    let added = match &f {
                        Frame::Video(v) => rec.muxer.prepare_video(v).map(|()| rec.muxer.commit_video(v)),
                        Frame::Audio(a) => rec.muxer.write_audio(a),
                    };
                    if added.is_err() {
                        metrics.media_dropped("record_mux");
                    }
                }
                HubEvent::EndOfStream => {}
                HubEvent::Metadata(_) => {}
            }
        }
    }
    close(rec).await
}

/// Opens a new file (the muxer's initialization segment written) whose media starts at
/// `dts`.
async fn open(
    rec: &mut Recording,
    dir: &Path,
    stream: &str,
    handle: &RecordHandle,
    dts: i64,
    min_free: u64,
) -> anyhow::Result<()> {
    let Some(init) = rec.muxer.init_segment().cloned() else { return Ok(()) };
    file::space_left(dir, min_free)?;
    let now = SystemTime::now();
    let f = file::PartFile::create(dir, stream, now, init).await?;
    rec.file_started = now;
    let shown = f.path().display().to_string();
    {
        let mut run = crate::hub::lock(&rec.run);
        if run.files.len() >= RUN_FILES {
            if let Some(old) = run.files.pop_front() {
                run.dropped_segments += old.segments.unwrap_or(0);
                run.dropped_files += 1;
            }
        }
        let url_name = f.path().file_name().map(|n| n.to_string_lossy().trim_end_matches(".part").to_string());
        run.files.push_back(RunFile { url_name: url_name.unwrap_or_default(), segments: None });
    }
    handle.set(|s| {
        s.file = Some(shown);
        s.bytes = f.len();
    });
    rec.file = Some(f);
    rec.samples = 0;
    rec.file_start = dts;
    rec.fragment_start = None;
    rec.muxer.start_segment();
    Ok(())
}

/// Writes the open fragment (durable when this returns), if the filesystem keeps
/// `min_free` bytes free after it.
async fn write_fragment(rec: &mut Recording, end_dts: Option<i64>, min_free: u64) -> anyhow::Result<()> {
    let bytes = rec.muxer.finish_segment(end_dts);
    rec.muxer.start_segment();
    if let Some(f) = rec.file.as_mut() {
        if !bytes.is_empty() {
            if let Some(dir) = f.path().parent() {
                file::space_left(dir, min_free.saturating_add(bytes.len() as u64))?;
            }
            f.append(bytes).await?;
        }
    }
    Ok(())
}

/// Writes what is buffered and finalizes the open file, if any.
async fn close(rec: &mut Recording) -> anyhow::Result<()> {
    if rec.file.is_some() {
        // the last fragment is written whatever the floor: the file is whole
        write_fragment(rec, None, 0).await?;
    }
    rec.fragment_start = None;
    if let Some(f) = rec.file.take() {
        let path = f.finish().await?;
        finished(rec, path.as_ref()).await;
    }
    Ok(())
}

/// What follows a file's finalization (None: it held nothing and was removed): the run's
/// count of its segments, the log line, `on_record_done`, and retention for its app.
async fn finished(rec: &Recording, fin: Option<&file::Finalized>) {
    // the run learns the file's segments (a DVR window numbers on from them); a file that
    // held nothing was removed
    let segments = match fin {
        Some(fin) => {
            let (p, pb) = (fin.path.clone(), rec.playback.clone());
            let ix = tokio::task::spawn_blocking(move || pb.index(&p)).await;
            ix.ok().and_then(Result::ok).map(|ix| ix.segments().len() as u64)
        }
        None => None,
    };
    {
        let mut run = crate::hub::lock(&rec.run);
        match (fin.is_some(), run.files.back_mut()) {
            (true, Some(last)) => last.segments = Some(segments.unwrap_or(0)),
            (false, Some(_)) => {
                run.files.pop_back();
            }
            _ => {}
        }
    }
    let Some(fin) = fin else { return };
    info!(file = %fin.path.display(), duration_s = fin.duration_s, gaps = fin.gaps.len(), "recording file finalized");
    let key = &rec.hook.key;
    let settings = rec.hook.settings.get();
    let start_ms = rec.file_started.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    let body = serde_json::json!({
        "app": key.app,
        "stream": key.name,
        "path": fin.path.display().to_string(),
        "start": clock::format_time(start_ms),
        "duration": round(fin.duration_s),
        "bytes": fin.bytes,
        "codecs": fin.codecs,
        "gaps": fin.gaps.iter().map(|g| serde_json::json!({"at_s": round(g.at_s), "duration_s": round(g.duration_s)})).collect::<Vec<_>>(),
    });
    rec.hook.auth.notify_record_done(&settings.apps.get(&key.app).auth, &body);
    // retention for this stream's app (DIR/APP/STREAM/FILE)
    let (keep_days, keep_bytes) = rec.retention;
    if let Some(app_dir) = fin.path.parent().and_then(Path::parent) {
        let (dir, app) =
            (app_dir.parent().map(Path::to_path_buf), app_dir.file_name().map(|a| a.to_string_lossy().into_owned()));
        if let (Some(dir), Some(app)) = (dir, app) {
            let _ =
                tokio::task::spawn_blocking(move || file::sweep(&dir, Some(&[app]), &[], keep_days, keep_bytes)).await;
        }
    }
}

/// A recording's file name: `STREAM-YYYYMMDD-HHMMSS` (UTC) with a counter when taken.
fn file_stem(stream: &str, at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = clock::civil_from_days(days as i64);
    format!("{stream}-{y:04}{m:02}{d:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// `dir/stem.mp4.part`, or `dir/stem-N.mp4.part` when the name (or its finalized file) is
/// taken.
fn free_name(dir: &Path, stem: &str) -> PathBuf {
    for n in 0..1000u32 {
        let name = if n == 0 { stem.to_string() } else { format!("{stem}-{n}") };
        let part = dir.join(format!("{name}.mp4.part"));
        if !part.exists() && !dir.join(format!("{name}.mp4")).exists() {
            return part;
        }
    }
    dir.join(format!("{stem}-{}.mp4.part", rand::random::<u32>()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_carry_the_stream_and_its_start_in_utc() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_647_860);
        assert_eq!(file_stem("demo", t), "demo-20261207-125100");
    }
}
