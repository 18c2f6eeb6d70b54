//! Recordings played back over HTTP (the reading is `record::playback`'s):
//!
//! - `GET`/`HEAD /recordings/APP/STREAM/FILE.mp4`: the file (`files`), or with `?init` /
//!   `?seg=N` its initialization segment / segment N (what the playlists below name; a file
//!   still being recorded is found under its final name too);
//! - `GET /APP/STREAM.m3u8?start=…[&end=…|&duration=…]`: an HLS playlist of that range;
//! - `GET /APP/STREAM.m3u8?dvr`: the stream's last `[apps.NAME.hls] dvr_window_s` while it
//!   is recorded;
//! - `GET /APP/STREAM.mp4?start=…[&end=…|&duration=…]`: the range as one fragmented MP4.
//!
//! All of them behind the app's play keys.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::SystemTime;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_DISPOSITION, CONTENT_LENGTH};
use hyper::{Response, StatusCode};
use tracing::warn;

use super::path::split_path;
use super::response::{full, keyed, not_found, play_key_refusal, text};
use super::{Body, HttpContext};
use crate::auth::query_param;
use crate::hub::{valid_name, valid_stream_name, StreamKey};
use crate::record::clock::parse_time;
use crate::record::list::{stream_files, FileRef};
use crate::record::playback::{self, Kind, Listed};

/// The longest range one request may ask for (seconds).
const MAX_RANGE_S: f64 = 24.0 * 3600.0;

/// Whether a playlist or `.mp4` request asks for recorded media (`start=` or `dvr`).
pub(crate) fn wants_recorded(query: &str) -> bool {
    query.split('&').any(|p| p.starts_with("start=") || p == "dvr" || p.starts_with("dvr="))
}

fn now_unix() -> f64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// The app's play keys (None: allowed; Some: the refusal).
fn check(ctx: &HttpContext, app: &str, stream: &str, peer: SocketAddr, query: &str) -> Option<Response<Body>> {
    play_key_refusal(ctx, app, stream, peer, "recording", query)
}

/// A time in the query (RFC 3339 or Unix seconds), percent-decoded.
fn time_param(query: &str, name: &str) -> Result<Option<f64>, &'static str> {
    match query_param(query, name) {
        None => Ok(None),
        Some(raw) => super::api::percent_decode(raw)
            .and_then(|v| parse_time(&v))
            .map(Some)
            .ok_or("bad time: use RFC 3339 (2026-12-07T12:51:00Z) or Unix seconds\n"),
    }
}

/// `start=` and `end=` or `duration=` (seconds): the range asked for; `end` defaults to
/// now. Err: why it is a bad request.
fn range_of(query: &str) -> Result<(f64, f64), &'static str> {
    let start = time_param(query, "start")?.ok_or("start= is required\n")?;
    let end = match (time_param(query, "end")?, query_param(query, "duration")) {
        (Some(_), Some(_)) => return Err("give end= or duration=, not both\n"),
        (Some(end), None) => end,
        (None, Some(d)) => match d.parse::<f64>() {
            Ok(d) if d.is_finite() && d > 0.0 => start + d,
            _ => return Err("duration= must be a positive number of seconds\n"),
        },
        (None, None) => now_unix(),
    };
    if end <= start {
        return Err("the range ends before it starts\n");
    }
    if end - start > MAX_RANGE_S {
        return Err("a range is at most 24 hours\n");
    }
    Ok((start, end))
}

/// The directory of a stream's recordings; None for names that are not a stream's.
fn stream_dir(ctx: &HttpContext, app: &str, stream: &str) -> Option<PathBuf> {
    (valid_name(app) && valid_stream_name(stream)).then(|| ctx.svc.recorder.dir_of(app).join(app).join(stream))
}

/// The files of `stream` that may hold media in `from..to` (the newest
/// [`playback::MAX_FILES_PER_REQUEST`]), indexed and open (blocking).
fn indexed(pb: &playback::Playback, files: Vec<FileRef>, from: f64, to: f64) -> Vec<Listed> {
    let mut wanted = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let Some(start) = f.start_unix else { continue };
        // a file ends before the next one starts
        let next = files[i + 1..].iter().find_map(|g| g.start_unix);
        if start < to && !next.is_some_and(|n| n <= from) {
            wanted.push(f);
        }
    }
    let skip = wanted.len().saturating_sub(playback::MAX_FILES_PER_REQUEST);
    let mut out = Vec::new();
    for f in wanted.into_iter().skip(skip) {
        match pb.open(&f.path) {
            Ok((index, open)) => out.push(Listed { file: f.clone(), index, open }),
            Err(e) => warn!(file = %f.path.display(), "recording not readable for playback: {e:#}"),
        }
    }
    out
}

/// `GET /APP/STREAM.m3u8?start=…` or `?dvr`.
pub(crate) async fn playlist(
    app: &str,
    stream: &str,
    query: &str,
    peer: SocketAddr,
    ctx: &HttpContext,
) -> Response<Body> {
    if let Some(refusal) = check(ctx, app, stream, peer, query) {
        return refusal;
    }
    let Some(dir) = stream_dir(ctx, app, stream) else { return not_found() };
    let pb = ctx.svc.recorder.playback().clone();
    let dvr = !query.split('&').any(|p| p.starts_with("start="));
    let body = if dvr {
        let window = ctx.svc.settings.get().apps.get(app).hls.dvr_window_s;
        if window == 0 {
            return text(StatusCode::NOT_FOUND, "no DVR window for this app (hls.dvr_window_s)\n");
        }
        let Some(run) = ctx.svc.recorder.run(&StreamKey::new(app, stream)) else {
            return text(StatusCode::NOT_FOUND, "stream not being recorded\n");
        };
        let (app, stream) = (app.to_string(), stream.to_string());
        tokio::task::spawn_blocking(move || {
            let now = now_unix();
            let from = now - window as f64;
            // the run's files, and the segments and files before those that can be in the window
            let on_disk: std::collections::HashMap<String, FileRef> =
                stream_files(&dir, &stream).into_iter().map(|f| (f.url_name.clone(), f)).collect();
            let mut files = Vec::new();
            let (mut seq, mut discontinuities) = (run.dropped_segments, run.dropped_files);
            for (i, r) in run.files.iter().enumerate() {
                let next_start = run.files.get(i + 1).and_then(|n| on_disk.get(&n.url_name)?.start_unix);
                let before_window = next_start.is_some_and(|n| n <= from);
                match (on_disk.get(&r.url_name), r.segments) {
                    (Some(f), _) if !before_window => files.push(f.clone()),
                    // numbers and discontinuities go on past the files before the window
                    (_, count) if files.is_empty() => {
                        seq += count.unwrap_or(0);
                        discontinuities += 1;
                    }
                    _ => {}
                }
            }
            let listed = indexed(&pb, files, f64::MIN, f64::MAX);
            let kind = Kind::Window { first_seq: seq, discontinuities };
            playback::playlist(&app, &stream, &listed, from, now + 1.0, kind)
        })
        .await
    } else {
        let (from, to) = match range_of(query) {
            Ok(r) => r,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let (app, stream) = (app.to_string(), stream.to_string());
        tokio::task::spawn_blocking(move || {
            let listed = indexed(&pb, stream_files(&dir, &stream), from, to);
            // over, unless a file in the range is still being recorded short of its end
            let open = listed.iter().any(|l| !l.file.complete && l.end() < to);
            let kind = if open { Kind::Event } else { Kind::Vod };
            playback::playlist(&app, &stream, &listed, from, to, kind)
        })
        .await
    };
    match body {
        Ok(Some(p)) => {
            let settings = ctx.svc.settings.get();
            let p = Bytes::from(p);
            let p = match super::response::credentials(&settings.apps.get(app).auth, query) {
                Some(c) => super::routes::with_query(&p, &c),
                None => p,
            };
            full("application/vnd.apple.mpegurl", "no-cache", p)
        }
        Ok(None) => text(StatusCode::NOT_FOUND, "nothing recorded in that range\n"),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "playlist failed\n"),
    }
}

/// A body of `len` bytes: `head`, then what `rest` reads (a read error ends it short,
/// logged).
fn streamed(
    head: Bytes,
    rest: impl futures_util::Stream<Item = anyhow::Result<Bytes>> + Send + Sync + 'static,
    len: u64,
) -> Response<Body> {
    let rest = rest
        .take_while(|r| {
            if let Err(e) = r {
                warn!("recording read failed mid-response: {e:#}");
            }
            std::future::ready(r.is_ok())
        })
        .map(|r| Ok(Frame::data(r.unwrap_or_default())));
    let body = futures_util::stream::iter((!head.is_empty()).then(|| Ok(Frame::data(head)))).chain(rest);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(body)));
    r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(len));
    r
}

/// `GET /APP/STREAM.mp4?start=…`: the range as one fragmented MP4.
pub(crate) async fn range_mp4(
    app: &str,
    stream: &str,
    query: &str,
    peer: SocketAddr,
    ctx: &HttpContext,
) -> Response<Body> {
    if let Some(refusal) = check(ctx, app, stream, peer, query) {
        return refusal;
    }
    let Some(dir) = stream_dir(ctx, app, stream) else { return not_found() };
    let (from, to) = match range_of(query) {
        Ok(r) => r,
        Err(why) => return text(StatusCode::BAD_REQUEST, why),
    };
    let pb = ctx.svc.recorder.playback().clone();
    let name = stream.to_string();
    let plan = tokio::task::spawn_blocking(move || {
        let listed = indexed(&pb, stream_files(&dir, &name), from, to);
        playback::range(&listed, from, to)
    })
    .await;
    let plan = match plan {
        Ok(Some(p)) => p,
        Ok(None) => return text(StatusCode::NOT_FOUND, "nothing recorded in that range\n"),
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "range failed\n"),
    };
    if plan.left_out > 0 {
        warn!(stream = %StreamKey::new(app, stream), files = plan.left_out, "range MP4: files with other codecs left out");
    }
    let parts = futures_util::stream::iter(plan.parts)
        .flat_map(|(file, ix, segs, shift)| playback::fragments(file, ix, segs, shift));
    let mut r = streamed(plan.init, parts, plan.len);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    r.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let stamp = crate::record::clock::format_time((from * 1000.0) as i64).replace([':', '.'], "-");
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{stream}-{stamp}.mp4\"")) {
        r.headers_mut().insert(CONTENT_DISPOSITION, v);
    }
    r
}

/// `GET`/`HEAD /recordings/APP/STREAM/FILE.mp4[?init|?seg=N]`.
pub(crate) async fn file(
    path: &str,
    query: &str,
    headers: &hyper::HeaderMap,
    peer: SocketAddr,
    ctx: &HttpContext,
) -> Response<Body> {
    let Some(segments) = split_path(path) else { return not_found() };
    let ["recordings", app, name, file] = segments.as_slice() else { return not_found() };
    if let Some(refusal) = check(ctx, app, name, peer, query) {
        return refusal;
    }
    let Some(p) = crate::record::list::path_of(&ctx.svc.recorder.dir_of(app), app, name, file) else {
        return not_found();
    };
    let init = query.split('&').any(|q| q == "init");
    let seg = query_param(query, "seg").map(|s| s.parse::<usize>());
    if !init && seg.is_none() {
        return super::files::serve(p, headers).await;
    }
    let Some(Ok(seg)) = seg.or(init.then_some(Ok(0))) else {
        return text(StatusCode::BAD_REQUEST, "seg= must be a segment number\n");
    };
    // a file still being recorded is asked for by its final name
    let p = if p.exists() { p } else { p.with_extension("mp4.part") };
    let pb = ctx.svc.recorder.playback().clone();
    let (ix, open) = match tokio::task::spawn_blocking(move || pb.open(&p)).await {
        Ok(Ok(ix)) => ix,
        _ => return not_found(),
    };
    let cache =
        if keyed(ctx, app) { "private, max-age=31536000, immutable" } else { "public, max-age=31536000, immutable" };
    if init {
        return full("video/mp4", cache, ix.init.clone());
    }
    let Some(len) = ix.segment_len(seg) else { return not_found() };
    let mut r = streamed(Bytes::new(), playback::fragments(open, ix, seg..seg + 1, 0.0), len);
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("video/iso.segment"));
    r.headers_mut().insert(hyper::header::CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}
