//! Request routing: matches a request to its handler (`flv`, `api`, `player`, HLS
//! playlists and segments here). Response helpers live in `response`, a leaf module the
//! handlers share; nothing imports from the router.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::deadline::ConnState;
use super::path::split_path;
use super::response::{allow_origin, empty, full, not_found, refused, text};
use super::{Body, HttpContext};
use crate::auth::{Action, AuthRequest};
use crate::hls::PlaylistReply;
use crate::hub::StreamKey;
use crate::session::output;

/// How long the request that started a pull waits for the pulled stream's first playlist
/// (its first segment: a target duration or two after the first keyframe).
const PULLED_PLAYLIST_WAIT: Duration = Duration::from_secs(8);
/// A stream this young whose playlist is not there yet is waited for (see
/// [`PULLED_PLAYLIST_WAIT`]).
const YOUNG_STREAM: Duration = Duration::from_secs(10);

pub(crate) async fn handle<B>(
    req: Request<B>,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    kill: CancellationToken,
    conn: &ConnState,
) -> Response<Body>
where
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let head = req.method() == Method::HEAD;
    // WebSocket-FLV: an upgrade at an HTTP-FLV URL (or an RFC 8441 CONNECT over HTTP/2)
    if (req.method() == Method::GET && super::ws::is_upgrade(&req)) || super::ws::is_h2_connect(&req) {
        let query = super::response::with_bearer(req.uri().query().unwrap_or(""), req.headers()).into_owned();
        let mut resp = match flv_route(req.uri().path(), &query) {
            Some(key) => super::ws::serve(req, key, &query, peer, &ctx).await,
            None => not_found(),
        };
        allow_origin(&mut resp, &ctx);
        // (101 to an HTTP/1.1 upgrade, 200 to an HTTP/2 CONNECT)
        if matches!(resp.status(), StatusCode::SWITCHING_PROTOCOLS | StatusCode::OK) {
            // a WebSocket-FLV viewer: its writes are timed by its stall watchdog
            conn.note_flv();
        }
        return resp;
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    let media_query = super::response::with_bearer(query, req.headers());
    let mut resp = match *req.method() {
        Method::GET | Method::HEAD if path.starts_with("/recordings/") => {
            super::recorded::file(path, &media_query, req.headers(), peer, &ctx).await
        }
        Method::GET if path == "/api/events" => {
            let last = req.headers().get("last-event-id").and_then(|v| v.to_str().ok());
            super::console::events(&ctx, last, query)
        }
        Method::GET | Method::HEAD => route(path, &media_query, head, peer, &ctx, kill).await,
        Method::DELETE if path.ends_with("/record") => {
            super::api::stop_record(path, req.headers().get(AUTHORIZATION), &ctx)
        }
        Method::POST if path.ends_with("/record") => {
            super::api::start_record(path, req.headers().get(AUTHORIZATION), &ctx)
        }
        Method::DELETE if path.contains("/pushes/") => {
            super::api::remove_push(path, req.headers().get(AUTHORIZATION), &ctx)
        }
        Method::DELETE => super::api::kick(path, req.headers().get(AUTHORIZATION), &ctx),
        Method::POST if path.ends_with("/pushes") => {
            let (path, query) = (path.to_string(), query.to_string());
            let auth = req.headers().get(AUTHORIZATION).cloned();
            // the target as JSON (`{"url": "…"}`) in a small body, or as `?url=`
            let body = if super::api::authorized(auth.as_ref(), &ctx) {
                let limited = http_body_util::Limited::new(req.into_body(), super::api::MAX_BODY);
                limited.collect().await.ok().map(|b| b.to_bytes())
            } else {
                None
            };
            super::api::add_push(&path, &query, body.as_deref(), auth.as_ref(), &ctx)
        }
        Method::POST => super::api::reconnect(path, query, req.headers().get(AUTHORIZATION), &ctx),
        Method::OPTIONS => {
            let mut r = empty(StatusCode::NO_CONTENT);
            r.headers_mut().insert("access-control-allow-methods", HeaderValue::from_static("GET, HEAD, OPTIONS"));
            r.headers_mut().insert("access-control-allow-headers", HeaderValue::from_static("*"));
            r.headers_mut().insert("access-control-max-age", HeaderValue::from_static("86400"));
            r
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    allow_origin(&mut resp, &ctx);
    let flv = resp.headers().get(CONTENT_TYPE).is_some_and(|v| v == "video/x-flv");
    if flv && !head && resp.status() == StatusCode::OK {
        // an HTTP-FLV viewer (an endless body): its writes are timed by its stall watchdog
        conn.note_flv();
    }
    if head {
        // the length GET would send, when it is known (playlists, segments; not the endless
        // HTTP-FLV body, whose HEAD answer has an empty body standing in for it)
        let length = hyper::body::Body::size_hint(resp.body()).exact().filter(|_| !flv);
        let (mut parts, _) = resp.into_parts();
        if let Some(n) = length {
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
        resp = Response::from_parts(parts, Empty::new().boxed());
    }
    resp
}

async fn route(
    path: &str,
    query: &str,
    head: bool,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
    kill: CancellationToken,
) -> Response<Body> {
    match path {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/api/streams" => return super::api::streams(ctx),
        "/api/recordings" => return super::api::recordings(ctx, None, None).await,
        "/api/stats" => return super::console::stats(ctx),
        "/api/cluster" => return super::api::cluster(ctx).await,
        "/api/openapi.json" => return super::api::openapi(),
        "/metrics" => {
            let pushes = ctx.svc.relays.all();
            ctx.svc.metrics.set_push_states(pushes.iter().map(|(_, p)| p.state));
            let viewers = output::viewers_by_output(&ctx.svc.hub.streams(), &|k| ctx.hls.viewers(k));
            let body = ctx.svc.metrics.render(&ctx.svc.hub, viewers);
            return full("application/openmetrics-text; version=1.0.0; charset=utf-8", "no-cache", Bytes::from(body));
        }
        "/" => return super::player::index(),
        _ => {}
    }
    let Some(segments) = split_path(path) else {
        return text(StatusCode::BAD_REQUEST, "bad path\n");
    };
    match segments.as_slice() {
        ["api", "streams", app, name] => super::api::stream(ctx, &StreamKey::new(*app, *name)),
        ["api", "streams", app, name, "keyframe"] => {
            super::console::keyframe(ctx, &StreamKey::new(*app, *name), peer, query)
        }
        ["api", "recordings", app, name] => super::api::recordings(ctx, Some(app), Some(name)).await,
        [app, file] => {
            if let Some(key) = flv_key(app, file, query) {
                return super::flv::serve(key, query, head, peer, ctx, kill).await;
            }
            if let Some(name) = file.strip_suffix(".m3u8").filter(|n| !n.is_empty()) {
                if super::recorded::wants_recorded(query) {
                    return super::recorded::playlist(app, name, query, peer, ctx).await;
                }
                // a multitrack publish: NAME.m3u8 is the multivariant playlist of its
                // tracks, NAME~N.m3u8 video track N's playlist, NAME~aN.m3u8 audio track N's
                let variant = name.contains('~');
                let key = StreamKey::new(*app, name);
                // HLS is checked against play keys only: a callback per playlist refresh would flood it.
                let settings = ctx.svc.settings.get();
                let auth = &settings.apps.get(app).auth;
                let req = AuthRequest { action: Action::Play, app, stream: name, client: peer, protocol: "hls", query };
                if let Err(denied) = ctx.svc.auth.check_keys(auth, &req) {
                    return refused(ctx, &denied);
                }
                ctx.hls.client_seen(&key, peer.ip());
                // a stream this node pulls from an origin on demand: the first request starts
                // the pull (or joins it) and waits for the stream's first playlist
                let pulled = !variant
                    && ctx.svc.hub.get(&key).is_none()
                    && crate::session::find(&ctx.svc, &key, query).await.is_some();
                let mut reply = ctx.hls.playlist_or_ladder(&ctx.svc.hub, &key, variant, query).await;
                // a stream in its first seconds (just published, or just pulled) has no
                // playlist until its first segment: the request waits for it rather than get
                // a 404 (hls.js gives up on a 404 playlist)
                let young = || {
                    ctx.svc.hub.get(&key).is_some_and(|s| s.uptime() < YOUNG_STREAM)
                        && settings.apps.get(app).hls.enabled
                };
                if matches!(reply, PlaylistReply::NotFound) && (pulled || young()) {
                    let until = tokio::time::Instant::now() + PULLED_PLAYLIST_WAIT;
                    while matches!(reply, PlaylistReply::NotFound) && tokio::time::Instant::now() < until {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        reply = ctx.hls.playlist_or_ladder(&ctx.svc.hub, &key, variant, query).await;
                    }
                }
                let (playlist, blocking) = match reply {
                    PlaylistReply::Text { text, blocking } => {
                        ctx.svc.metrics.hls_request(if blocking { "blocking_playlist" } else { "playlist" });
                        (text, blocking)
                    }
                    PlaylistReply::NotFound => return not_found(),
                    PlaylistReply::BadRequest(why) => {
                        warn!(%peer, stream = %key, "HLS playlist request refused: {why}");
                        return text(StatusCode::BAD_REQUEST, "bad delivery directives\n");
                    }
                    PlaylistReply::Unavailable => return text(StatusCode::SERVICE_UNAVAILABLE, "not available yet\n"),
                };
                // a blocking reload's answer holds what was asked for whenever it is served
                // again: caches may keep it a while, keyed by the whole URL
                let cache = if blocking { "public, max-age=6" } else { "max-age=1" };
                // with play keys, segments need the key too: players resolve segment URIs
                // against the playlist URL without its query, so the URIs carry it
                return match super::response::credentials(auth, query) {
                    Some(c) => full("application/vnd.apple.mpegurl", "private, max-age=1", with_query(&playlist, &c)),
                    None => full("application/vnd.apple.mpegurl", cache, playlist),
                };
            }
            if let Some(name) = file.strip_suffix(".mp4").filter(|_| super::recorded::wants_recorded(query)) {
                return super::recorded::range_mp4(app, name, query, peer, ctx).await;
            }
            if let Some(stem) = [".ts", ".m4s", ".mp4"].iter().find_map(|ext| file.strip_suffix(ext)) {
                let settings = ctx.svc.settings.get();
                let auth = &settings.apps.get(app).auth;
                let name = crate::hls::SegmentName::parse(file).map_or(stem, |n| n.stream);
                let req = AuthRequest { action: Action::Play, app, stream: name, client: peer, protocol: "hls", query };
                if let Err(denied) = ctx.svc.auth.check_keys(auth, &req) {
                    return refused(ctx, &denied);
                }
                // segments of a keyed app must not sit in shared caches, where anyone could
                // fetch them by URL without the key
                let cache = if auth.play_keys.is_empty() && !auth.jwt_covers(Action::Play) {
                    "public, max-age=31536000, immutable"
                } else {
                    "private, max-age=31536000, immutable"
                };
                return match ctx.hls.segment(app, file).await {
                    Some((kind, data)) => {
                        ctx.svc.metrics.hls_request(match kind {
                            crate::hls::FileKind::Part(_) => "part",
                            crate::hls::FileKind::Init => "init",
                            _ => "segment",
                        });
                        full(kind.content_type(), cache, data)
                    }
                    None => not_found(),
                };
            }
            super::player::route(&segments, &ctx.svc.hub).unwrap_or_else(not_found)
        }
        _ => super::player::route(&segments, &ctx.svc.hub).unwrap_or_else(not_found),
    }
}

/// The stream an HTTP-FLV / WebSocket-FLV URL `/APP/FILE` names (`FILE` is `NAME.flv`),
/// with `?track=N`.
fn flv_key(app: &str, file: &str, query: &str) -> Option<StreamKey> {
    let name = file.strip_suffix(".flv").filter(|n| !n.is_empty())?;
    Some(with_track(StreamKey::new(app, name), query))
}

/// The stream an HTTP-FLV / WebSocket-FLV request path `/APP/NAME.flv` names, with
/// `?track=N`; None for any other path.
pub(crate) fn flv_route(path: &str, query: &str) -> Option<StreamKey> {
    match split_path(path)?.as_slice() {
        [app, file] => flv_key(app, file, query),
        _ => None,
    }
}

/// `?track=N` (N > 0) picks track N of a multitrack publish (its stream `NAME~N`).
pub(crate) fn with_track(key: StreamKey, query: &str) -> StreamKey {
    match crate::auth::query_param(query, "track").and_then(|t| t.parse::<u8>().ok()) {
        Some(t) if t > 0 => key.track(t),
        _ => key,
    }
}

/// `playlist` with `creds` (`key=KEY`, `jwt=TOKEN`, or both joined by `&`) added to the
/// query of every URI it names: the URI lines (segments, variant playlists) and every
/// `URI="…"` attribute of a tag (`EXT-X-MAP`, `EXT-X-PART`, `EXT-X-PRELOAD-HINT`,
/// `EXT-X-RENDITION-REPORT`, `EXT-X-MEDIA`, and any other). Players resolve those against
/// the playlist URL without its query, so each needs the credentials itself. Values as they
/// came in the playlist request's query (already URL-encoded).
pub(crate) fn with_query(playlist: &Bytes, creds: &str) -> Bytes {
    let text = String::from_utf8_lossy(playlist);
    let push_uri = |out: &mut String, uri: &str| {
        out.push_str(uri);
        out.push(if uri.contains('?') { '&' } else { '?' });
        out.push_str(creds);
    };
    let mut out = String::with_capacity(text.len() + text.len() / 16 * (creds.len() + 1));
    for line in text.lines() {
        match line.strip_prefix('#').and_then(|tag| tag.split_once(':')) {
            // a tag with attributes: NAME=VALUE pairs, a VALUE quoted or not
            Some((name, mut attrs)) => {
                out.push('#');
                out.push_str(name);
                out.push(':');
                while let Some((attr, after)) = attrs.split_once('=') {
                    out.push_str(attr);
                    out.push('=');
                    let end = match after.strip_prefix('"') {
                        Some(quoted) => quoted.find('"').map_or(after.len(), |e| e + 2),
                        None => after.find(',').unwrap_or(after.len()),
                    };
                    let value = &after[..end];
                    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).filter(|_| attr == "URI") {
                        Some(uri) => {
                            out.push('"');
                            push_uri(&mut out, uri);
                            out.push('"');
                        }
                        None => out.push_str(value),
                    }
                    attrs = &after[end..];
                    match attrs.strip_prefix(',') {
                        Some(next) => {
                            out.push(',');
                            attrs = next;
                        }
                        None => break,
                    }
                }
                // what is left is no attribute (`#EXTINF:2.000,`, a date)
                out.push_str(attrs);
            }
            None if line.is_empty() || line.starts_with('#') => out.push_str(line),
            None => push_uri(&mut out, line),
        }
        out.push('\n');
    }
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(playlist: &str, key: &str) -> String {
        String::from_utf8(with_query(&Bytes::from(playlist.to_string()), &format!("key={key}")).to_vec()).unwrap()
    }

    #[test]
    fn segment_uris_carry_the_key() {
        let p = "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ncam-19a-7.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\ncam-19b-8.ts\n";
        assert_eq!(
            keyed(p, "a%20b"),
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ncam-19a-7.ts?key=a%20b\n#EXT-X-DISCONTINUITY\n#EXTINF:1.5,\ncam-19b-8.ts?key=a%20b\n"
        );
    }

    #[test]
    fn map_uris_carry_the_key_too() {
        let p = "#EXTM3U\n#EXT-X-MAP:URI=\"cam-19a-init1.mp4\"\n#EXTINF:2.000,\ncam-19a-7.m4s\n";
        assert_eq!(
            keyed(p, "k"),
            "#EXTM3U\n#EXT-X-MAP:URI=\"cam-19a-init1.mp4?key=k\"\n#EXTINF:2.000,\ncam-19a-7.m4s?key=k\n"
        );
    }

    #[test]
    fn every_uri_of_a_low_latency_playlist_carries_the_key() {
        // parts, the preload hint, rendition reports: each URI kind a player fetches
        let p = "#EXTM3U\n#EXT-X-PART-INF:PART-TARGET=0.334\n#EXT-X-MAP:URI=\"c~1-t-init1.mp4\"\n\
                 #EXT-X-PART:DURATION=0.333,URI=\"c~1-t-7.0.m4s\",INDEPENDENT=YES\n\
                 #EXTINF:2.000,\nc~1-t-7.m4s\n#EXT-X-PART:DURATION=0.333,URI=\"c~1-t-8.0.m4s\"\n\
                 #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"c~1-t-8.1.m4s\"\n\
                 #EXT-X-RENDITION-REPORT:URI=\"c~0.m3u8\",LAST-MSN=8,LAST-PART=0\n";
        let out = keyed(p, "s3cret");
        for uri in ["c~1-t-init1.mp4", "c~1-t-7.0.m4s", "c~1-t-7.m4s", "c~1-t-8.0.m4s", "c~1-t-8.1.m4s", "c~0.m3u8"] {
            assert_eq!(out.matches(&format!("{uri}?key=s3cret")).count(), 1, "{uri} in {out}");
        }
        assert!(out.contains("#EXT-X-PART:DURATION=0.333,URI=\"c~1-t-7.0.m4s?key=s3cret\",INDEPENDENT=YES\n"), "{out}");
        assert!(out.contains("URI=\"c~0.m3u8?key=s3cret\",LAST-MSN=8,LAST-PART=0\n"), "{out}");
        // nothing else changed
        assert_eq!(out.replace("?key=s3cret", ""), p);
    }

    #[test]
    fn every_uri_of_a_multivariant_playlist_carries_the_key() {
        // the variants and the alternate audio renditions (a name is no URI, whatever it
        // holds); an URI with a query gets `&`
        let p = "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",NAME=\"x,URI=\",URI=\"c~a0.m3u8\"\n\
                 #EXT-X-STREAM-INF:BANDWIDTH=1,AUDIO=\"audio\"\nc~0.m3u8\n#EXT-X-STREAM-INF:BANDWIDTH=2\nc~1.m3u8?x=1\n";
        let out = keyed(p, "k");
        assert!(out.contains(",URI=\"c~a0.m3u8?key=k\"\n"), "{out}");
        assert!(out.contains("\nc~0.m3u8?key=k\n") && out.contains("\nc~1.m3u8?x=1&key=k\n"), "{out}");
        assert_eq!(out.matches("key=k").count(), 3, "{out}");
    }
}
