//! Response helpers shared by the HTTP handlers: a leaf module (it imports no handler
//! and not the router).

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::{Body, HttpContext};
use crate::auth::Denied;

/// 401 for a missing or wrong key, 403 when a callback said no.
pub(crate) fn refused(ctx: &HttpContext, denied: &Denied) -> Response<Body> {
    ctx.svc.metrics.refused(denied.reason(), serde_json::json!({ "protocol": "http", "why": denied.to_string() }));
    match denied {
        Denied::BadKey => text(StatusCode::UNAUTHORIZED, "unauthorized\n"),
        Denied::Busy => text(StatusCode::SERVICE_UNAVAILABLE, "busy, try again\n"),
        _ => text(StatusCode::FORBIDDEN, "forbidden\n"),
    }
}

/// The app's play keys, for media served without a viewer's admission (recordings,
/// keyframes): None when allowed, else the refusal.
pub(crate) fn play_key_refusal(
    ctx: &HttpContext,
    app: &str,
    stream: &str,
    peer: std::net::SocketAddr,
    protocol: &str,
    query: &str,
) -> Option<Response<Body>> {
    let settings = ctx.svc.settings.get();
    let auth = &settings.apps.get(app).auth;
    let req =
        crate::auth::AuthRequest { action: crate::auth::Action::Play, app, stream, client: peer, protocol, query };
    ctx.svc.auth.check_keys(auth, &req).err().map(|denied| refused(ctx, &denied))
}

/// Whether the app's media must stay out of shared caches (it has play keys).
pub(crate) fn keyed(ctx: &HttpContext, app: &str) -> bool {
    !ctx.svc.settings.get().apps.get(app).auth.play_keys.is_empty()
}

/// The configured `Access-Control-Allow-Origin`, on every answer.
pub(crate) fn allow_origin<B>(resp: &mut Response<B>, ctx: &HttpContext) {
    if let Ok(v) = HeaderValue::from_str(&ctx.config.cors_allow_origin) {
        resp.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
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
