//! A connection on the RTMP port that speaks HTTP: a browser opened `http://HOST:1935/`
//! (as the article this project started from tells its readers) to see whether the RTMP
//! server runs. An RTMP client's first byte is its version (3, or 6 for RTMPE), never an
//! HTTP method's first letter, so the two never mix up. Sans-IO: bytes in, an answer out.

/// What the first bytes of a connection are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpProbe {
    /// Not HTTP (RTMP goes on).
    NotHttp,
    /// The start of an HTTP request: wait for its headers.
    Partial,
    /// An HTTP request (its headers complete, or too long to wait for): answer it.
    Request { head: bool, host: Option<String> },
}

/// The longest request head read; a longer one is answered with what came.
pub const MAX_HEAD: usize = 8 * 1024;

const METHODS: [&[u8]; 7] = [b"GET ", b"HEAD ", b"POST ", b"PUT ", b"OPTIONS ", b"DELETE ", b"PATCH "];

/// Looks at what a connection sent first.
pub fn probe_http(input: &[u8]) -> HttpProbe {
    let prefix = |m: &[u8]| input.len().min(m.len());
    let method = METHODS.iter().find(|m| input[..prefix(m)] == m[..prefix(m)]);
    let Some(method) = method else { return HttpProbe::NotHttp };
    if input.len() < method.len() {
        return HttpProbe::Partial;
    }
    let end = input.windows(4).position(|w| w == b"\r\n\r\n").or_else(|| input.windows(2).position(|w| w == b"\n\n"));
    if end.is_none() && input.len() < MAX_HEAD {
        return HttpProbe::Partial;
    }
    let head = &input[..end.unwrap_or(input.len()).min(MAX_HEAD)];
    let host = head
        .split(|&b| b == b'\n')
        .filter_map(|l| std::str::from_utf8(l).ok())
        .find_map(|l| l.split_once(':').filter(|(k, _)| k.trim().eq_ignore_ascii_case("host")).map(|(_, v)| v.trim()))
        .map(host_without_port)
        .filter(|h| {
            !h.is_empty() && h.len() <= 255 && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        })
        .map(str::to_string);
    HttpProbe::Request { head: method.starts_with(b"HEAD"), host }
}

fn host_without_port(host: &str) -> &str {
    match host.strip_prefix('[') {
        // [v6]:port
        Some(rest) => rest.split(']').next().map_or(host, |h| &host[..h.len() + 2]),
        None if host.matches(':').count() == 1 => host.split(':').next().unwrap_or(host),
        None => host,
    }
}

/// What the server tells such a client.
#[derive(Debug, Clone)]
pub struct StatusPage<'a> {
    pub version: &'a str,
    pub live_streams: usize,
    /// The host the client asked for (its `Host` header without the port), or the address
    /// it connected to.
    pub host: &'a str,
    pub http_port: u16,
    pub rtmp_port: u16,
}

/// A short `200 OK` page (text): the RTMP server is running, its version, the live stream
/// count and where its player and stream list are. `Connection: close`.
pub fn status_response(page: &StatusPage<'_>, head: bool) -> Vec<u8> {
    let index = format!("http://{}:{}/", page.host, page.http_port);
    let body = format!(
        "livegate {version}: the RTMP server is running on this port.\n\
         Live streams: {live}\n\
         Publish to rtmp://{host}:{rtmp}/APP/STREAM (e.g. rtmp://{host}:{rtmp}/live/demo).\n\
         Players, the stream list and HLS / HTTP-FLV: {index}\n",
        version = page.version,
        live = page.live_streams,
        host = page.host,
        rtmp = page.rtmp_port,
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nServer: livegate/{}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nLink: <{index}>; rel=\"index\"\r\nConnection: close\r\n\r\n",
        page.version,
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtmp_bytes_are_not_http_and_requests_are_read_whole() {
        assert_eq!(probe_http(&[3, 0, 0, 0]), HttpProbe::NotHttp);
        assert_eq!(probe_http(&[6]), HttpProbe::NotHttp);
        assert_eq!(probe_http(b"GEX"), HttpProbe::NotHttp);
        assert_eq!(probe_http(b""), HttpProbe::Partial);
        assert_eq!(probe_http(b"GE"), HttpProbe::Partial);
        assert_eq!(probe_http(b"GET / HTTP/1.1\r\nHost: a\r\n"), HttpProbe::Partial);
        assert_eq!(
            probe_http(b"GET / HTTP/1.1\r\nHost: example.org:1935\r\nAccept: */*\r\n\r\n"),
            HttpProbe::Request { head: false, host: Some("example.org".into()) }
        );
        assert_eq!(
            probe_http(b"HEAD / HTTP/1.0\r\nhost: [::1]:1935\r\n\r\n"),
            HttpProbe::Request { head: true, host: Some("[::1]".into()) }
        );
        // a hostile Host header is not echoed; a head that never ends is answered at 8 KiB
        assert_eq!(
            probe_http(b"GET / HTTP/1.1\r\nHost: <script>\r\n\r\n"),
            HttpProbe::Request { head: false, host: None }
        );
        let mut long = b"GET /".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(probe_http(&long), HttpProbe::Request { head: false, host: None });
    }

    #[test]
    fn the_status_page_says_what_runs_and_where_to_look() {
        let page =
            StatusPage { version: "0.1.0", live_streams: 2, host: "example.org", http_port: 8080, rtmp_port: 1935 };
        let text = String::from_utf8(status_response(&page, false)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.contains("Connection: close"), "{head}");
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        assert!(body.contains("livegate 0.1.0") && body.contains("Live streams: 2"), "{body}");
        assert!(body.contains("http://example.org:8080/"), "{body}");
        let head_only = status_response(&page, true);
        assert!(head_only.ends_with(b"\r\n\r\n"));
    }
}
