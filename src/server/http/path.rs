//! URL paths: splitting them into safe segments (a leaf module).

use crate::hub::valid_name;

/// Splits a URL path into safe segments (see [`valid_name`]: no `..`, no empty
/// segments, no percent-escapes).
pub(crate) fn split_path(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix('/')?;
    let segments: Vec<&str> = rest.split('/').collect();
    // names, and the track streams of a multitrack publish (`NAME~TRACK`: one `~`)
    let ok = segments.iter().all(|s| valid_name(s) || (!s.starts_with('~') && valid_name(&s.replacen('~', "", 1))));
    (ok && segments.len() <= 6).then_some(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_traversal_and_odd_names_are_refused() {
        assert_eq!(split_path("/live/a.flv"), Some(vec!["live", "a.flv"]));
        assert_eq!(split_path("/live/a~1.m3u8"), Some(vec!["live", "a~1.m3u8"]));
        assert_eq!(split_path("/api/streams/live/a/pushes/12").map(|v| v.len()), Some(6));
        for bad in ["/live/~a", "/live/a~~1", "/live/a~1~2.flv"] {
            assert_eq!(split_path(bad), None, "{bad}");
        }
        for bad in
            ["/live/../etc/passwd", "/../x", "/live/%2e%2e/x", "//x", "/live/.hidden", "live/a", "/a/b/c/d/e/f/g"]
        {
            assert_eq!(split_path(bad), None, "{bad}");
        }
    }
}
