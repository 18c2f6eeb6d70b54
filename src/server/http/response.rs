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
        Denied::BadToken(crate::auth::TokenError::KeysLoading) => {
            text(StatusCode::SERVICE_UNAVAILABLE, "the token's key set is being loaded; try again\n")
        }
        // says why (the token's holder made it; nothing secret is in the reason)
        Denied::BadToken(why) => {
            let mut r = text(StatusCode::UNAUTHORIZED, "unauthorized\n");
            *r.body_mut() = Full::new(Bytes::from(format!("unauthorized: {why}\n"))).boxed();
            r.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
            r
        }
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

/// Whether the app's media must stay out of shared caches (it has play keys or play tokens).
pub(crate) fn keyed(ctx: &HttpContext, app: &str) -> bool {
    let settings = ctx.svc.settings.get();
    let auth = &settings.apps.get(app).auth;
    !auth.play_keys.is_empty() || auth.jwt_covers(crate::auth::Action::Play)
}

/// The credentials a playlist's URIs carry (`key=K`, `jwt=T`, joined by `&`): those of the
/// playlist request that the app checks for play. None when it checks none.
pub(crate) fn credentials(auth: &crate::auth::AuthConfig, query: &str) -> Option<String> {
    use crate::auth::query_param;
    let key = query_param(query, "key").filter(|_| !auth.play_keys.is_empty()).map(|k| format!("key={k}"));
    let jwt =
        (query_param(query, "jwt").filter(|_| auth.jwt_covers(crate::auth::Action::Play))).map(|t| format!("jwt={t}"));
    match (key, jwt) {
        (Some(k), Some(j)) => Some(format!("{k}&{j}")),
        (k, j) => k.or(j),
    }
}

/// `query` with the token of an `Authorization: Bearer` header added as `jwt=` (unless the
/// query has one): HTTP media requests may carry their token either way. Only a value
/// shaped like a JWT (three dot-separated parts) is taken: the admin API's bearer token is
/// another thing.
pub(crate) fn with_bearer<'a>(query: &'a str, headers: &hyper::HeaderMap) -> std::borrow::Cow<'a, str> {
    let bearer = (headers.get(hyper::header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| &v[7..]))
        .map(str::trim)
        .filter(|t| t.split('.').count() == 3 && t.len() <= crate::auth::jwt::MAX_TOKEN_BYTES)
        .filter(|t| t.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    match bearer {
        Some(t) if crate::auth::query_param(query, "jwt").is_none() => {
            let sep = if query.is_empty() { "" } else { "&" };
            std::borrow::Cow::Owned(format!("{query}{sep}jwt={t}"))
        }
        _ => std::borrow::Cow::Borrowed(query),
    }
}

/// The configured `Access-Control-Allow-Origin`, on every answer, and the same origins in
/// `Timing-Allow-Origin`: a player page of those origins may read the resource timing of
/// its media requests (protocol, sizes, durations), as player analytics do.
pub(crate) fn allow_origin<B>(resp: &mut Response<B>, ctx: &HttpContext) {
    if let Ok(v) = HeaderValue::from_str(&ctx.config.cors_allow_origin) {
        resp.headers_mut().insert(hyper::header::HeaderName::from_static("timing-allow-origin"), v.clone());
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
