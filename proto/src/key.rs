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

    /// The key of video track `track` of a multitrack publish on this key: `NAME~TRACK`
    /// (`~` is not allowed in published names, so it never collides with one).
    pub fn track(&self, track: u8) -> Self {
        Self::new(self.app.clone(), format!("{}~{track}", self.name))
    }

    /// The key of audio track `track` of a multitrack publish on this key: `NAME~aTRACK`.
    pub fn audio_track(&self, track: u8) -> Self {
        Self::new(self.app.clone(), format!("{}~a{track}", self.name))
    }

    /// For a track key (`NAME~TRACK` or `NAME~aTRACK`), the key it belongs to and the track.
    pub fn split_track(&self) -> Option<(StreamKey, Track)> {
        let (name, track) = self.name.rsplit_once('~')?;
        let track = match track.strip_prefix('a') {
            Some(audio) => Track::Audio(audio.parse().ok()?),
            None => Track::Video(track.parse().ok()?),
        };
        Some((Self::new(self.app.clone(), name), track))
    }

    /// A key from client input, or `None` unless both parts are safe names (see [`valid_name`]).
    pub fn parse(app: &str, name: &str) -> Option<Self> {
        (valid_name(app) && valid_name(name)).then(|| Self::new(app, name))
    }
}

/// A track of a multitrack publish (E-RTMP track ids are per media kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Track {
    Video(u8),
    Audio(u8),
}

/// Names usable as app and stream: 1 to 128 of `[A-Za-z0-9_.-]`, not starting
/// with a dot. They become URL path segments, file names and metric labels.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A name a stream may have: a publish's (see [`valid_name`]) or one of its track streams'
/// (`NAME~N`, `NAME~aN`). Safe as a URL path segment and a file name.
pub fn valid_stream_name(s: &str) -> bool {
    valid_name(s) || StreamKey::new("", s).split_track().is_some_and(|(main, _)| valid_name(&main.name))
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.app, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn track_keys_round_trip() {
        let key = StreamKey::new("live", "demo");
        assert_eq!(key.track(2).to_string(), "live/demo~2");
        assert_eq!(key.audio_track(1).to_string(), "live/demo~a1");
        assert_eq!(key.track(2).split_track(), Some((key.clone(), Track::Video(2))));
        assert_eq!(key.audio_track(1).split_track(), Some((key.clone(), Track::Audio(1))));
        for bad in ["demo", "demo~", "demo~a", "demo~x1", "demo~256", "demo~a-1"] {
            assert_eq!(StreamKey::new("live", bad).split_track(), None, "{bad}");
        }
        for good in ["demo", "demo~2", "demo~a1"] {
            assert!(valid_stream_name(good), "{good}");
        }
        for bad in ["demo~", "~1", "demo~x1", "demo~1~2", "../x~1", ".x~1", "a/b~1"] {
            assert!(!valid_stream_name(bad), "{bad}");
        }
    }
}
