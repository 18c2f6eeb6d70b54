//! Typed configuration. Built-in defaults equal `config/livegate.toml`;
//! unknown keys are rejected; each component receives only its own section.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::hub::HubConfig;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub rtmp: RtmpConfig,
    pub http: HttpConfig,
    pub hub: HubConfig,
    pub hls: HlsConfig,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address of the RTMP listener (publish and play).
    pub listen: SocketAddr,
    /// A client must finish the handshake within this time.
    pub handshake_timeout_ms: u64,
    /// A connection that sends nothing for this long is closed (publishers that stop sending, idle clients).
    pub idle_timeout_ms: u64,
    /// Largest RTMP message accepted, in bytes; larger declared lengths close the connection.
    pub max_message_size: u32,
    /// Chunk size announced to clients for what we send.
    pub out_chunk_size: u32,
    /// An RTMP viewer whose socket accepts nothing for this long is disconnected.
    pub viewer_stall_timeout_ms: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_message_size: 8 * 1024 * 1024,
            out_chunk_size: 65_536,
            viewer_stall_timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the HTTP listener (HTTP-FLV, HLS, API, metrics).
    pub listen: SocketAddr,
    /// An HTTP-FLV viewer whose socket accepts nothing for this long is disconnected.
    pub viewer_stall_timeout_ms: u64,
    /// Value of `Access-Control-Allow-Origin` on every response.
    pub cors_allow_origin: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            viewer_stall_timeout_ms: 10_000,
            cors_allow_origin: "*".to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Serve every live stream as HLS at /APP/STREAM.m3u8.
    pub enabled: bool,
    /// Also write playlists and segments under this directory (`DIR/APP/STREAM.m3u8`).
    pub dir: Option<PathBuf>,
    /// Wanted segment duration; segments are cut at the first keyframe past it.
    pub target_duration_ms: u64,
    /// Minimum number of segments listed in the live playlist.
    pub window_segments: usize,
    /// Minimum media duration listed (at least 3 × target duration is always kept).
    pub min_window_ms: u64,
    /// After the publisher leaves, the ended playlist stays readable this long, and a
    /// republish within it continues the media sequence (with a discontinuity).
    pub hold_time_ms: u64,
    /// After the publisher leaves, wait this long before adding `EXT-X-ENDLIST`: players
    /// (hls.js) stop reloading an ended playlist for good, so an encoder that reconnects
    /// within this delay continues seamlessly (after a discontinuity). 0: at once.
    pub endlist_delay_ms: u64,
}

impl Default for HlsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            target_duration_ms: 2000,
            window_segments: 6,
            min_window_ms: 0,
            hold_time_ms: 60_000,
            endlist_delay_ms: 10_000,
        }
    }
}

impl Config {
    /// Reads and validates a TOML file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let config: Config = toml::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if self.rtmp.out_chunk_size < 128 || self.rtmp.out_chunk_size > 0x00ff_ffff {
            bail!("rtmp.out_chunk_size must be within 128..=16777215, got {}", self.rtmp.out_chunk_size);
        }
        if self.rtmp.max_message_size < 64 * 1024 || self.rtmp.max_message_size > 0x00ff_ffff {
            bail!("rtmp.max_message_size must be within 65536..=16777215, got {}", self.rtmp.max_message_size);
        }
        for (name, v) in [
            ("rtmp.handshake_timeout_ms", self.rtmp.handshake_timeout_ms),
            ("rtmp.idle_timeout_ms", self.rtmp.idle_timeout_ms),
            ("rtmp.viewer_stall_timeout_ms", self.rtmp.viewer_stall_timeout_ms),
            ("http.viewer_stall_timeout_ms", self.http.viewer_stall_timeout_ms),
        ] {
            if v == 0 {
                bail!("{name} must be greater than 0");
            }
        }
        if !(500..=30_000).contains(&self.hls.target_duration_ms) {
            bail!("hls.target_duration_ms must be within 500..=30000, got {}", self.hls.target_duration_ms);
        }
        if !(3..=100).contains(&self.hls.window_segments) {
            bail!("hls.window_segments must be within 3..=100, got {}", self.hls.window_segments);
        }
        if self.hub.ring_events < 16 {
            bail!("hub.ring_events must be at least 16, got {}", self.hub.ring_events);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_file_equals_defaults() {
        let text = include_str!("../config/livegate.toml");
        assert_eq!(Config::parse(text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_rejected() {
        let err = Config::parse("[rtmp]\nlisten = \"0.0.0.0:1\"\nbogus = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("bogus"), "{err:#}");
        assert!(Config::parse("[nope]\n").is_err());
        assert!(Config::parse("[rtmp]\nout_chunk_size = 0\n").is_err());
        assert!(Config::parse("[rtmp]\nlisten = \"not an address\"\n").is_err());
    }
}
