//! `/api/streams` (JSON) and the admin API (`DELETE /api/streams/APP/STREAM`).

use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use hyper::header::HeaderValue;
use hyper::{Response, StatusCode};
use serde_json::json;

use super::path::split_path;
use super::response::{full, not_found, text};
use super::{Body, HttpContext};
use crate::hub::{Stream, StreamKey};
use crate::session::output::{self, Output};

fn stream_json(ctx: &HttpContext, s: &Stream) -> serde_json::Value {
    let codec = s.codec();
    let uptime = s.uptime().as_secs_f64();
    let bytes_in = s.stats.bytes_in.load(Ordering::Relaxed);
    let viewers: serde_json::Map<String, serde_json::Value> = Output::ALL
        .iter()
        .map(|o| (o.name().to_string(), json!(output::viewers(s, *o, &|k| ctx.hls.viewers(k)))))
        .collect();
    let video_frames = s.stats.video_frames_in.load(Ordering::Relaxed);
    let per_second = |n: f64| if uptime > 0.0 { n / uptime } else { 0.0 };
    let container = ctx.hls.container(s.key());
    // a multitrack publish: the first track's segment durations, to tell the others' alignment
    let tracks = s.tracks();
    let labels = s.audio_labels();
    let main = if tracks.is_empty() { Vec::new() } else { ctx.hls.segment_durations(s.key()) };
    let variant = container.map(|c| match c {
        (crate::hls::Container::MpegTs, _) => "mpegts",
        (crate::hls::Container::Fmp4, None) => "fmp4",
        (crate::hls::Container::Fmp4, Some(_)) => "lowlatency",
    });
    let part_target_ms = container.and_then(|(_, p)| p);
    let hls = ctx.hls.sequence_range(s.key()).map(|(first, last)| {
        json!({ "variant": variant, "part_target_ms": part_target_ms, "first_sequence": first, "last_sequence": last })
    });
    json!({
        "app": s.key().app,
        "name": s.key().name,
        "publisher": s.publisher_addr().to_string(),
        // its media (thumbnail, URLs) needs one of the app's play keys (`?key=`)
        "play_key_required": !ctx.svc.settings.get().apps.get(&s.key().app).auth.play_keys.is_empty(),
        // the publisher left and the stream waits for it to come back (reconnect grace)
        "waiting_for_publisher_ms": s.waiting_since().map(|t| t.elapsed().as_millis() as u64),
        "reconnects": s.reconnects(),
        "recording": ctx.svc.recorder.status(s.key()),
        "started_unix_ms": s.started().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "uptime_s": (uptime * 10.0).round() / 10.0,
        "video": codec.video.as_ref().map(|v| json!({
            "codec": v.codec_string(),
            "width": v.width(),
            "height": v.height(),
            "fps": (per_second(video_frames as f64) * 100.0).round() / 100.0,
        })),
        "audio": codec.audio.as_ref().map(|a| json!({
            "codec": a.codec_string(),
            "sample_rate": a.sample_rate(),
            "channels": a.channels(),
        })),
        "bytes_in": bytes_in,
        "bitrate_in_kbps": (per_second(bytes_in as f64 * 8.0) / 1000.0).round(),
        "bytes_out": s.stats.bytes_out.load(Ordering::Relaxed),
        "viewers": viewers,
        "lag_skips": s.stats.lag_skips.load(Ordering::Relaxed),
        "evictions": s.stats.evictions.load(Ordering::Relaxed),
        "hls": hls,
        // push relays of this stream (URLs with their keys masked)
        "pushes": ctx.svc.relays.statuses(s.key()),
        // a multitrack publish: its other video tracks, each a stream of its own, and
        // whether each one's HLS segments are cut on the same keyframes as the first's
        "tracks": tracks.into_iter().map(|t| {
            let key = s.key().track(t);
            let video = ctx.svc.hub.get(&key).and_then(|t| t.codec().video.clone());
            json!({
                "track": t,
                "stream": key.to_string(),
                "codec": video.as_ref().map(|v| v.codec_string()),
                "width": video.as_ref().map(|v| v.width()),
                "height": video.as_ref().map(|v| v.height()),
                "aligned": segments_aligned(&main, &ctx.hls.segment_durations(&key)),
            })
        }).collect::<Vec<_>>(),
        // and its other audio tracks (the HLS ladder's audio renditions)
        "audio_tracks": s.audio_tracks().into_iter().map(|t| {
            let key = s.key().audio_track(t);
            let audio = ctx.svc.hub.get(&key).and_then(|t| t.codec().audio.clone());
            let label = labels.iter().find(|l| l.track == t);
            json!({
                "track": t,
                "stream": key.to_string(),
                "codec": audio.as_ref().map(|a| a.codec_string()),
                "sample_rate": audio.as_ref().map(|a| a.sample_rate()),
                "channels": audio.as_ref().map(|a| a.channels()),
                "name": label.and_then(|l| l.name.clone()),
                "language": label.and_then(|l| l.language.clone()),
            })
        }).collect::<Vec<_>>(),
    })
}

/// Whether two variants' segments were cut on the same keyframes: the other's last three
/// segment durations (before its newest, which may still differ by when it was listed)
/// appear in a row among the first's, within 2 ms (FLV's millisecond rounding). None
/// until both have enough segments to tell.
fn segments_aligned(first: &[u64], other: &[u64]) -> Option<bool> {
    const RUN: usize = 3;
    if first.len() < RUN + 1 || other.len() < RUN + 1 {
        return None;
    }
    let run = &other[other.len() - 1 - RUN..other.len() - 1];
    Some(first.windows(RUN).any(|w| w.iter().zip(run).all(|(a, b)| a.abs_diff(*b) <= 2)))
}

pub(crate) fn json_response(v: &serde_json::Value) -> Response<Body> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    full("application/json", "no-cache", Bytes::from(body))
}

/// The OpenAPI 3.1 description of the API (`assets/openapi.json`, kept true by
/// tests/openapi.rs, which fuzzes the running server against it).
const OPENAPI: &[u8] = include_bytes!("../../../assets/openapi.json");

/// `GET /api/openapi.json`.
pub(crate) fn openapi() -> Response<Body> {
    full("application/json", "no-cache", Bytes::from_static(OPENAPI))
}

pub(crate) fn streams(ctx: &HttpContext) -> Response<Body> {
    let list: Vec<_> = ctx.svc.hub.streams().iter().map(|s| stream_json(ctx, s)).collect();
    json_response(&json!({ "streams": list }))
}

/// `GET /api/cluster`: the nodes of the cluster directory and who publishes which stream
/// (`{"enabled": false}` without `[cluster]`).
pub(crate) async fn cluster(ctx: &HttpContext) -> Response<Body> {
    match &ctx.svc.cluster {
        Some(c) => json_response(&c.overview().await),
        None => json_response(&json!({ "enabled": false })),
    }
}

pub(crate) fn stream(ctx: &HttpContext, key: &StreamKey) -> Response<Body> {
    match ctx.svc.hub.get(key) {
        Some(s) => json_response(&stream_json(ctx, &s)),
        None => not_found(),
    }
}

/// None when `authorization` carries the admin token; else the answer to give.
fn admin_refusal(authorization: Option<&HeaderValue>, ctx: &HttpContext) -> Option<Response<Body>> {
    let Some(token) = &ctx.admin_token else {
        return Some(text(StatusCode::NOT_FOUND, "admin API is off (no admin.token configured)\n"));
    };
    let given = authorization.and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let ok = given.is_some_and(|g| {
        g.len() == token.len() && g.bytes().zip(token.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    (!ok).then(|| text(StatusCode::UNAUTHORIZED, "unauthorized\n"))
}

/// An admin request on `/api/streams/APP/STREAM` followed by `tail` (`"*"`: any one
/// segment): its stream and the segments `"*"` matched, once `authorization` carries the
/// admin token. Else the answer (boxed, as in `flv::admit`): the token's refusal, or
/// `mismatch` for another path.
fn admin_target<'p>(
    path: &'p str,
    tail: &[&str],
    authorization: Option<&HeaderValue>,
    ctx: &HttpContext,
    mismatch: fn() -> Response<Body>,
) -> Result<(StreamKey, Vec<&'p str>), Box<Response<Body>>> {
    if let Some(refusal) = admin_refusal(authorization, ctx) {
        return Err(Box::new(refusal));
    }
    let segments = split_path(path);
    let Some(["api", "streams", app, name, rest @ ..]) = segments.as_deref() else { return Err(Box::new(mismatch())) };
    let matches = rest.len() == tail.len() && rest.iter().zip(tail).all(|(s, t)| *t == "*" || s == t);
    if !matches {
        return Err(Box::new(mismatch()));
    }
    let wild = rest.iter().zip(tail).filter(|(_, t)| **t == "*").map(|(s, _)| *s).collect();
    Ok((StreamKey::new(*app, *name), wild))
}

/// The largest admin request body read (a push target as JSON).
pub(crate) const MAX_BODY: usize = 8 * 1024;

/// Whether the request carries the admin token (then its body is worth reading).
pub(crate) fn authorized(authorization: Option<&HeaderValue>, ctx: &HttpContext) -> bool {
    admin_refusal(authorization, ctx).is_none()
}

fn method_not_allowed() -> Response<Body> {
    text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
}

/// `DELETE /api/streams/APP/STREAM` with `Authorization: Bearer TOKEN`: disconnects the publisher.
pub(crate) fn kick(path: &str, authorization: Option<&HeaderValue>, ctx: &HttpContext) -> Response<Body> {
    let key = match admin_target(path, &[], authorization, ctx, method_not_allowed) {
        Ok((key, _)) => key,
        Err(answer) => return *answer,
    };
    match ctx.svc.hub.get(&key) {
        Some(s) => {
            tracing::info!(stream = %s.key(), "publisher kicked by the admin API");
            ctx.svc.metrics.events.emit("kick", json!({ "stream": s.key().to_string() }));
            s.kick_and_end("kicked by the admin API");
            text(StatusCode::OK, "kicked\n")
        }
        None => not_found(),
    }
}

/// `POST /api/streams/APP/STREAM/reconnect[?tcUrl=URL]` with `Authorization: Bearer
/// TOKEN`: a drain. A publisher that announced Enhanced RTMP v2's reconnect capability is
/// sent `NetConnection.Connect.ReconnectRequest` (with `tcUrl` when given: reconnect
/// there); another is disconnected (it may come back within the reconnect grace).
pub(crate) fn reconnect(
    path: &str,
    query: &str,
    authorization: Option<&HeaderValue>,
    ctx: &HttpContext,
) -> Response<Body> {
    let key = match admin_target(path, &["reconnect"], authorization, ctx, method_not_allowed) {
        Ok((key, _)) => key,
        Err(answer) => return *answer,
    };
    let target = match crate::auth::query_param(query, "tcUrl").map(percent_decode) {
        None => None,
        Some(Some(url)) if (url.starts_with("rtmp://") || url.starts_with("rtmps://")) && url.len() <= 1024 => {
            Some(url)
        }
        Some(_) => return text(StatusCode::BAD_REQUEST, "tcUrl must be an rtmp:// or rtmps:// URL\n"),
    };
    let Some(s) = ctx.svc.hub.get(&key) else { return not_found() };
    if s.waiting_since().is_some() {
        return text(StatusCode::CONFLICT, "the stream has no publisher now (it waits for one to come back)\n");
    }
    // (not where to: a tcUrl may carry credentials, and the events are public)
    ctx.svc.metrics.events.emit("drain", json!({ "stream": s.key().to_string(), "elsewhere": target.is_some() }));
    if s.request_reconnect(target.clone()) {
        tracing::info!(stream = %s.key(), ?target, "admin API: publisher asked to reconnect");
        text(StatusCode::OK, "reconnect requested\n")
    } else {
        tracing::info!(stream = %s.key(), "admin API: publisher cannot be asked to reconnect; disconnecting it");
        s.kick("asked to reconnect by the admin API (it did not announce that it can be asked)");
        text(StatusCode::OK, "disconnected (the publisher did not announce the reconnect capability)\n")
    }
}

/// `POST /api/streams/APP/STREAM/pushes?url=URL` with `Authorization: Bearer TOKEN`: starts
/// pushing the live stream to `URL` (`rtmp://` or `rtmps://`, `{app}`/`{stream}` replaced);
/// answers 201 with the push's status (its `id` names it for `DELETE`), 400 with the reason
/// for a bad URL, 404 when the stream is not live, 429 past `relay.max_pushes_per_stream`.
pub(crate) fn add_push(
    path: &str,
    query: &str,
    body: Option<&[u8]>,
    authorization: Option<&HeaderValue>,
    ctx: &HttpContext,
) -> Response<Body> {
    let key = match admin_target(path, &["pushes"], authorization, ctx, || text(StatusCode::NOT_FOUND, "not found\n")) {
        Ok((key, _)) => key,
        Err(answer) => return *answer,
    };
    #[derive(serde::Deserialize)]
    struct Target {
        url: String,
    }
    let from_body = body.filter(|b| !b.is_empty()).map(serde_json::from_slice::<Target>);
    let url = match from_body {
        Some(Ok(t)) => Some(t.url),
        Some(Err(_)) => {
            return text(StatusCode::BAD_REQUEST, "the body must be JSON: {\"url\": \"rtmp://HOST/APP/STREAM\"}\n")
        }
        None => crate::auth::query_param(query, "url").and_then(percent_decode),
    };
    let Some(url) = url else {
        return text(
            StatusCode::BAD_REQUEST,
            "give the target as {\"url\": \"rtmp://HOST/APP/STREAM\"} or ?url=rtmp%3A%2F%2FHOST%2FAPP%2FSTREAM\n",
        );
    };
    match ctx.svc.relays.add(&key, &url, "api") {
        Ok(status) => {
            tracing::info!(stream = %key, target = %status.url, "admin API: push added");
            let mut r = json_response(&json!(status));
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(crate::relay::AddError::NotLive(_)) => not_found(),
        Err(e @ crate::relay::AddError::TooMany(..)) => owned_text(StatusCode::TOO_MANY_REQUESTS, format!("{e}\n")),
        Err(e) => owned_text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

fn owned_text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = full("text/plain; charset=utf-8", "no-cache", Bytes::from(body));
    *r.status_mut() = status;
    r
}

/// `DELETE /api/streams/APP/STREAM/pushes/ID` with `Authorization: Bearer TOKEN`: stops a push.
pub(crate) fn remove_push(path: &str, authorization: Option<&HeaderValue>, ctx: &HttpContext) -> Response<Body> {
    let (key, id) = match admin_target(path, &["pushes", "*"], authorization, ctx, not_found) {
        Ok((key, wild)) => (key, wild.first().and_then(|id| id.parse::<u64>().ok())),
        Err(answer) => return *answer,
    };
    match id {
        Some(id) if ctx.svc.relays.remove(&key, id) => {
            tracing::info!(stream = %key, id, "admin API: push removed");
            text(StatusCode::OK, "push stopped\n")
        }
        _ => not_found(),
    }
}

/// `%XX`-decodes a query value; None when it is not valid UTF-8 or has control characters.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(out).ok()?;
    (!text.chars().any(char::is_control)).then_some(text)
}

/// `POST /api/streams/APP/STREAM/record` (admin): starts recording a live stream.
pub(crate) fn start_record(path: &str, authorization: Option<&HeaderValue>, ctx: &HttpContext) -> Response<Body> {
    let key = match admin_target(path, &["record"], authorization, ctx, not_found) {
        Ok((key, _)) => key,
        Err(answer) => return *answer,
    };
    match ctx.svc.recorder.start(&key, "api") {
        Ok(status) => {
            tracing::info!(stream = %key, "admin API: recording started");
            let mut r = json_response(&json!(status));
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Err(crate::record::StartError::NotLive(_)) => not_found(),
        Err(e @ crate::record::StartError::Already(_)) => owned_text(StatusCode::CONFLICT, format!("{e}\n")),
    }
}

/// `DELETE /api/streams/APP/STREAM/record` (admin): stops a stream's recording (its file
/// is finalized).
pub(crate) fn stop_record(path: &str, authorization: Option<&HeaderValue>, ctx: &HttpContext) -> Response<Body> {
    let key = match admin_target(path, &["record"], authorization, ctx, not_found) {
        Ok((key, _)) => key,
        Err(answer) => return *answer,
    };
    if ctx.svc.recorder.stop(&key) {
        tracing::info!(stream = %key, "admin API: recording stopped");
        text(StatusCode::OK, "recording stopped\n")
    } else {
        not_found()
    }
}

/// `GET /api/recordings[/APP/STREAM]`: the recordings on disk, newest first.
pub(crate) async fn recordings(ctx: &HttpContext, app: Option<&str>, stream: Option<&str>) -> Response<Body> {
    let dirs = ctx.svc.recorder.dirs();
    let (app, stream) = (app.map(str::to_string), stream.map(str::to_string));
    let listed =
        tokio::task::spawn_blocking(move || crate::record::list::list(&dirs, app.as_deref(), stream.as_deref())).await;
    match listed {
        Ok(list) => json_response(&json!({ "recordings": list })),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "listing failed\n"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(super::percent_decode("rtmp%3A%2F%2Fb.example%2Flive").as_deref(), Some("rtmp://b.example/live"));
        assert_eq!(super::percent_decode("rtmp://b/live").as_deref(), Some("rtmp://b/live"));
        assert_eq!(super::percent_decode("a%0Ab"), None, "no control characters");
        assert_eq!(super::percent_decode("%zz"), None);
        assert_eq!(super::percent_decode("100%").as_deref(), Some("100%"));
    }

    #[test]
    fn aligned_variants_share_their_segment_durations() {
        let main = [2000, 2033, 1967, 2000, 2034];
        assert_eq!(super::segments_aligned(&main, &[2033, 1967, 2001, 2034]), Some(true));
        assert_eq!(super::segments_aligned(&main, &[2500, 1500, 2500, 2000]), Some(false));
        assert_eq!(super::segments_aligned(&main, &[2000, 2033]), None);
    }
}
