//! Recordings over HTTP: `GET`/`HEAD /recordings/APP/STREAM/FILE.mp4` with `Accept-Ranges`,
//! one `Range` (206, or 416 when it is outside the file), an `ETag` (size and modification
//! time; `If-None-Match` answers 304) and the app's play keys. The body is read from the
//! file as hyper takes it, 64 KiB at a time.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty};
use hyper::body::Frame;
use hyper::header::{
    HeaderMap, HeaderValue, ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE,
};
use hyper::{Response, StatusCode};
use tokio::io::{AsyncRead, AsyncSeekExt, ReadBuf};

use super::response::{not_found, text};
use super::Body;

const CHUNK: usize = 64 * 1024;

/// A byte range of a file of `len` bytes asked by `Range`: (first, last) inclusive; Err when
/// it cannot be satisfied; Ok(None) for no (or an unsupported) `Range`.
fn range(header: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(spec) = header.and_then(|h| h.to_str().ok()).and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    // one range; a list of ranges is answered with the whole file
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (a, b) = (a.trim(), b.trim());
    let (first, last) = if a.is_empty() {
        // the last N bytes
        let n: u64 = b.parse().map_err(|_| ())?;
        if n == 0 || len == 0 {
            return Err(());
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let first: u64 = a.parse().map_err(|_| ())?;
        let last: u64 = if b.is_empty() { len.saturating_sub(1) } else { b.parse().map_err(|_| ())? };
        (first, last.min(len.saturating_sub(1)))
    };
    if first >= len || first > last {
        return Err(());
    }
    Ok(Some((first, last)))
}

/// Answers a `GET` or `HEAD` for the file at `path` (hyper sends no body for a `HEAD`).
pub(crate) async fn serve(path: std::path::PathBuf, headers: &HeaderMap) -> Response<Body> {
    let Ok(mut file) = tokio::fs::File::open(&path).await else { return not_found() };
    let Ok(meta) = file.metadata().await else { return not_found() };
    if !meta.is_file() {
        return not_found();
    }
    let len = meta.len();
    let mtime =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let etag = format!("\"{len:x}-{mtime:x}\"");
    let mut resp = if headers.get(hyper::header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        let mut r = Response::new(Empty::new().boxed());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        match range(headers.get(hyper::header::RANGE), len) {
            Err(()) => {
                let mut r = text(StatusCode::RANGE_NOT_SATISFIABLE, "range not satisfiable\n");
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    r.headers_mut().insert(CONTENT_RANGE, v);
                }
                return r;
            }
            Ok(r) => {
                let (first, last, status) = match r {
                    Some((f, l)) => (f, l, StatusCode::PARTIAL_CONTENT),
                    None => (0, len.saturating_sub(1), StatusCode::OK),
                };
                let count = if len == 0 { 0 } else { last - first + 1 };
                if first > 0 && file.seek(std::io::SeekFrom::Start(first)).await.is_err() {
                    return not_found();
                }
                // (the file's body for a HEAD too: hyper sends none of it, and keeps the
                // length, which it would set to 0 for a known empty body)
                let body = if count == 0 {
                    Empty::new().boxed()
                } else {
                    FileBody { file, left: count, buf: BytesMut::new() }.boxed()
                };
                let mut r = Response::new(body);
                *r.status_mut() = status;
                r.headers_mut().insert(CONTENT_LENGTH, HeaderValue::from(count));
                if status == StatusCode::PARTIAL_CONTENT {
                    if let Ok(v) = HeaderValue::from_str(&format!("bytes {first}-{last}/{len}")) {
                        r.headers_mut().insert(CONTENT_RANGE, v);
                    }
                }
                r
            }
        }
    };
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    h.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(hyper::header::ETAG, v);
    }
    resp
}

/// `left` bytes of `file` from where it stands.
struct FileBody {
    file: tokio::fs::File,
    left: u64,
    buf: BytesMut,
}

impl hyper::body::Body for FileBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.left == 0 {
            return Poll::Ready(None);
        }
        let want = usize::try_from(this.left).unwrap_or(CHUNK).min(CHUNK);
        // a chunk of its own (hyper keeps it until written): zeroed, then filled
        if this.buf.len() != want {
            this.buf = BytesMut::zeroed(want);
        }
        let mut rb = ReadBuf::new(&mut this.buf[..]);
        match Pin::new(&mut this.file).poll_read(cx, &mut rb) {
            Poll::Pending => Poll::Pending,
            // a read error or a file cut short ends the body (the client sees fewer bytes
            // than Content-Length said)
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Ready(Ok(())) => {
                let n = rb.filled().len();
                if n == 0 {
                    return Poll::Ready(None);
                }
                let mut chunk = std::mem::take(&mut this.buf);
                chunk.truncate(n);
                this.left -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk.freeze()))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let h = |s: &'static str| Some(HeaderValue::from_static(s));
        assert_eq!(range(None, 100), Ok(None));
        assert_eq!(range(h("bytes=0-9").as_ref(), 100), Ok(Some((0, 9))));
        assert_eq!(range(h("bytes=90-").as_ref(), 100), Ok(Some((90, 99))));
        assert_eq!(range(h("bytes=-10").as_ref(), 100), Ok(Some((90, 99))));
        assert_eq!(range(h("bytes=50-500").as_ref(), 100), Ok(Some((50, 99))));
        assert_eq!(range(h("bytes=100-").as_ref(), 100), Err(()));
        assert_eq!(range(h("bytes=9-3").as_ref(), 100), Err(()));
        assert_eq!(range(h("bytes=x-3").as_ref(), 100), Err(()));
        assert_eq!(range(h("bytes=0-1,5-6").as_ref(), 100), Ok(None));
        assert_eq!(range(h("items=0-1").as_ref(), 100), Ok(None));
    }
}
