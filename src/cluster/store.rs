//! The stream directory's Redis side: claims of `APP/STREAM` keys taken, refreshed and
//! released by compare-and-set Lua scripts (one round trip each, atomic on the server), node
//! heartbeats, and bounded reads. Every call is bounded by the configured timeout; what
//! Redis holds is parsed as hostile input (size-bounded, typed, validated).
//!
//! Keys (`PREFIX` is `cluster.prefix`):
//! - `PREFIX:stream:APP/STREAM`: the claim, JSON [`ClaimValue`], with a TTL (`PX`).
//! - `PREFIX:epoch:APP/STREAM`: the key's fencing epoch, `INCR`ed by every new claim (kept
//!   a day after its last claim).
//! - `PREFIX:node:NODE`: a node's heartbeat, JSON, with a TTL.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

use crate::hub::StreamKey;

/// Bytes of a claim or heartbeat value read back; a longer one is not read (a forged value).
pub const MAX_VALUE: usize = 4096;
/// Keys a listing scans at most (per kind).
pub const MAX_LISTED: usize = 1000;

/// A claim as Redis holds it. `token` is the claiming process's secret: only it refreshes
/// or releases the claim (never shown by the API).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimValue {
    pub node: String,
    pub token: String,
    pub epoch: u64,
    /// `live` (a publisher is connected) or `waiting` (its reconnect grace: another node
    /// may take the key over).
    pub state: String,
    /// Where other nodes pull the stream from (empty: not advertised).
    #[serde(default)]
    pub rtmp: String,
    #[serde(default)]
    pub http: String,
    /// When the claim was taken (Unix ms).
    #[serde(default)]
    pub since: u64,
}

impl ClaimValue {
    /// A value from Redis, or None unless it is well-formed (bounded, a valid node name, a
    /// known state).
    pub fn parse(raw: &[u8]) -> Option<Self> {
        if raw.len() > MAX_VALUE {
            return None;
        }
        let v: Self = serde_json::from_slice(raw).ok()?;
        let ok = crate::hub::valid_name(&v.node)
            && matches!(v.state.as_str(), "live" | "waiting")
            && v.token.len() <= 64
            && v.rtmp.len() <= 512
            && v.http.len() <= 512;
        ok.then_some(v)
    }
}

/// What a claim attempt found.
#[derive(Debug, PartialEq)]
pub enum ClaimOutcome {
    /// The key is ours (new, or ours already), with its epoch.
    Claimed(u64),
    /// Taken from a claim that was waiting for its publisher, or that was unreadable.
    TookOver { epoch: u64, from: String },
    /// Another live claim (its node).
    Owned(String),
}

/// What a refresh found.
#[derive(Debug, PartialEq, Eq)]
pub enum Refreshed {
    /// Ours, its TTL renewed (and its state written).
    Held,
    /// Gone from Redis (expired, or Redis restarted empty): written again.
    Restored,
    /// Another claim's now (its node): this node must stop serving the stream.
    Lost(String),
}

/// Takes the key unless another claim holds it live. KEYS: claim, epoch. ARGV: node,
/// token, ttl_ms, rtmp, http, now_ms, this process's token prefix. Returns {code, epoch,
/// previous owner}: 1 claimed (or this very claim already), 2 taken over (from a claim
/// waiting for its publisher, an unreadable value, or an older claim of this process), 0
/// held live by another claim. A value that is not a string is unreadable (replaced).
const CLAIM: &str = r#"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind ~= 'string' and kind ~= 'none' then redis.call('DEL', KEYS[1]) end
local cur = false
if kind == 'string' then cur = redis.call('GET', KEYS[1]) end
local prev = ''
if kind ~= 'none' then prev = '(unreadable)' end
if cur then
  local ok, c = pcall(cjson.decode, cur)
  if ok and type(c) == 'table' then
    if c.token == ARGV[2] and type(c.epoch) == 'number' then
      redis.call('PEXPIRE', KEYS[1], ARGV[3])
      return {1, c.epoch, ''}
    end
    if type(c.node) == 'string' then prev = c.node end
    local mine = type(c.token) == 'string' and string.sub(c.token, 1, #ARGV[7]) == ARGV[7]
    if type(c.node) == 'string' and c.state ~= 'waiting' and not mine then
      return {0, 0, prev}
    end
  end
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], 86400000)
local v = cjson.encode({node = ARGV[1], token = ARGV[2], epoch = epoch, state = 'live',
  rtmp = ARGV[4], http = ARGV[5], since = tonumber(ARGV[6])})
redis.call('SET', KEYS[1], v, 'PX', ARGV[3])
if prev ~= '' then return {2, epoch, prev} end
return {1, epoch, ''}
"#;

/// Renews a claim. KEYS: claim, epoch. ARGV: token, ttl_ms, state, the whole value, its
/// epoch. Returns {code, owner}: 1 held, 2 restored (the key was gone and no later claim was
/// taken: its epoch is not past ours), 0 lost (to `owner`).
const REFRESH: &str = r#"
local kind = redis.call('TYPE', KEYS[1]).ok
if kind == 'none' then
  local e = tonumber(redis.call('GET', KEYS[2]) or '0') or 0
  if e > tonumber(ARGV[5]) then return {0, '(a later claim, released)'} end
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[2])
  if e < tonumber(ARGV[5]) then redis.call('SET', KEYS[2], ARGV[5]) end
  redis.call('PEXPIRE', KEYS[2], 86400000)
  return {2, ''}
end
if kind ~= 'string' then return {0, '(unreadable)'} end
local ok, c = pcall(cjson.decode, redis.call('GET', KEYS[1]))
if not ok or type(c) ~= 'table' then return {0, '(unreadable)'} end
if c.token ~= ARGV[1] then
  if type(c.node) == 'string' then return {0, c.node} end
  return {0, '(unreadable)'}
end
if c.state ~= ARGV[3] then
  c.state = ARGV[3]
  redis.call('SET', KEYS[1], cjson.encode(c), 'PX', ARGV[2])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, ''}
"#;

/// Deletes a claim if it is this one (its token). KEYS: claim. ARGV: token.
const RELEASE: &str = r#"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local ok, c = pcall(cjson.decode, redis.call('GET', KEYS[1]))
if ok and type(c) == 'table' and c.token == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"#;

/// A string value if it is at most ARGV[1] bytes (a forged huge value is not sent, a
/// value of another type is not read). KEYS: key.
const GET_BOUNDED: &str = r#"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return -1 end
if redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then return -1 end
return redis.call('GET', KEYS[1])
"#;

pub struct Store {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    claim: Script,
    refresh: Script,
    release: Script,
    get: Script,
}

impl Store {
    /// A store on `url` (not connected yet: the first command connects, and a lost
    /// connection is made again with backoff, each attempt bounded by `timeout`).
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> anyhow::Result<Self> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(2);
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            timeout,
            claim: Script::new(CLAIM),
            refresh: Script::new(REFRESH),
            release: Script::new(RELEASE),
            get: Script::new(GET_BOUNDED),
        })
    }

    fn stream_key(&self, key: &StreamKey) -> String {
        format!("{}:stream:{key}", self.prefix)
    }

    fn epoch_key(&self, key: &StreamKey) -> String {
        format!("{}:epoch:{key}", self.prefix)
    }

    fn node_key(&self, node: &str) -> String {
        format!("{}:node:{node}", self.prefix)
    }

    /// `f` on a connection, within the timeout; errors as text for the log.
    async fn call<T, F>(&self, f: impl FnOnce(ConnectionManager) -> F) -> Result<T, String>
    where
        F: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match tokio::time::timeout(self.timeout, f(self.conn.clone())).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("redis: {e}")),
            Err(_) => Err(format!("redis: no answer within {:?}", self.timeout)),
        }
    }

    /// `prefix`: what every token of this process starts with (an older claim of this
    /// process is taken over, not refused).
    pub async fn claim(
        &self,
        key: &StreamKey,
        mine: &ClaimValue,
        prefix: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, String> {
        let (k, e) = (self.stream_key(key), self.epoch_key(key));
        let ttl = ttl.as_millis() as u64;
        let (code, epoch, from): (i64, i64, String) = self
            .call(|mut c| async move {
                self.claim
                    .key(k)
                    .key(e)
                    .arg(&mine.node)
                    .arg(&mine.token)
                    .arg(ttl)
                    .arg(&mine.rtmp)
                    .arg(&mine.http)
                    .arg(mine.since)
                    .arg(prefix)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let epoch = u64::try_from(epoch).unwrap_or(0);
        Ok(match code {
            1 => ClaimOutcome::Claimed(epoch),
            2 => ClaimOutcome::TookOver { epoch, from },
            _ => ClaimOutcome::Owned(from),
        })
    }

    pub async fn refresh(&self, key: &StreamKey, mine: &ClaimValue, ttl: Duration) -> Result<Refreshed, String> {
        let (k, e) = (self.stream_key(key), self.epoch_key(key));
        let value = serde_json::to_string(mine).map_err(|e| e.to_string())?;
        let ttl = ttl.as_millis() as u64;
        let (code, owner): (i64, String) = self
            .call(|mut c| async move {
                (self.refresh.key(k).key(e))
                    .arg(&mine.token)
                    .arg(ttl)
                    .arg(&mine.state)
                    .arg(value)
                    .arg(mine.epoch)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match code {
            1 => Refreshed::Held,
            2 => Refreshed::Restored,
            _ => Refreshed::Lost(owner.chars().take(128).collect()),
        })
    }

    pub async fn release(&self, key: &StreamKey, token: &str) -> Result<bool, String> {
        let k = self.stream_key(key);
        let n: i64 =
            self.call(|mut c| async move { self.release.key(k).arg(token).invoke_async(&mut c).await }).await?;
        Ok(n == 1)
    }

    /// A value of at most [`MAX_VALUE`] bytes (Ok(None): none, or longer).
    async fn get_bounded(&self, k: String) -> Result<Option<Vec<u8>>, String> {
        let v: redis::Value =
            self.call(|mut c| async move { self.get.key(k).arg(MAX_VALUE).invoke_async(&mut c).await }).await?;
        Ok(match v {
            redis::Value::BulkString(b) => Some(b),
            _ => None,
        })
    }

    /// The claim on `key`, if there is a well-formed one.
    pub async fn lookup(&self, key: &StreamKey) -> Result<Option<ClaimValue>, String> {
        let raw = self.get_bounded(self.stream_key(key)).await?;
        Ok(raw.and_then(|r| ClaimValue::parse(&r)))
    }

    /// Writes this node's heartbeat (`value`, JSON) with a TTL.
    pub async fn heartbeat(&self, node: &str, value: String, ttl: Duration) -> Result<(), String> {
        let k = self.node_key(node);
        let ttl = ttl.as_millis() as u64;
        self.call(|mut c| async move { c.pset_ex::<_, _, ()>(k, value, ttl).await }).await
    }

    /// Deletes this node's heartbeat (at shutdown).
    pub async fn forget_node(&self, node: &str) -> Result<(), String> {
        let k = self.node_key(node);
        self.call(|mut c| async move { c.del::<_, ()>(k).await }).await
    }

    /// The keys under `PREFIX:KIND:` (at most [`MAX_LISTED`]) with their values (each at
    /// most [`MAX_VALUE`] bytes; longer ones are left out).
    pub async fn list(&self, kind: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
        let head = format!("{}:{kind}:", self.prefix);
        let pattern = format!("{head}*");
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let p = pattern.clone();
            let (next, batch): (u64, Vec<String>) = self
                .call(|mut c| async move {
                    redis::cmd("SCAN").arg(cursor).arg("MATCH").arg(p).arg("COUNT").arg(200).query_async(&mut c).await
                })
                .await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 || keys.len() >= MAX_LISTED {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys.truncate(MAX_LISTED);
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(v) = self.get_bounded(k.clone()).await? {
                out.push((k[head.len()..].to_string(), v));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_claims_are_not_read() {
        let good = br#"{"node":"origin-a","token":"t","epoch":3,"state":"live","rtmp":"rtmp://10.0.0.5:1935","http":"","since":1}"#;
        assert_eq!(ClaimValue::parse(good).map(|c| (c.node, c.epoch)), Some(("origin-a".to_string(), 3)));
        for bad in [
            &br#"{"node":"../x","token":"t","epoch":3,"state":"live"}"#[..],
            br#"{"node":"a","token":"t","epoch":3,"state":"mine"}"#,
            br#"{"node":"a","token":"t","epoch":-1,"state":"live"}"#,
            br#"not json"#,
            br#"{"node":"a"}"#,
        ] {
            assert_eq!(ClaimValue::parse(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let huge = format!(r#"{{"node":"a","token":"t","epoch":1,"state":"live","rtmp":"{}"}}"#, "x".repeat(MAX_VALUE));
        assert_eq!(ClaimValue::parse(huge.as_bytes()), None);
    }
}
