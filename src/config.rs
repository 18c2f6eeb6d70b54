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

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HlsConfig {
    /// Also write playlists and segments under this directory (`DIR/APP/STREAM.m3u8`).
    pub dir: Option<PathBuf>,
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
            bail!(
                "rtmp.out_chunk_size must be within 128..=16777215, got {}",
                self.rtmp.out_chunk_size
            );
        }
        if self.rtmp.max_message_size < 64 * 1024 || self.rtmp.max_message_size > 0x00ff_ffff {
            bail!(
                "rtmp.max_message_size must be within 65536..=16777215, got {}",
                self.rtmp.max_message_size
            );
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
