//! Stream keys (`APP/STREAM`) and the names they are made of.

use std::fmt;

/// `APP/STREAM`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamKey {
    pub app: String,
    pub name: String,
}

impl StreamKey {
    pub fn new(app: impl Into<String>, name: impl Into<String>) -> Self {
        Self { app: app.into(), name: name.into() }
    }

    /// The key of track `track` of a multitrack publish on this key: `NAME~TRACK` (`~` is
    /// not allowed in published names, so it never collides with one).
    pub fn track(&self, track: u8) -> Self {
        Self::new(self.app.clone(), format!("{}~{track}", self.name))
    }

    /// For a track key (`NAME~TRACK`), the key it belongs to and the track.
    pub fn split_track(&self) -> Option<(StreamKey, u8)> {
        let (name, track) = self.name.rsplit_once('~')?;
        Some((Self::new(self.app.clone(), name), track.parse().ok()?))
    }

    /// A key from client input, or `None` unless both parts are safe names (see [`valid_name`]).
    pub fn parse(app: &str, name: &str) -> Option<Self> {
        (valid_name(app) && valid_name(name)).then(|| Self::new(app, name))
    }
}

/// Names usable as app and stream: 1 to 128 of `[A-Za-z0-9_.-]`, not starting
/// with a dot. They become URL path segments, file names and metric labels.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}
