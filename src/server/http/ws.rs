//! WebSocket-FLV: the HTTP-FLV stream over a WebSocket at the same URL
//! (`ws://HOST:8080/APP/STREAM.flv`, an HTTP/1.1 upgrade; over HTTPS with HTTP/2 also an
//! RFC 8441 extended CONNECT on a stream of the connection), for players and networks that
//! need WebSockets (mpegts.js plays it). Same admission (keys, callback, viewer limit) and
//! the same body and stall watchdog as HTTP-FLV; each batch of FLV pieces goes out as one
//! binary frame, written vectored after its frame header (no copy of the media).
//!
//! The framing comes from `tungstenite` (frame headers, the accept key); its whole
//! `WebSocket` type is not used because it copies every message into its own buffer. The
//! client's frames are read by `ws_frames::ClientFrames` (sans-IO): pings are answered, a close is
//! echoed and ends the play, data frames are ignored within a budget, an oversized frame
//! or a protocol error closes the connection.

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::header::{HeaderValue, CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::response::{empty, text};
use super::socket::{play, Framing};
use super::{Body, HttpContext};
use crate::hub::StreamKey;
use crate::session::Output;

/// Whether `req` asks for a WebSocket (RFC 6455 §4.2.1).
pub(crate) fn is_upgrade<B>(req: &Request<B>) -> bool {
    let has = |name, token: &str| {
        req.headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    has(UPGRADE, "websocket") && has(CONNECTION, "upgrade")
}

/// Whether `req` is an RFC 8441 extended CONNECT for a WebSocket (HTTP/2, `:protocol`
/// `websocket`; the server offers it with SETTINGS_ENABLE_CONNECT_PROTOCOL).
pub(crate) fn is_h2_connect<B>(req: &Request<B>) -> bool {
    req.method() == hyper::Method::CONNECT
        && req.extensions().get::<hyper::ext::Protocol>().is_some_and(|p| p.as_str().eq_ignore_ascii_case("websocket"))
}

/// Answers a WebSocket upgrade of `key`'s FLV: `101 Switching Protocols` (HTTP/1.1) or
/// `200` (an RFC 8441 CONNECT over HTTP/2, which has no key to accept) and a task that
/// streams the FLV once hyper hands over the connection or the stream; or the refusal.
pub(crate) async fn serve<B>(
    mut req: Request<B>,
    key: StreamKey,
    query: &str,
    peer: SocketAddr,
    ctx: &Arc<HttpContext>,
) -> Response<Body> {
    let version_ok = req.headers().get(SEC_WEBSOCKET_VERSION).is_some_and(|v| v.as_bytes() == b"13");
    // the Sec-WebSocket-Accept of an HTTP/1.1 upgrade; none for an RFC 8441 CONNECT
    let accept = match (is_h2_connect(&req), req.headers().get(SEC_WEBSOCKET_KEY)) {
        (true, _) => None,
        (false, Some(k)) => Some(tungstenite::handshake::derive_accept_key(k.as_bytes())),
        (false, None) => return text(StatusCode::BAD_REQUEST, "WebSocket upgrade without Sec-WebSocket-Key\n"),
    };
    if !version_ok {
        let mut r = text(StatusCode::UPGRADE_REQUIRED, "WebSocket version 13 only\n");
        r.headers_mut().insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return r;
    }
    let (stream, guard) = match super::flv::admit(&key, query, peer, ctx, Output::WsFlv).await {
        Ok(admitted) => admitted,
        Err(refusal) => return *refusal,
    };
    let kill = CancellationToken::new();
    let body = super::flv::start(stream, guard, key, query, peer, ctx, kill.clone(), Output::WsFlv);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => play(TokioIo::new(io), body, kill, peer, Framing::WebSocket).await,
            Err(e) => debug!(%peer, "WebSocket upgrade did not complete: {e}"),
        }
    });
    let Some(accept) = accept else {
        return empty(StatusCode::OK);
    };
    let mut r = empty(StatusCode::SWITCHING_PROTOCOLS);
    let h = r.headers_mut();
    h.insert(UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(SEC_WEBSOCKET_ACCEPT, v);
    }
    r
}
