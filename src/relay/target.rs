//! Push target URLs: `rtmp://HOST[:PORT]/APP/STREAM[?QUERY]` and `rtmps://…` (port 1935 and
//! 443 by default), `{app}` and `{stream}` replaced by the pushed stream's names. The
//! first path part is the target's application, the rest its stream name (with the query,
//! as encoders send keys); `track=N` in the query is livegate's (which track of a multitrack
//! publish to push) and so is `tls_verify=0` (an `rtmps://` target whose certificate is not
//! checked: the only way to turn the check off, per target); neither is sent.

use std::fmt;

use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("push target {0:?}: the scheme must be rtmp:// or rtmps://")]
    Scheme(String),
    #[error("push target {0:?}: no host")]
    Host(String),
    #[error("push target {0:?}: the port must be a number from 1 to 65535")]
    Port(String),
    #[error("push target {0:?}: the path must be /APP/STREAM")]
    Path(String),
    #[error("push target {0:?}: track must be a number from 0 to 7")]
    Track(String),
    #[error("push target {0:?}: tls_verify=0 (no certificate check) applies to rtmps:// targets only; 1 or 0")]
    TlsVerify(String),
    #[error("push target {0:?}: longer than 2048 bytes or holds spaces or control characters")]
    Chars(String),
}

/// A parsed push target, names substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub app: String,
    /// The stream name as sent in `publish` (with the query but `track`).
    pub stream: String,
    /// The video track of a multitrack publish to push (0: the publish's own).
    pub track: u8,
    /// Check the RTMPS target's certificate (always, unless the URL says `tls_verify=0`).
    pub tls_verify: bool,
}

impl PushUrl {
    /// Parses `template` with `{app}` and `{stream}` replaced.
    pub fn parse(template: &str, app: &str, stream: &str) -> Result<Self, TargetError> {
        let url = template.replace("{app}", app).replace("{stream}", stream);
        let err_url = url.clone();
        if url.len() > 2048 || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            return Err(TargetError::Chars(err_url));
        }
        let (tls, rest) = if let Some(r) = url.strip_prefix("rtmp://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rtmps://") {
            (true, r)
        } else {
            return Err(TargetError::Scheme(err_url));
        };
        let (authority, path) = rest.split_once('/').ok_or_else(|| TargetError::Path(err_url.clone()))?;
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port =
                    p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| TargetError::Port(err_url.clone()))?;
                (h, port)
            }
            _ => (authority, if tls { 443 } else { 1935 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['@', '/', '?', '#']) {
            return Err(TargetError::Host(err_url));
        }
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        let (app_part, stream_part) = path.split_once('/').ok_or_else(|| TargetError::Path(err_url.clone()))?;
        if app_part.is_empty() || stream_part.is_empty() {
            return Err(TargetError::Path(err_url));
        }
        let mut track = 0u8;
        let mut tls_verify = true;
        let mut kept = Vec::new();
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("track", v)) => {
                    track = v.parse().ok().filter(|t| *t <= 7).ok_or_else(|| TargetError::Track(err_url.clone()))?
                }
                Some(("tls_verify", v)) => {
                    tls_verify = match v {
                        "1" | "true" => true,
                        "0" | "false" if tls => false,
                        _ => return Err(TargetError::TlsVerify(err_url)),
                    }
                }
                _ => kept.push(kv),
            }
        }
        let stream =
            if kept.is_empty() { stream_part.to_string() } else { format!("{stream_part}?{}", kept.join("&")) };
        Ok(Self { tls, host: host.to_string(), port, app: app_part.to_string(), stream, track, tls_verify })
    }

    /// `rtmp[s]://host:port/app`, sent as `tcUrl`.
    pub fn tc_url(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        format!("{}://{host}:{}/{}", if self.tls { "rtmps" } else { "rtmp" }, self.port, self.app)
    }

    /// The URL with the stream name's last part and the query masked (stream keys are
    /// secrets: YouTube's, Twitch's and Facebook's are the last path part): what logs and
    /// the API show.
    pub fn masked(&self) -> String {
        let (name, query) = self.stream.split_once('?').unwrap_or((&self.stream, ""));
        let (dirs, last) = name.rsplit_once('/').map_or(("", name), |(d, l)| (d, l));
        let shown = if last.len() <= 4 { "****".to_string() } else { format!("{}****", &last[..2]) };
        let mut s = format!("{}/", self.tc_url());
        if !dirs.is_empty() {
            s.push_str(dirs);
            s.push('/');
        }
        s.push_str(&shown);
        if !query.is_empty() {
            s.push_str("?****");
        }
        s
    }
}

impl fmt::Display for PushUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_with_names_substituted() {
        let u = PushUrl::parse("rtmp://127.0.0.1:1936/live/{stream}", "app1", "demo").unwrap();
        assert_eq!(
            u,
            PushUrl {
                tls: false,
                host: "127.0.0.1".into(),
                port: 1936,
                app: "live".into(),
                stream: "demo".into(),
                track: 0,
                tls_verify: true,
            }
        );
        assert_eq!(u.tc_url(), "rtmp://127.0.0.1:1936/live");
        let u = PushUrl::parse("rtmps://live-api-s.facebook.com/rtmp/FB-123-0-Ab?s_bl=1&track=2", "a", "b").unwrap();
        assert_eq!(
            (u.tls, u.port, u.app.as_str(), u.stream.as_str(), u.track),
            (true, 443, "rtmp", "FB-123-0-Ab?s_bl=1", 2)
        );
        assert_eq!(u.masked(), "rtmps://live-api-s.facebook.com:443/rtmp/FB****?****");
        let u = PushUrl::parse("rtmps://10.0.0.9/live/k?tls_verify=0", "a", "b").unwrap();
        assert_eq!((u.tls_verify, u.stream.as_str()), (false, "k"), "livegate's own, not sent");
        let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2/{app}-{stream}", "x", "y").unwrap();
        assert_eq!((u.port, u.stream.as_str()), (1935, "x-y"));
        let u = PushUrl::parse("rtmp://[::1]:1937/live/s", "a", "b").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1937));
        assert_eq!(u.tc_url(), "rtmp://[::1]:1937/live");
    }

    #[test]
    fn bad_targets_are_refused_with_the_reason() {
        for (url, want) in [
            ("http://h/live/s", "scheme"),
            ("rtmp:///live/s", "no host"),
            ("rtmp://h:0/live/s", "port"),
            ("rtmp://h:99999/live/s", "port"),
            ("rtmp://h:x/live/s", "port"),
            ("rtmp://h/live", "path"),
            ("rtmp://h/live/", "path"),
            ("rtmp://h", "path"),
            ("rtmp://u@h/live/s", "no host"),
            ("rtmp://h/live/s?track=9", "track"),
            ("rtmp://h/live/a b", "spaces"),
            ("rtmp://h/live/s?tls_verify=0", "rtmps:// targets only"),
            ("rtmps://h/live/s?tls_verify=maybe", "tls_verify"),
        ] {
            let e = PushUrl::parse(url, "a", "b").unwrap_err().to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }
}
