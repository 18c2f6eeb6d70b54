//! What happens, as it happens, for operators: the server's event log behind
//! `GET /api/events` (Server-Sent Events, `server::http::console`).
//!
//! One shared backlog for every client: the newest [`MAX_EVENTS`] events within
//! [`MAX_BYTES`], each already written as its SSE frame (`id`, `event`, `data`), so an
//! event costs one serialization however many consoles are open, and a client is only a
//! cursor into the backlog. A client that falls behind the backlog's start (it reads
//! slower than events come) has lost events: it is dropped and counted, and reconnects
//! with `Last-Event-ID`, which replays what the backlog still holds or, when that is
//! gone too (or the id is from before a restart), tells it to `reset` (reload its state).
//!
//! Event ids are `BOOT-N`: `BOOT` names this run of the process, so an id from before a
//! restart is never taken for one of this run. Kinds: `publish`, `reconnect` (a publisher
//! back within the grace), `waiting` (the publisher left, the grace runs), `unpublish`,
//! `kick`, `drain`, `push`, `record` (state changes), and the warnings `refused` and
//! `limit`, which come in floods under attack: those are rate-limited per kind
//! ([`WARNINGS_PER_SECOND`]), with the number left out (`suppressed`) carried by the next
//! one of their kind, and the newest [`RECENT_WARNINGS`] are kept for the console's
//! "recent warnings".

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::watch;

/// Events the backlog holds at most.
pub const MAX_EVENTS: usize = 1024;
/// Bytes of SSE frames the backlog holds at most.
pub const MAX_BYTES: usize = 256 * 1024;
/// Warnings (`refused`, `limit`) of one kind let through per second; the rest are counted.
pub const WARNINGS_PER_SECOND: u32 = 5;
/// Warnings kept for the console.
pub const RECENT_WARNINGS: usize = 20;

#[derive(Debug)]
pub struct Events {
    boot: String,
    inner: Mutex<Inner>,
    newest: watch::Sender<u64>,
    /// Open `/api/events` connections.
    pub clients: AtomicUsize,
}

#[derive(Debug, Default)]
struct Inner {
    ring: VecDeque<(u64, Bytes)>,
    bytes: usize,
    /// Id of the newest event (0: none yet).
    last: u64,
    /// Per warning kind: the second it counts in, warnings let through in it, and warnings
    /// left out since the last one let through.
    buckets: HashMap<&'static str, (Instant, u32, u64)>,
    warnings: VecDeque<Value>,
    /// Warnings per kind, those left out included.
    warned: HashMap<&'static str, u64>,
}

/// What a client at a cursor gets.
#[derive(Debug, PartialEq)]
pub enum Since {
    /// The frames after the cursor (maybe none), and the id of the last one.
    Frames(Vec<Bytes>, u64),
    /// Events after the cursor are gone from the backlog.
    Lost,
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

impl Events {
    pub fn new() -> Self {
        let boot = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self {
            boot: format!("{boot:x}"),
            inner: Mutex::new(Inner::default()),
            newest: watch::channel(0).0,
            clients: AtomicUsize::new(0),
        }
    }

    /// Adds an event of `kind` (`data` is an object; `t`, the Unix time in ms, is added).
    pub fn emit(&self, kind: &'static str, data: Value) {
        let mut inner = crate::hub::lock(&self.inner);
        self.push(&mut inner, kind, data);
    }

    /// Adds a warning of `kind`, unless more than [`WARNINGS_PER_SECOND`] of its kind came
    /// this second (then it is only counted, as `suppressed` on the next one let through).
    pub fn warn(&self, kind: &'static str, mut data: Value) {
        let now = Instant::now();
        let mut inner = crate::hub::lock(&self.inner);
        *inner.warned.entry(kind).or_default() += 1;
        let bucket = inner.buckets.entry(kind).or_insert((now, 0, 0));
        if now.duration_since(bucket.0).as_secs() >= 1 {
            *bucket = (now, 0, bucket.2);
        }
        if bucket.1 >= WARNINGS_PER_SECOND {
            bucket.2 += 1;
            return;
        }
        bucket.1 += 1;
        let suppressed = std::mem::take(&mut bucket.2);
        if let Some(o) = data.as_object_mut() {
            if suppressed > 0 {
                o.insert("suppressed".into(), json!(suppressed));
            }
            o.insert("kind".into(), json!(kind));
            o.insert("t".into(), json!(unix_ms()));
        }
        if inner.warnings.len() == RECENT_WARNINGS {
            inner.warnings.pop_front();
        }
        inner.warnings.push_back(data.clone());
        self.push(&mut inner, kind, data);
    }

    fn push(&self, inner: &mut Inner, kind: &'static str, mut data: Value) {
        if let Some(o) = data.as_object_mut() {
            o.entry("t").or_insert_with(|| json!(unix_ms()));
        }
        inner.last += 1;
        let id = inner.last;
        let frame = Bytes::from(format!("id: {}-{id}\nevent: {kind}\ndata: {data}\n\n", self.boot));
        inner.bytes += frame.len();
        inner.ring.push_back((id, frame));
        while inner.ring.len() > MAX_EVENTS || (inner.bytes > MAX_BYTES && inner.ring.len() > 1) {
            if let Some((_, old)) = inner.ring.pop_front() {
                inner.bytes -= old.len();
            }
        }
        self.newest.send_replace(id);
    }

    /// The frames after event `after` (0: from the first event ever).
    pub fn since(&self, after: u64) -> Since {
        let inner = crate::hub::lock(&self.inner);
        let first = inner.ring.front().map_or(inner.last + 1, |(id, _)| *id);
        if after < first.saturating_sub(1) || after > inner.last {
            return Since::Lost;
        }
        let skip = (after + 1 - first) as usize;
        Since::Frames(inner.ring.iter().skip(skip).map(|(_, f)| f.clone()).collect(), inner.last)
    }

    /// Id of the newest event.
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// Changes with every new event.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.newest.subscribe()
    }

    /// The cursor a `Last-Event-ID` names: None when it is not of this run of the process.
    pub fn cursor(&self, last_event_id: &str) -> Option<u64> {
        let (boot, n) = last_event_id.trim().split_once('-')?;
        (boot == self.boot).then(|| n.parse().ok()).flatten()
    }

    /// The id of the newest event, as `Last-Event-ID` gives it back.
    pub fn last_id(&self) -> String {
        format!("{}-{}", self.boot, self.newest())
    }

    /// Warnings per kind so far (those left out by the rate limit included).
    pub fn warned(&self) -> HashMap<&'static str, u64> {
        crate::hub::lock(&self.inner).warned.clone()
    }

    /// The newest warnings, oldest first.
    pub fn recent_warnings(&self) -> Vec<Value> {
        crate::hub::lock(&self.inner).warnings.iter().cloned().collect()
    }
}

/// Now, as Unix milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(s: Since) -> Vec<String> {
        match s {
            Since::Frames(f, _) => {
                f.iter().map(|b| String::from_utf8_lossy(b).lines().next().unwrap_or_default().to_string()).collect()
            }
            Since::Lost => vec!["lost".into()],
        }
    }

    #[test]
    fn a_cursor_gets_what_came_after_it_until_the_backlog_moved_past_it() {
        let e = Events::new();
        assert_eq!(e.since(0), Since::Frames(vec![], 0));
        e.emit("publish", json!({"stream": "live/a"}));
        e.emit("unpublish", json!({"stream": "live/a"}));
        let boot = e.boot.clone();
        assert_eq!(ids(e.since(0)), [format!("id: {boot}-1"), format!("id: {boot}-2")]);
        assert_eq!(ids(e.since(1)), [format!("id: {boot}-2")]);
        assert_eq!(e.since(2), Since::Frames(vec![], 2));
        assert_eq!(e.since(3), Since::Lost, "a cursor from the future (another run)");
        let Since::Frames(f, _) = e.since(1) else { panic!() };
        let text = String::from_utf8_lossy(&f[0]);
        assert!(text.contains("\nevent: unpublish\ndata: {") && text.ends_with("}\n\n"), "{text}");
        assert!(text.contains("\"stream\":\"live/a\"") && text.contains("\"t\":"), "{text}");
        for _ in 0..MAX_EVENTS {
            e.emit("publish", json!({"stream": "live/b"}));
        }
        assert_eq!(e.since(1), Since::Lost, "event 2 left the backlog");
        assert_eq!(ids(e.since(e.newest() - 1)).len(), 1);
        assert_eq!(e.cursor(&format!("{boot}-7")), Some(7));
        assert_eq!(e.cursor("0-7"), None);
        assert_eq!(e.cursor("garbage"), None);
    }

    #[test]
    fn the_backlog_is_bounded_in_bytes() {
        let e = Events::new();
        let big = "x".repeat(3000);
        for _ in 0..200 {
            e.emit("publish", json!({ "stream": big }));
        }
        let inner = crate::hub::lock(&e.inner);
        assert!(inner.bytes <= MAX_BYTES && inner.ring.len() < 100, "{} bytes", inner.bytes);
        assert_eq!(inner.bytes, inner.ring.iter().map(|(_, f)| f.len()).sum::<usize>());
    }

    #[test]
    fn warnings_are_rate_limited_and_say_how_many_were_left_out() {
        let e = Events::new();
        for i in 0..100 {
            e.warn("refused", json!({ "n": i }));
        }
        e.warn("limit", json!({"limit": "x"}));
        assert_eq!(e.newest(), u64::from(WARNINGS_PER_SECOND) + 1, "five refusals and the limit");
        // a second later the next refusal says how many were left out
        crate::hub::lock(&e.inner).buckets.get_mut("refused").unwrap().0 -= std::time::Duration::from_secs(1);
        e.warn("refused", json!({}));
        let w = e.recent_warnings();
        assert_eq!(w.last().unwrap()["suppressed"], 95);
        assert!(w.len() <= RECENT_WARNINGS);
    }
}
