//! Publish and play authorization: static keys (`?key=SECRET`), JSON Web Tokens
//! (`?jwt=`, see [`jwt`]) and HTTP callbacks in the manner of nginx-rtmp's
//! on_publish/on_play and SRS's http_hooks. A callback gets a JSON POST; any 2xx allows,
//! anything else or a timeout denies. on_unpublish / on_done are fire-and-forget
//! notifications.

pub mod jwt;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tokio::sync::Semaphore;
use tracing::{debug, warn};

use crate::hub::Credential;
pub use jwt::{TokenError, Verifier};

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// When not empty, publishing needs `?key=K` with K one of these.
    pub publish_keys: Vec<String>,
    /// When not empty, playing (RTMP, HTTP-FLV, HLS playlists) needs `?key=K` with K one of these.
    pub play_keys: Vec<String>,
    /// http:// URL POSTed before a publish is accepted.
    pub on_publish: Option<String>,
    /// http:// URL POSTed before a viewer is accepted.
    pub on_play: Option<String>,
    /// http:// URL notified when a publisher leaves.
    pub on_unpublish: Option<String>,
    /// http:// URL notified when a viewer leaves.
    pub on_done: Option<String>,
    /// http:// URL notified when a recording file is finalized (JSON: app, stream, path,
    /// start, duration, bytes, codecs, gaps).
    pub on_record_done: Option<String>,
    /// A callback that takes longer denies.
    pub callback_timeout_ms: u64,
    /// HS256 secret: with it (or `jwt_jwks`), the actions of `jwt_actions` need a valid
    /// token (`?jwt=`, or `Authorization: Bearer` over HTTP), or a key where keys are set.
    pub jwt_secret: Option<String>,
    /// RS256/ES256 keys: a JWKS file, or an http(s) URL (fetched with a timeout and a byte
    /// bound, refreshed every 5 min, the last good set kept).
    pub jwt_jwks: Option<String>,
    /// When set, a token's `iss` must be this.
    pub jwt_issuer: Option<String>,
    /// When set, a token's `aud` must hold this.
    pub jwt_audience: Option<String>,
    /// What tokens are required for (`publish`, `play`).
    pub jwt_actions: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            publish_keys: Vec::new(),
            play_keys: Vec::new(),
            on_publish: None,
            on_play: None,
            on_unpublish: None,
            on_done: None,
            on_record_done: None,
            callback_timeout_ms: 3000,
            jwt_secret: None,
            jwt_jwks: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_actions: vec!["publish".into(), "play".into()],
        }
    }
}

impl AuthConfig {
    /// Whether anyone may publish: no `publish_keys`, no JWT for publishing and no
    /// `on_publish` callback.
    pub fn publishing_is_open(&self) -> bool {
        self.publish_keys.is_empty() && self.on_publish.is_none() && !self.jwt_covers(Action::Publish)
    }

    /// Whether `action` needs a token (a JWT secret or key set is configured for it).
    pub fn jwt_covers(&self, action: Action) -> bool {
        let configured = self.jwt_secret.as_deref().is_some_and(|s| !s.is_empty())
            || self.jwt_jwks.as_deref().is_some_and(|s| !s.is_empty());
        let name = match action {
            Action::Publish => "publish",
            Action::Play => "play",
            Action::Unpublish | Action::Done => return false,
        };
        configured && self.jwt_actions.iter().any(|a| a == name)
    }

    /// What a publish with `query` is admitted with here: the key it gave when
    /// `publish_keys` are set, and the whole query when `on_publish` decides (the callback
    /// allowed that query); none when publishing is open. Within the reconnect grace only
    /// a publish with the same credential continues a stream (see [`Credential`]).
    pub fn publish_credential(&self, query: &str) -> Credential {
        self.publish_credential_with(query, "")
    }

    /// [`Self::publish_credential`], with who the publish's token was issued to (see
    /// [`Authorizer::publish_credential`]).
    fn publish_credential_with(&self, query: &str, token_holder: &str) -> Credential {
        if self.publishing_is_open() {
            return Credential::OPEN;
        }
        let key = if self.publish_keys.is_empty() { "" } else { query_param(query, "key").unwrap_or("") };
        let decided = if self.on_publish.is_some() { query } else { "" };
        Credential::of(&[key, decided, token_holder])
    }

    pub fn validate(&self, section: &str) -> anyhow::Result<()> {
        for (name, url) in [
            ("on_publish", &self.on_publish),
            ("on_play", &self.on_play),
            ("on_unpublish", &self.on_unpublish),
            ("on_done", &self.on_done),
            ("on_record_done", &self.on_record_done),
        ] {
            if let Some(u) = url {
                let uri: hyper::Uri = u.parse().map_err(|e| anyhow::anyhow!("{section}.{name}: bad URL {u:?}: {e}"))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    anyhow::bail!("{section}.{name}: only http://HOST[:PORT]/PATH callbacks are supported, got {u:?}");
                }
            }
        }
        if self.callback_timeout_ms == 0 {
            anyhow::bail!("{section}.callback_timeout_ms must be greater than 0");
        }
        if let Some(s) = self.jwt_secret.as_deref().filter(|s| !s.is_empty()) {
            if s.len() < 16 {
                anyhow::bail!("{section}.jwt_secret must be at least 16 bytes (HS256; 32 or more is better)");
            }
        }
        if let Some(j) = self.jwt_jwks.as_deref().filter(|s| !s.is_empty()) {
            if j.contains("://") {
                let uri: hyper::Uri =
                    j.parse().map_err(|e| anyhow::anyhow!("{section}.jwt_jwks: bad URL {j:?}: {e}"))?;
                if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                    anyhow::bail!("{section}.jwt_jwks: a file path or an http(s):// URL, got {j:?}");
                }
            }
        }
        for a in &self.jwt_actions {
            if a != "publish" && a != "play" {
                anyhow::bail!("{section}.jwt_actions: \"publish\" or \"play\", got {a:?}");
            }
        }
        Ok(())
    }
}

/// `[apps.NAME.auth]`: what an application changes of the global `[auth]`. Each key it
/// sets replaces the global one; each key it leaves out is inherited (an app that sets only
/// `publish_keys` keeps the global `play_keys`). An explicit empty list (`play_keys = []`)
/// opens that action for the app; an empty callback URL (`on_play = ""`) turns the global
/// callback off for it.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthOverride {
    pub publish_keys: Option<Vec<String>>,
    pub play_keys: Option<Vec<String>>,
    pub on_publish: Option<String>,
    pub on_play: Option<String>,
    pub on_unpublish: Option<String>,
    pub on_done: Option<String>,
    pub on_record_done: Option<String>,
    pub callback_timeout_ms: Option<u64>,
    /// An empty string turns the global one off for the app (as for callbacks).
    pub jwt_secret: Option<String>,
    pub jwt_jwks: Option<String>,
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    pub jwt_actions: Option<Vec<String>>,
}

impl AuthOverride {
    /// The global settings with this app's changes applied.
    pub fn apply(&self, global: &AuthConfig) -> AuthConfig {
        let url = |own: &Option<String>, inherited: &Option<String>| match own {
            Some(u) if u.is_empty() => None,
            Some(u) => Some(u.clone()),
            None => inherited.clone(),
        };
        AuthConfig {
            publish_keys: self.publish_keys.clone().unwrap_or_else(|| global.publish_keys.clone()),
            play_keys: self.play_keys.clone().unwrap_or_else(|| global.play_keys.clone()),
            on_publish: url(&self.on_publish, &global.on_publish),
            on_play: url(&self.on_play, &global.on_play),
            on_unpublish: url(&self.on_unpublish, &global.on_unpublish),
            on_done: url(&self.on_done, &global.on_done),
            on_record_done: url(&self.on_record_done, &global.on_record_done),
            callback_timeout_ms: self.callback_timeout_ms.unwrap_or(global.callback_timeout_ms),
            jwt_secret: url(&self.jwt_secret, &global.jwt_secret),
            jwt_jwks: url(&self.jwt_jwks, &global.jwt_jwks),
            jwt_issuer: url(&self.jwt_issuer, &global.jwt_issuer),
            jwt_audience: url(&self.jwt_audience, &global.jwt_audience),
            jwt_actions: self.jwt_actions.clone().unwrap_or_else(|| global.jwt_actions.clone()),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Publish,
    Play,
    Unpublish,
    Done,
}

/// What a callback receives.
#[derive(Debug, Clone, Serialize)]
pub struct AuthRequest<'a> {
    pub action: Action,
    pub app: &'a str,
    pub stream: &'a str,
    pub client: SocketAddr,
    /// rtmp, rtmps, http_flv or hls
    pub protocol: &'a str,
    /// The raw query string (`key=...&...`), without the `?`.
    pub query: &'a str,
}

impl<'a> AuthRequest<'a> {
    /// A request about the stream `key`.
    pub fn for_stream(
        action: Action,
        key: &'a crate::hub::StreamKey,
        client: SocketAddr,
        protocol: &'a str,
        query: &'a str,
    ) -> Self {
        Self { action, app: &key.app, stream: &key.name, client, protocol, query }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Denied {
    #[error("missing or wrong key")]
    BadKey,
    #[error("callback answered {0}")]
    Callback(u16),
    #[error("callback failed: {0}")]
    CallbackFailed(String),
    #[error("too many callbacks in flight (limits.max_concurrent_callbacks); try again")]
    Busy,
    #[error("{0}")]
    BadToken(TokenError),
}

impl Denied {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Denied::BadKey => "bad_key",
            Denied::Callback(_) => "callback_denied",
            Denied::CallbackFailed(_) => "callback_failed",
            Denied::Busy => "callback_busy",
            Denied::BadToken(_) => "bad_token",
        }
    }
}

/// Checks publishes and plays. Cheap to clone.
#[derive(Clone)]
pub struct Authorizer {
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    /// One permit per callback or notification in flight.
    permits: Arc<Semaphore>,
    /// How many permits there are in all (changed by [`Self::set_max_concurrent`]).
    capacity: Arc<Mutex<usize>>,
    /// JWT verification, its caches and key sets.
    jwt: Arc<Verifier>,
}

impl Default for Authorizer {
    fn default() -> Self {
        Self::new()
    }
}

/// Callbacks and notifications in flight at once unless configured otherwise.
pub const DEFAULT_MAX_CONCURRENT_CALLBACKS: usize = 64;

impl Authorizer {
    pub fn new() -> Self {
        Self::with_max_concurrent(DEFAULT_MAX_CONCURRENT_CALLBACKS)
    }

    /// At most `max` callbacks (and notifications) in flight at once; more wait for a free
    /// slot within their timeout, then are refused ([`Denied::Busy`]).
    pub fn with_max_concurrent(max: usize) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            permits: Arc::new(Semaphore::new(max)),
            capacity: Arc::new(Mutex::new(max)),
            jwt: Arc::new(Verifier::default()),
        }
    }

    /// Changes the cap (a reload); callbacks in flight finish.
    pub fn set_max_concurrent(&self, max: usize) {
        let mut cap = self.capacity.lock().unwrap_or_else(|e| e.into_inner());
        if max > *cap {
            self.permits.add_permits(max - *cap);
        } else {
            // permits in use now are not taken away; they are forgotten as they come back
            let forgotten = self.permits.forget_permits(*cap - max);
            let missing = *cap - max - forgotten;
            if missing > 0 {
                let permits = self.permits.clone();
                tokio::spawn(async move {
                    if let Ok(p) = permits.acquire_many_owned(missing as u32).await {
                        p.forget();
                    }
                });
            }
        }
        *cap = max;
    }

    /// JWT verification (its key sets are loaded at start and on reloads).
    pub fn jwt(&self) -> &Arc<Verifier> {
        &self.jwt
    }

    /// What a publish with `query` is held to within the reconnect grace (see
    /// [`AuthConfig::publish_credential`]); with a token, who it was issued to (`iss`,
    /// `sub`, `path`), so an encoder that comes back with a renewed token continues its
    /// stream.
    pub fn publish_credential(&self, config: &AuthConfig, query: &str) -> Credential {
        let holder = match query_param(query, "jwt").filter(|_| config.jwt_covers(Action::Publish)) {
            Some(token) => self.jwt.holder(config, token).unwrap_or_else(|| token.to_string()),
            None => String::new(),
        };
        config.publish_credential_with(query, &holder)
    }

    /// Checks the credentials a publish or play carries itself: its static key or its
    /// token. Where both keys and a token are configured for the action, either does.
    pub fn check_keys(&self, config: &AuthConfig, req: &AuthRequest<'_>) -> Result<(), Denied> {
        let keys = match req.action {
            Action::Publish => &config.publish_keys,
            Action::Play => &config.play_keys,
            Action::Unpublish | Action::Done => return Ok(()),
        };
        let jwt = config.jwt_covers(req.action);
        if keys.is_empty() && !jwt {
            return Ok(());
        }
        let given = query_param(req.query, "key");
        if given.is_some_and(|k| keys.iter().any(|allowed| constant_time_eq(allowed.as_bytes(), k.as_bytes()))) {
            return Ok(());
        }
        if !jwt {
            return Err(Denied::BadKey);
        }
        match query_param(req.query, "jwt") {
            Some(token) => self.jwt.verify(config, req.action, req.app, req.stream, token).map_err(Denied::BadToken),
            None if given.is_some() && !keys.is_empty() => Err(Denied::BadKey),
            None => Err(Denied::BadToken(TokenError::Missing)),
        }
    }

    /// Decides a publish or play under `config`: static keys, then the callback.
    pub async fn check(&self, config: &AuthConfig, req: &AuthRequest<'_>) -> Result<(), Denied> {
        self.check_answer(config, req).await.map(|_| ())
    }

    /// [`Self::check`], with what the callback answered besides its status: a JSON body
    /// `{"push": ["rtmp://…", …]}` (an `on_publish` answer) lists push targets for the
    /// stream. A body that is not such JSON (or none) lists nothing.
    pub async fn check_answer(&self, config: &AuthConfig, req: &AuthRequest<'_>) -> Result<CallbackAnswer, Denied> {
        self.check_keys(config, req)?;
        let hook = match req.action {
            Action::Publish => &config.on_publish,
            Action::Play => &config.on_play,
            Action::Unpublish | Action::Done => return Ok(CallbackAnswer::default()),
        };
        if let Some(url) = hook {
            let timeout = Duration::from_millis(config.callback_timeout_ms);
            let deadline = tokio::time::Instant::now() + timeout;
            // a slot first, within the same timeout: a flood of requests queues briefly
            // instead of sending the callback server a POST each at once
            let _permit = match tokio::time::timeout_at(deadline, self.permits.acquire()).await {
                Ok(Ok(p)) if tokio::time::Instant::now() < deadline => p,
                _ => return Err(Denied::Busy),
            };
            let (status, body) = tokio::time::timeout_at(deadline, self.post(url, req))
                .await
                .map_err(|_| Denied::CallbackFailed(format!("no answer within {timeout:?}")))?
                .map_err(Denied::CallbackFailed)?;
            if !(200..300).contains(&status) {
                return Err(Denied::Callback(status));
            }
            return Ok(serde_json::from_slice::<CallbackAnswer>(&body).unwrap_or_default());
        }
        Ok(CallbackAnswer::default())
    }

    /// Fire-and-forget notification (on_unpublish, on_done).
    pub fn notify(&self, config: &AuthConfig, req: AuthRequest<'_>) {
        let url = match req.action {
            Action::Unpublish => config.on_unpublish.clone(),
            Action::Done => config.on_done.clone(),
            _ => None,
        };
        let Some(url) = url else { return };
        let Ok(body) = serde_json::to_vec(&req) else { return };
        self.send(url, body, Duration::from_millis(config.callback_timeout_ms));
    }

    /// Fire-and-forget `on_record_done` with what the recorder says of the file.
    pub fn notify_record_done(&self, config: &AuthConfig, body: &serde_json::Value) {
        let Some(url) = config.on_record_done.clone() else { return };
        let Ok(body) = serde_json::to_vec(body) else { return };
        self.send(url, body, Duration::from_millis(config.callback_timeout_ms));
    }

    /// POSTs `body` to `url` in the background, within the callbacks' bound on how many are
    /// in flight (dropped, logged, past it) and `timeout`.
    fn send(&self, url: String, body: Vec<u8>, timeout: Duration) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            warn!(%url, "notification not sent: the runtime is shutting down");
            return;
        };
        let this = self.clone();
        rt.spawn(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let Ok(Ok(_permit)) = tokio::time::timeout_at(deadline, this.permits.acquire()).await else {
                warn!(%url, "notification dropped: too many callbacks in flight");
                return;
            };
            match tokio::time::timeout_at(deadline, this.post_body(&url, body)).await {
                Ok(Ok((status, _))) => debug!(%url, status, "notification sent"),
                Ok(Err(e)) => warn!(%url, "notification failed: {e}"),
                Err(_) => warn!(%url, "notification timed out"),
            }
        });
    }

    async fn post(&self, url: &str, req: &AuthRequest<'_>) -> Result<(u16, Bytes), String> {
        let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
        self.post_body(url, body).await
    }

    /// Posts `body`; the answer's status and body (at most 64 KiB of it).
    async fn post_body(&self, url: &str, body: Vec<u8>) -> Result<(u16, Bytes), String> {
        let request = Request::post(url)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let resp = self.client.request(request).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // a bounded amount, read whole so the connection can be reused
        let body = match http_body_util::Limited::new(resp.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => Bytes::new(),
        };
        Ok((status, body))
    }
}

/// What an allowing callback may add (unknown fields are ignored: the callback server is
/// not ours).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct CallbackAnswer {
    /// Push targets for the published stream (URL templates, as in `[relay] push`).
    pub push: Vec<String>,
    /// Record the published stream (with its app's `record` settings), whether the app
    /// records or not.
    pub record: bool,
}

/// The first value of `name` in a query string (no percent-decoding: keys are opaque tokens).
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == name).map(|(_, v)| v)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: Action, query: &str) -> AuthRequest<'_> {
        AuthRequest {
            action,
            app: "live",
            stream: "s",
            client: "127.0.0.1:9".parse().unwrap(),
            protocol: "rtmp",
            query,
        }
    }

    #[tokio::test]
    async fn static_keys() {
        let a = Authorizer::new();
        let open = AuthConfig::default();
        assert_eq!(a.check(&open, &req(Action::Publish, "")).await, Ok(()));
        let cfg = AuthConfig { publish_keys: vec!["s3cret".into()], ..Default::default() };
        assert_eq!(a.check(&cfg, &req(Action::Publish, "key=s3cret")).await, Ok(()));
        assert_eq!(a.check(&cfg, &req(Action::Publish, "a=1&key=s3cret")).await, Ok(()));
        assert_eq!(a.check(&cfg, &req(Action::Publish, "key=nope")).await, Err(Denied::BadKey));
        assert_eq!(a.check(&cfg, &req(Action::Publish, "")).await, Err(Denied::BadKey));
        // play is open unless play keys are set
        assert_eq!(a.check(&cfg, &req(Action::Play, "")).await, Ok(()));
    }

    #[tokio::test]
    async fn unreachable_callback_denies() {
        let a = Authorizer::new();
        let cfg = AuthConfig {
            on_publish: Some("http://127.0.0.1:9/hook".into()),
            callback_timeout_ms: 500,
            ..Default::default()
        };
        assert!(matches!(a.check(&cfg, &req(Action::Publish, "")).await, Err(Denied::CallbackFailed(_))));
    }

    #[test]
    fn a_publish_credential_is_the_key_or_the_query_a_callback_allowed() {
        let open = AuthConfig::default();
        assert!(open.publishing_is_open());
        assert_eq!(open.publish_credential("key=a"), Credential::OPEN, "open publishing holds nobody to anything");
        let keys = AuthConfig { publish_keys: vec!["a".into(), "b".into()], ..Default::default() };
        assert!(!keys.publishing_is_open());
        assert_eq!(keys.publish_credential("key=a"), keys.publish_credential("x=1&key=a"), "the key, not the rest");
        assert_ne!(keys.publish_credential("key=a"), keys.publish_credential("key=b"));
        assert!(!keys.publish_credential("key=a").admits(&keys.publish_credential("key=b")));
        assert!(Credential::OPEN.admits(&keys.publish_credential("key=a")), "a stream published openly");
        let hook = AuthConfig { on_publish: Some("http://127.0.0.1:1/p".into()), ..Default::default() };
        assert!(!hook.publishing_is_open());
        assert_eq!(hook.publish_credential("token=1"), hook.publish_credential("token=1"));
        assert_ne!(hook.publish_credential("token=1"), hook.publish_credential("token=2"), "the query allowed");
    }

    #[test]
    fn callback_urls_are_validated() {
        let bad = AuthConfig { on_play: Some("https://x/y".into()), ..Default::default() };
        assert!(bad.validate("auth").is_err());
        let good = AuthConfig { on_play: Some("http://127.0.0.1:8000/on_play".into()), ..Default::default() };
        assert!(good.validate("auth").is_ok());
    }
}
