//! JSON Web Tokens for publish and play, beside keys and callbacks: HS256 with
//! `jwt_secret`, RS256/ES256 with the keys of a JWKS (`jwt_jwks`: a file, or an http(s) URL
//! fetched with a timeout and a byte bound, refreshed, the last good set kept on a failed
//! fetch). Claims: `action` (`publish`, `play` or `*`), `path` (`APP/STREAM`, `*` matching
//! any one part), `exp` (required), `nbf`, and `iss`/`aud` when configured. A token comes as
//! `?jwt=` (RTMP: in the stream name's query, as keys do) or `Authorization: Bearer` (HTTP).
//!
//! Hostile tokens: longer than [`MAX_TOKEN_BYTES`], `alg: none`, an algorithm the key does
//! not take (HS256 against a JWKS key: the RSA/EC public key is never an HMAC secret), a
//! key id the set does not have are refused. A token that verified is cached (by a SHA-256
//! of it and of the settings that verified it) until its `exp`, so a player's segment
//! requests cost a hash and a lookup, not a signature check; the cache is bounded in entries
//! and each entry by the length of the claims it keeps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use super::{Action, AuthConfig};

/// Bytes of a token; a longer one is refused unread.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Bytes of a JWKS document.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Keys of a JWKS that are kept.
const MAX_JWKS_KEYS: usize = 64;
/// Verified tokens cached. Each entry holds the claims below within [`MAX_CLAIM_BYTES`]
/// (and a 32-byte key): at most ~1 KiB, ~16 MiB for the whole cache.
const MAX_CACHED: usize = 16 * 1024;
/// Bytes of each claim a cache entry keeps (`action`, `path`, `iss`, `sub`); a verified
/// token with a longer one is refused, so a cached token costs its few claims, not its
/// [`MAX_TOKEN_BYTES`].
const MAX_CLAIM_BYTES: usize = 256;
/// A JWKS is fetched again this often (a file is read again).
pub const JWKS_REFRESH: Duration = Duration::from_secs(300);
/// A JWKS fetch takes at most this long.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Seconds of clock difference allowed on `exp` and `nbf`.
const LEEWAY_S: u64 = 5;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("no token (?jwt= or Authorization: Bearer)")]
    Missing,
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("the token is not for this action")]
    WrongAction,
    #[error("the token is not for this stream")]
    WrongPath,
    #[error("no key to verify the token with: {0}")]
    NoKey(String),
    /// The key set has not been loaded yet (a load is under way): try again.
    #[error("the key set is being loaded; try again")]
    KeysLoading,
}

/// What a token's verification failure says: the kind of failure only, never text the
/// token's maker chose (it reaches logs, RTMP statuses and `/api/events`).
fn reason(e: &jsonwebtoken::errors::Error) -> TokenError {
    use jsonwebtoken::errors::ErrorKind as K;
    let why = match e.kind() {
        K::ExpiredSignature => "ExpiredSignature",
        K::ImmatureSignature => "ImmatureSignature",
        K::InvalidSignature => "InvalidSignature",
        K::InvalidAudience => "InvalidAudience",
        K::InvalidIssuer => "InvalidIssuer",
        K::InvalidAlgorithm => "InvalidAlgorithm",
        K::MissingRequiredClaim(c) => match c.as_str() {
            "exp" => "MissingRequiredClaim(exp)",
            "aud" => "MissingRequiredClaim(aud)",
            "iss" => "MissingRequiredClaim(iss)",
            _ => "MissingRequiredClaim",
        },
        _ => "malformed",
    };
    TokenError::Invalid(why.to_string())
}

#[derive(Debug, Deserialize)]
struct Claims {
    #[serde(default)]
    action: Option<String>,
    #[serde(default)]
    path: Option<String>,
    /// (required: the library refuses a token without it before this is read)
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    sub: Option<String>,
}

/// What a verified token allows, until when.
#[derive(Debug, Clone)]
struct Allowed {
    action: Option<String>,
    path: Option<String>,
    exp: u64,
    /// Who it was issued to (`iss`, `sub`, `path`): what holds a publisher to its stream
    /// within the reconnect grace, across token renewals.
    holder: String,
}

/// A key of a JWKS, with the one algorithm it verifies.
#[derive(Clone)]
struct SetKey {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct JwksEntry {
    keys: Arc<Vec<SetKey>>,
    loaded: Option<Instant>,
    /// After a failed load: not tried again before this.
    retry_at: Option<Instant>,
    fetching: bool,
    /// A load finished (successfully or not) at least once.
    tried: bool,
}

/// Token verification with its caches (one per gateway, inside the `Authorizer`).
#[derive(Default)]
pub struct Verifier {
    cache: Mutex<HashMap<[u8; 32], Allowed>>,
    jwks: Mutex<HashMap<String, JwksEntry>>,
    tls: std::sync::OnceLock<tokio_rustls::TlsConnector>,
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether the claim `path` (`APP/STREAM`, `*` for any one part) names `app`/`stream`.
pub fn path_matches(pattern: &str, app: &str, stream: &str) -> bool {
    let Some((pa, ps)) = pattern.split_once('/') else { return false };
    // a track stream NAME~N is covered by a token for NAME
    let main = stream.split_once('~').map_or(stream, |(m, _)| m);
    (pa == "*" || pa == app) && (ps == "*" || ps == stream || ps == main)
}

impl Verifier {
    /// TLS for `https://` JWKS URLs (the platform's roots, and `relay.ca_file`).
    pub fn set_tls(&self, tls: tokio_rustls::TlsConnector) {
        let _ = self.tls.set(tls);
    }

    /// Checks `token` for `action` on `app`/`stream` under `config`'s JWT settings.
    pub fn verify(
        self: &Arc<Self>,
        config: &AuthConfig,
        action: Action,
        app: &str,
        stream: &str,
        token: &str,
    ) -> Result<(), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let allowed = self.allowed(config, token)?;
        let want = match action {
            Action::Publish => "publish",
            _ => "play",
        };
        if !allowed.action.as_deref().is_some_and(|a| a == want || a == "*") {
            return Err(TokenError::WrongAction);
        }
        if !allowed.path.as_deref().is_some_and(|p| path_matches(p, app, stream)) {
            return Err(TokenError::WrongPath);
        }
        Ok(())
    }

    /// What `token` allows under `config`: from the cache, else verified (and cached).
    fn allowed(self: &Arc<Self>, config: &AuthConfig, token: &str) -> Result<Allowed, TokenError> {
        let id = self.cache_id(config, token);
        let cached = lock(&self.cache).get(&id).cloned();
        if let Some(a) = cached.filter(|a| a.exp.saturating_add(LEEWAY_S) > now_s()) {
            return Ok(a);
        }
        let a = self.check_signature(config, token)?;
        let mut cache = lock(&self.cache);
        if cache.len() >= MAX_CACHED {
            let now = now_s();
            cache.retain(|_, a| a.exp.saturating_add(LEEWAY_S) > now);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
        }
        cache.insert(id, a.clone());
        Ok(a)
    }

    /// Who a token (verified before, under `config`) was issued to; None when it does not
    /// verify.
    pub fn holder(self: &Arc<Self>, config: &AuthConfig, token: &str) -> Option<String> {
        (token.len() <= MAX_TOKEN_BYTES).then(|| self.allowed(config, token).ok()).flatten().map(|a| a.holder)
    }

    /// The cache key: the token and the settings that verify it.
    fn cache_id(&self, config: &AuthConfig, token: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        for part in [&config.jwt_secret, &config.jwt_jwks, &config.jwt_issuer, &config.jwt_audience] {
            let p = part.as_deref().unwrap_or("");
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        h.update(token.as_bytes());
        h.finalize().into()
    }

    fn validation(config: &AuthConfig, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_S;
        v.validate_nbf = true;
        let mut required = vec!["exp"];
        if let Some(iss) = &config.jwt_issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        if let Some(aud) = &config.jwt_audience {
            v.set_audience(&[aud]);
            required.push("aud");
        } else {
            v.validate_aud = false;
        }
        v.set_required_spec_claims(&required);
        v
    }

    fn check_signature(self: &Arc<Self>, config: &AuthConfig, token: &str) -> Result<Allowed, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|e| reason(&e))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                let secret = config.jwt_secret.as_deref().filter(|s| !s.is_empty());
                let secret = secret.ok_or_else(|| TokenError::NoKey("HS256 needs jwt_secret".into()))?;
                let key = DecodingKey::from_secret(secret.as_bytes()).map_err(|e| TokenError::NoKey(e.to_string()))?;
                jsonwebtoken::decode::<Claims>(token, &key, &Self::validation(config, Algorithm::HS256))
                    .map_err(|e| reason(&e))?
                    .claims
            }
            alg @ (Algorithm::RS256 | Algorithm::ES256) => {
                let source = config.jwt_jwks.as_deref().filter(|s| !s.is_empty());
                let source = source.ok_or_else(|| TokenError::NoKey(format!("{alg:?} needs jwt_jwks")))?;
                let (keys, tried) = self.jwks_keys(source);
                // a token without a key id is tried against a few keys at most (each try
                // is a signature check: a flood of such tokens costs little)
                let candidates: Vec<&SetKey> = keys
                    .iter()
                    .filter(|k| k.alg == alg && (header.kid.is_none() || k.kid == header.kid))
                    .take(4)
                    .collect();
                if candidates.is_empty() {
                    if !tried {
                        return Err(TokenError::KeysLoading);
                    }
                    return Err(TokenError::NoKey(format!("the key set has no {alg:?} key of that id")));
                }
                let validation = Self::validation(config, alg);
                let mut last = TokenError::Invalid("malformed".into());
                let mut found = None;
                for k in candidates {
                    match jsonwebtoken::decode::<Claims>(token, &k.key, &validation) {
                        Ok(d) => {
                            found = Some(d.claims);
                            break;
                        }
                        Err(e) => last = reason(&e),
                    }
                }
                found.ok_or(last)?
            }
            other => return Err(TokenError::Invalid(format!("algorithm {other:?} is not accepted"))),
        };
        let long = [&claims.action, &claims.path, &claims.iss, &claims.sub]
            .iter()
            .any(|c| c.as_ref().is_some_and(|c| c.len() > MAX_CLAIM_BYTES));
        if long {
            return Err(TokenError::Invalid(format!("a claim is longer than {MAX_CLAIM_BYTES} bytes")));
        }
        let holder = format!(
            "{}|{}|{}",
            claims.iss.as_deref().unwrap_or(""),
            claims.sub.as_deref().unwrap_or(""),
            claims.path.as_deref().unwrap_or("")
        );
        Ok(Allowed { action: claims.action, path: claims.path, exp: claims.exp.unwrap_or(0), holder })
    }

    /// Starts loading the JWKS at `source` if it was never loaded or is stale.
    pub fn warm(self: &Arc<Self>, source: &str) {
        let _ = self.jwks_keys(source);
    }

    /// Whether a load of the JWKS at `source` has finished (well or not).
    pub fn jwks_tried(&self, source: &str) -> bool {
        lock(&self.jwks).get(source).is_some_and(|e| e.tried)
    }

    /// The keys of the JWKS at `source` as last loaded, and whether a load has finished
    /// (a load is started when there are none or they are older than [`JWKS_REFRESH`]).
    fn jwks_keys(self: &Arc<Self>, source: &str) -> (Arc<Vec<SetKey>>, bool) {
        let mut all = lock(&self.jwks);
        let e = all.entry(source.to_string()).or_default();
        let stale = e.loaded.is_none_or(|t| t.elapsed() >= JWKS_REFRESH);
        let may_retry = e.retry_at.is_none_or(|t| Instant::now() >= t);
        if stale && may_retry && !e.fetching {
            e.fetching = true;
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                let (me, source) = (self.clone(), source.to_string());
                rt.spawn(async move { me.load_jwks(&source).await });
            } else {
                e.fetching = false;
            }
        }
        (e.keys.clone(), e.tried)
    }

    /// Loads the JWKS at `source` now (at start and on a reload, so the first publish does
    /// not wait); a failure keeps the keys loaded before.
    pub async fn load_jwks(self: &Arc<Self>, source: &str) {
        let got = tokio::time::timeout(JWKS_TIMEOUT, self.read_jwks(source)).await;
        let parsed = match got {
            Ok(Ok(body)) => parse_jwks(&body),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {JWKS_TIMEOUT:?}")),
        };
        let mut all = lock(&self.jwks);
        let e = all.entry(source.to_string()).or_default();
        e.fetching = false;
        e.tried = true;
        match parsed {
            Ok(keys) => {
                if e.keys.len() != keys.len() || e.loaded.is_none() {
                    info!(jwks = source, keys = keys.len(), "JWT: key set loaded");
                }
                e.keys = Arc::new(keys);
                e.loaded = Some(Instant::now());
                e.retry_at = None;
            }
            Err(why) => {
                // tried again at a use after a short while, not at every request
                e.retry_at = Some(Instant::now() + Duration::from_secs(10));
                warn!(
                    jwks = source,
                    kept = e.keys.len(),
                    "JWT: the key set could not be loaded ({why}); keeping the last good one"
                );
            }
        }
    }

    async fn read_jwks(&self, source: &str) -> Result<Vec<u8>, String> {
        if source.starts_with("http://") || source.starts_with("https://") {
            return fetch(source, self.tls.get()).await;
        }
        let path = source.to_string();
        let read = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
            use std::io::Read;
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            let mut buf = Vec::new();
            f.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut buf).map_err(|e| format!("{path}: {e}"))?;
            Ok(buf)
        });
        let body = read.await.map_err(|e| e.to_string())??;
        if body.len() > MAX_JWKS_BYTES {
            return Err(format!("longer than {MAX_JWKS_BYTES} bytes"));
        }
        Ok(body)
    }
}

/// The RS256 and ES256 (P-256) keys of a JWKS document; other keys are left out.
fn parse_jwks(body: &[u8]) -> Result<Vec<SetKey>, String> {
    if body.len() > MAX_JWKS_BYTES {
        return Err(format!("longer than {MAX_JWKS_BYTES} bytes"));
    }
    let set: JwkSet = serde_json::from_slice(body).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut out = Vec::new();
    for jwk in set.keys.iter().take(MAX_JWKS_KEYS) {
        // a key for encryption, or one announced for another algorithm, does not sign
        if matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)) {
            continue;
        }
        let announced = jwk.common.key_algorithm.map(|a| format!("{a:?}"));
        if announced.as_deref().is_some_and(|a| a != "RS256" && a != "ES256") {
            continue;
        }
        let alg = match &jwk.algorithm {
            AlgorithmParameters::RSA(_) => Algorithm::RS256,
            AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Algorithm::ES256,
            // symmetric keys in a published set, other curves: not taken
            _ => continue,
        };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            out.push(SetKey { kid: jwk.common.key_id.clone(), alg, key });
        }
    }
    if out.is_empty() {
        return Err("no RS256 or ES256 key in the set".into());
    }
    Ok(out)
}

/// GETs `url` (http or https): the body, at most [`MAX_JWKS_BYTES`]; a redirect or a status
/// other than 200 is an error.
async fn fetch(url: &str, tls: Option<&tokio_rustls::TlsConnector>) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty, Limited};
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let https = uri.scheme_str() == Some("https");
    let host = uri.host().ok_or("no host")?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, uri.authority().map_or(host.clone(), |a| a.to_string()))
        .header(hyper::header::ACCEPT, "application/json")
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = if https {
        let tls = tls.ok_or("TLS is not available")?;
        let name = rustls_pki_types::ServerName::try_from(host.clone()).map_err(|e| format!("TLS name: {e}"))?;
        let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
        send(hyper_util::rt::TokioIo::new(stream), req).await?
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await?
    };
    if resp.status() != hyper::StatusCode::OK {
        return Err(format!("HTTP {} (redirects are not followed)", resp.status().as_u16()));
    }
    let body = Limited::new(resp.into_body(), MAX_JWKS_BYTES).collect().await.map_err(|e| format!("body: {e}"))?;
    Ok(body.to_bytes().to_vec())
}

async fn send<IO>(
    io: IO,
    req: hyper::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.map_err(|e| format!("HTTP: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn config() -> AuthConfig {
        AuthConfig { jwt_secret: Some("s3cret-s3cret-s3cret".into()), ..Default::default() }
    }

    fn token(secret: &str, claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(secret.as_bytes());
        encode(&Header::new(Algorithm::HS256), &claims, &key.unwrap()).unwrap()
    }

    #[test]
    fn a_token_with_an_overlong_claim_is_refused() {
        // (what the cache keeps of a token is bounded by its claims, not by the token)
        let v = Arc::new(Verifier::default());
        let c = config();
        let exp = now_s() + 600;
        let long = "x".repeat(MAX_CLAIM_BYTES + 1);
        for claim in ["sub", "iss", "path", "action"] {
            let mut claims = serde_json::json!({"action": "*", "path": "live/*", "exp": exp});
            claims[claim] = serde_json::Value::String(long.clone());
            let t = token("s3cret-s3cret-s3cret", claims);
            let r = v.verify(&c, Action::Play, "live", "demo", &t);
            assert!(matches!(&r, Err(TokenError::Invalid(why)) if why.contains("longer than")), "{claim}: {r:?}");
        }
    }

    #[test]
    fn paths_match_by_part() {
        assert!(path_matches("live/demo", "live", "demo"));
        assert!(path_matches("live/*", "live", "other"));
        assert!(path_matches("*/*", "a", "b"));
        assert!(path_matches("live/demo", "live", "demo~1"), "a track of the stream");
        assert!(!path_matches("live/demo", "live", "demo2"));
        assert!(!path_matches("live/*", "other", "demo"));
        assert!(!path_matches("live", "live", "demo"));
        assert!(!path_matches("live/de*", "live", "demo"), "a star is a whole part");
    }

    #[test]
    fn hs256_tokens_are_checked_for_action_path_and_time() {
        let v = Arc::new(Verifier::default());
        let c = config();
        let exp = now_s() + 600;
        let good =
            token("s3cret-s3cret-s3cret", serde_json::json!({"action": "publish", "path": "live/demo", "exp": exp}));
        assert_eq!(v.verify(&c, Action::Publish, "live", "demo", &good), Ok(()));
        assert_eq!(v.verify(&c, Action::Publish, "live", "demo", &good), Ok(()), "cached");
        assert_eq!(v.verify(&c, Action::Play, "live", "demo", &good), Err(TokenError::WrongAction));
        assert_eq!(v.verify(&c, Action::Publish, "live", "other", &good), Err(TokenError::WrongPath));
        let any = token("s3cret-s3cret-s3cret", serde_json::json!({"action": "*", "path": "live/*", "exp": exp}));
        assert_eq!(v.verify(&c, Action::Play, "live", "x", &any), Ok(()));
        for (bad, why) in [
            (token("other-secret-other", serde_json::json!({"action": "*", "path": "*/*", "exp": exp})), "wrong key"),
            (
                token("s3cret-s3cret-s3cret", serde_json::json!({"action": "*", "path": "*/*", "exp": now_s() - 60})),
                "expired",
            ),
            (token("s3cret-s3cret-s3cret", serde_json::json!({"action": "*", "path": "*/*"})), "no exp"),
            (
                token(
                    "s3cret-s3cret-s3cret",
                    serde_json::json!({"action": "*", "path": "*/*", "exp": exp, "nbf": now_s() + 300}),
                ),
                "not yet valid",
            ),
        ] {
            assert!(matches!(v.verify(&c, Action::Play, "live", "x", &bad), Err(TokenError::Invalid(_))), "{why}");
        }
        // alg none: header {"alg":"none"}, no signature
        let none = format!(
            "{}.{}.",
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJhY3Rpb24iOiIqIiwicGF0aCI6IiovKiIsImV4cCI6OTk5OTk5OTk5OX0"
        );
        assert!(v.verify(&c, Action::Play, "live", "x", &none).is_err(), "alg none");
        assert_eq!(v.verify(&c, Action::Play, "live", "x", &"a".repeat(5000)), Err(TokenError::TooLong));
        assert!(v.verify(&c, Action::Play, "live", "x", "not.a.token").is_err());
    }

    /// What a token costs (`cargo test --release --lib jwt_cost -- --ignored --nocapture`):
    /// a first verification, and a cached one (every later request with it).
    #[test]
    #[ignore]
    fn jwt_cost() {
        let v = Arc::new(Verifier::default());
        let c = config();
        let n = 20_000u32;
        let tokens: Vec<String> = (0..n)
            .map(|i| {
                token(
                    "s3cret-s3cret-s3cret",
                    serde_json::json!({"action": "play", "path": "live/x", "exp": now_s() + 600, "n": i}),
                )
            })
            .collect();
        let t = Instant::now();
        for tk in &tokens {
            assert_eq!(v.verify(&c, Action::Play, "live", "x", tk), Ok(()));
        }
        let first = t.elapsed() / n;
        let t = Instant::now();
        for tk in &tokens {
            assert_eq!(v.verify(&c, Action::Play, "live", "x", tk), Ok(()));
        }
        let cached = t.elapsed() / n;
        println!("HS256: first verification {first:?} per token, cached {cached:?} per token");
    }

    #[test]
    fn audience_and_issuer_are_required_when_configured() {
        let v = Arc::new(Verifier::default());
        let c = AuthConfig { jwt_audience: Some("livegate".into()), jwt_issuer: Some("idp".into()), ..config() };
        let exp = now_s() + 600;
        let claims = |aud: Option<&str>, iss: Option<&str>| {
            let mut m = serde_json::json!({"action": "play", "path": "live/x", "exp": exp});
            if let Some(a) = aud {
                m["aud"] = a.into();
            }
            if let Some(i) = iss {
                m["iss"] = i.into();
            }
            token("s3cret-s3cret-s3cret", m)
        };
        assert_eq!(v.verify(&c, Action::Play, "live", "x", &claims(Some("livegate"), Some("idp"))), Ok(()));
        for (aud, iss) in [
            (Some("other"), Some("idp")),
            (None, Some("idp")),
            (Some("livegate"), None),
            (Some("livegate"), Some("evil")),
        ] {
            assert!(v.verify(&c, Action::Play, "live", "x", &claims(aud, iss)).is_err(), "{aud:?} {iss:?}");
        }
    }

    #[tokio::test]
    async fn a_failed_key_set_load_keeps_the_last_good_set() {
        let v = Arc::new(Verifier::default());
        let path = std::env::temp_dir().join(format!("livegate-jwks-{}.json", std::process::id()));
        let source = path.display().to_string();
        std::fs::write(&path, RSA_SET).unwrap();
        v.load_jwks(&source).await;
        assert_eq!((v.jwks_keys(&source).0.len(), v.jwks_tried(&source)), (1, true));
        std::fs::write(&path, b"garbage").unwrap();
        v.load_jwks(&source).await;
        assert_eq!(v.jwks_keys(&source).0.len(), 1, "the last good set is kept");
        std::fs::write(&path, vec![b' '; MAX_JWKS_BYTES + 10]).unwrap();
        v.load_jwks(&source).await;
        assert_eq!(v.jwks_keys(&source).0.len(), 1, "an oversized set is not read");
        let _ = std::fs::remove_file(&path);
    }

    const RSA_SET: &[u8] = br#"{"keys":[{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;

    #[test]
    fn a_jwks_keeps_only_rsa_and_p256_keys() {
        let set = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"},{"kty":"RSA","kid":"r1","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw","e":"AQAB"}]}"#;
        let keys = parse_jwks(set).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!((keys[0].kid.as_deref(), keys[0].alg), (Some("r1"), Algorithm::RS256));
        assert!(parse_jwks(br#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#).is_err());
        assert!(parse_jwks(b"garbage").is_err());
    }
}
