//! Request routing and response helpers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use tokio_util::sync::CancellationToken;

use super::{Body, HttpState};
use crate::hub::{valid_name, StreamKey};

pub(crate) async fn handle<B>(
    req: Request<B>,
    peer: SocketAddr,
    state: Arc<HttpState>,
    kill: CancellationToken,
) -> Response<Body> {
    let head = req.method() == Method::HEAD;
    let mut resp = match *req.method() {
        Method::GET | Method::HEAD => route(req.uri().path(), head, peer, &state, kill).await,
        Method::OPTIONS => {
            let mut r = empty(StatusCode::NO_CONTENT);
            r.headers_mut().insert("access-control-allow-methods", HeaderValue::from_static("GET, HEAD, OPTIONS"));
            r.headers_mut().insert("access-control-allow-headers", HeaderValue::from_static("*"));
            r
        }
        _ => text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    };
    if let Ok(v) = HeaderValue::from_str(&state.config.cors_allow_origin) {
        resp.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    if head {
        let (parts, _) = resp.into_parts();
        resp = Response::from_parts(parts, Empty::new().boxed());
    }
    resp
}

async fn route(
    path: &str,
    head: bool,
    peer: SocketAddr,
    state: &Arc<HttpState>,
    kill: CancellationToken,
) -> Response<Body> {
    match path {
        "/healthz" => return text(StatusCode::OK, "ok\n"),
        "/api/streams" => return super::api::streams(&state.hub),
        "/metrics" => return super::api::metrics(&state.hub),
        "/" => return super::player::index(&state.hub),
        _ => {}
    }
    let Some(segments) = split_path(path) else {
        return text(StatusCode::BAD_REQUEST, "bad path\n");
    };
    if let [app, file] = segments.as_slice() {
        if let Some(name) = file.strip_suffix(".flv").filter(|n| !n.is_empty()) {
            let key = StreamKey::new(*app, name);
            return super::flv::serve(key, head, peer, state, kill);
        }
        if let Some(name) = file.strip_suffix(".m3u8").filter(|n| !n.is_empty()) {
            return match state.hls.playlist(&StreamKey::new(*app, name)) {
                Some(text) => full("application/vnd.apple.mpegurl", "max-age=1", text),
                None => not_found(),
            };
        }
        if file.ends_with(".ts") {
            return match state.hls.segment(app, file) {
                Some(data) => full("video/mp2t", "public, max-age=31536000, immutable", data),
                None => not_found(),
            };
        }
    }
    super::player::route(&segments, &state.hub).unwrap_or_else(not_found)
}

/// Splits a URL path into safe segments (see [`valid_name`]: no `..`, no empty
/// segments, no percent-escapes).
pub(crate) fn split_path(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    let ok = segments.iter().all(|s| valid_name(s));
    (ok && segments.len() <= 4).then_some(segments)
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub(crate) fn not_found() -> Response<Body> {
    text(StatusCode::NOT_FOUND, "not found\n")
}

pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(Empty::new().boxed());
    *r.status_mut() = status;
    r
}

pub(crate) fn full(content_type: &'static str, cache: &'static str, body: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(body).boxed());
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static(cache));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_traversal_and_odd_names_are_refused() {
        assert_eq!(split_path("/live/a.flv"), Some(vec!["live", "a.flv"]));
        for bad in ["/live/../etc/passwd", "/../x", "/live/%2e%2e/x", "//x", "/live/.hidden", "live/a", "/a/b/c/d/e"] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
    }
}
