//! The built-in pages: `GET /` is the console (`assets/console.*`: every live stream as a
//! card, see `console`), `GET /APP/STREAM` plays one
//! with hls.js or mpegts.js (HLS / HTTP-FLV switch, live latency shown), and
//! `/_player/…` serves the page script and the pinned player libraries from
//! `assets/`, embedded in the binary (no CDN: closed networks work).
//!
//! The page is the same static file for every stream: its script reads the key
//! from the URL, so nothing user-supplied is ever written into HTML. A stream
//! that is not (yet) live gets the page too; it shows "waiting for stream" and
//! retries, so an encoder restart or a page opened early recovers by itself.

use bytes::Bytes;
use hyper::header::{HeaderValue, X_CONTENT_TYPE_OPTIONS};
use hyper::Response;

use super::response::full;
use super::Body;
use crate::hub::{Hub, StreamKey};

pub(crate) const HLS_JS_VERSION: &str = "1.7.4";
pub(crate) const MPEGTS_JS_VERSION: &str = "1.8.2";

const PLAYER_HTML: &[u8] = include_bytes!("../../../assets/player.html");
const PLAYER_JS: &[u8] = include_bytes!("../../../assets/player.js");
const CONSOLE_HTML: &[u8] = include_bytes!("../../../assets/console.html");
const CONSOLE_JS: &[u8] = include_bytes!("../../../assets/console.js");
const HLS_JS: &[u8] = include_bytes!("../../../assets/vendor/hls.min.js");
const MPEGTS_JS: &[u8] = include_bytes!("../../../assets/vendor/mpegts.js");

const JS: &str = "text/javascript; charset=utf-8";
const HTML: &str = "text/html; charset=utf-8";
/// The vendored libraries are versioned in their URL, so they never change under it.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";
/// The page and its script follow the binary: revalidate.
const SHORT: &str = "no-cache";

/// `/_player/FILE`, or `/APP/STREAM` (no extension, or a live stream whose name has a dot).
pub(crate) fn route(segments: &[&str], hub: &Hub) -> Option<Response<Body>> {
    match segments {
        ["_player", file] => asset(file),
        ["favicon.ico"] => Some(super::response::empty(hyper::StatusCode::NO_CONTENT)),
        [app, name] if !name.contains('.') || hub.get(&StreamKey::new(*app, *name)).is_some() => {
            Some(page(PLAYER_HTML, HTML, SHORT))
        }
        _ => None,
    }
}

fn asset(file: &str) -> Option<Response<Body>> {
    let (body, ctype, cache) = match file {
        "player.js" => (PLAYER_JS, JS, SHORT),
        "console.js" => (CONSOLE_JS, JS, SHORT),
        f if f == format!("hls-{HLS_JS_VERSION}.min.js") => (HLS_JS, JS, IMMUTABLE),
        f if f == format!("mpegts-{MPEGTS_JS_VERSION}.js") => (MPEGTS_JS, JS, IMMUTABLE),
        _ => return None,
    };
    Some(page(body, ctype, cache))
}

fn page(body: &'static [u8], ctype: &'static str, cache: &'static str) -> Response<Body> {
    let mut r = full(ctype, cache, Bytes::from_static(body));
    r.headers_mut().insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    r
}

/// `GET /`: the console (`assets/console.html`; its script reads everything from the API).
pub(crate) fn index() -> Response<Body> {
    page(CONSOLE_HTML, HTML, SHORT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_are_embedded_and_versioned() {
        let hub = Hub::new(Default::default());
        let hls = route(&["_player", &format!("hls-{HLS_JS_VERSION}.min.js")], &hub).expect("hls.js");
        assert_eq!(hls.headers()["content-type"], JS);
        assert_eq!(hls.headers()["cache-control"], IMMUTABLE);
        assert!(route(&["_player", "hls.min.js"], &hub).is_none());
        assert!(route(&["_player", "nope.js"], &hub).is_none());
        let p = route(&["live", "demo"], &hub).expect("player page");
        assert_eq!(p.headers()["content-type"], HTML);
        assert!(route(&["live", "demo.mp4"], &hub).is_none(), "a dotted name that is not live");
        let html = std::str::from_utf8(PLAYER_HTML).unwrap();
        assert!(html.contains(&format!("/_player/hls-{HLS_JS_VERSION}.min.js")), "page loads the served hls.js");
        assert!(html.contains(&format!("/_player/mpegts-{MPEGTS_JS_VERSION}.js")), "page loads the served mpegts.js");
        assert!(std::str::from_utf8(HLS_JS).unwrap().contains(HLS_JS_VERSION), "hls.js version matches");
    }
}
