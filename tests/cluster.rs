//! More than one machine: livegate nodes that share a stream directory in a real
//! `redis-server` (started here on loopback). A publish claims its key and another node
//! refuses it, naming the owner; an edge pulls the key from its owner for every viewer; an
//! encoder that reconnects to another origin (in the grace, or after `kill -9` of the first)
//! takes the key over and the edge's viewers follow it on one timeline; Redis killed and
//! restarted empty, and forged values in it, degrade only what they must.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::hostile::Rtmp;
use common::*;

/// A `redis-server` of this test's own, without persistence.
struct Redis {
    child: Option<Child>,
    addr: SocketAddr,
}

impl Redis {
    fn start() -> Self {
        Self::start_at(free_port())
    }

    fn start_at(addr: SocketAddr) -> Self {
        let child = Command::new(require_tool("redis-server"))
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string(), "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let r = Redis { child: Some(child), addr };
        assert!(wait_until(Duration::from_secs(10), || r.try_cmd(&["PING"]).is_some_and(|p| p == "+PONG")));
        r
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// `kill -9`.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// One command in RESP; the raw reply (a bulk string's value without its header).
    fn try_cmd(&self, args: &[&str]) -> Option<String> {
        let mut s = TcpStream::connect(self.addr).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            req.extend(format!("${}\r\n{a}\r\n", a.len()).bytes());
        }
        s.write_all(&req).ok()?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = Vec::new();
        loop {
            let n = s.read(&mut buf).ok()?;
            got.extend_from_slice(&buf[..n]);
            if n == 0 || got.ends_with(b"\r\n") && (got[0] != b'$' || got.len() > 4 && complete_bulk(&got)) {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        Some(match text.strip_prefix('$') {
            Some(rest) => {
                rest.split_once("\r\n").map_or(String::new(), |(_, v)| v.trim_end_matches("\r\n").to_string())
            }
            None => text.trim_end().to_string(),
        })
    }

    fn cmd(&self, args: &[&str]) -> String {
        self.try_cmd(args).expect("redis answers")
    }
}

/// Whether a `$N\r\n...\r\n` reply is all there.
fn complete_bulk(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((len, rest)) = text[1..].split_once("\r\n") else { return false };
    match len.parse::<i64>() {
        Ok(n) if n >= 0 => rest.len() >= n as usize + 2,
        _ => true,
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A node's configuration: the directory, a short TTL, and a grace long enough for a
/// failover.
fn node_config(redis: &Redis, name: &str, extra: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nnode = \"{name}\"\nttl_ms = 3000\ntimeout_ms = 500\n{extra}\n\
         [relay]\npull_wait_ms = 8000\n[hub]\nreconnect_grace_ms = 10000\n[hls]\nenabled = false\n",
        redis.url()
    )
}

fn node(redis: &Redis, name: &str) -> Gateway {
    Gateway::in_process(&node_config(redis, name, ""))
}

/// A node whose publishers need a key (`?key=k1`).
fn keyed_node(redis: &Redis, name: &str) -> Gateway {
    Gateway::in_process(&format!("{}[auth]\npublish_keys = [\"k1\"]\n", node_config(redis, name, "")))
}

fn cluster(gw: &Gateway) -> serde_json::Value {
    serde_json::from_slice(&http_get(gw.http, "/api/cluster").body).expect("/api/cluster is JSON")
}

/// The directory's entry for `key`, as `gw` sees it.
fn owner(gw: &Gateway, key: &str) -> Option<serde_json::Value> {
    let c = cluster(gw);
    c["streams"].as_array()?.iter().find(|s| s["stream"] == key).cloned()
}

fn api_stream(gw: &Gateway, key: &str) -> Option<serde_json::Value> {
    let r = http_get(gw.http, &format!("/api/streams/{key}"));
    (r.status == 200).then(|| serde_json::from_slice(&r.body).expect("json"))
}

/// Reads HTTP-FLV from `addr` for `seconds`: when each read returned data.
fn arrivals(addr: SocketAddr, path: &str, seconds: u64) -> std::thread::JoinHandle<Vec<(Instant, usize)>> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let Ok(mut s) = TcpStream::connect(addr) else { return out };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        let end = Instant::now() + Duration::from_secs(seconds);
        let mut buf = vec![0u8; 64 * 1024];
        while Instant::now() < end {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.push((Instant::now(), n)),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => break,
            }
        }
        out
    })
}

/// The longest time without data after `from`, and whether data came after it at all.
fn longest_gap(got: &[(Instant, usize)], from: Instant) -> (Duration, bool) {
    let after: Vec<Instant> = got.iter().map(|g| g.0).filter(|t| *t >= from).collect();
    let mut prev = from;
    let mut gap = Duration::ZERO;
    for t in &after {
        gap = gap.max(t.duration_since(prev));
        prev = *t;
    }
    (gap, !after.is_empty())
}

fn assert_one_timeline(r: &ReadBack, what: &str) {
    let ts = &r.video_ts;
    let span = ts.last().copied().unwrap_or(0.0) - ts.first().copied().unwrap_or(0.0);
    assert!(r.video >= 150, "{what}: {} video packets ({})", r.video, r.codecs);
    assert!(span >= 8.0, "{what}: the viewer's timeline spans {span:.1} s");
    assert!(ts.windows(2).all(|w| w[1] >= w[0] - 0.5), "{what}: the timeline went back");
}

#[test]
fn a_key_lives_on_one_node_edges_pull_it_from_there_and_a_reconnecting_encoder_moves_it() {
    let redis = Redis::start();
    // publishing needs a key: a stream that moves is continued by its own publisher's key
    let (a, b, edge) = (keyed_node(&redis, "origin-a"), keyed_node(&redis, "origin-b"), node(&redis, "edge-e"));
    let enc = publish(&a.rtmp_url("live/demo?key=k1"), Source::default(), None);
    assert!(wait_live(&a, "live/demo", Duration::from_secs(15)));

    // the claim, seen from any node: owner, fencing epoch, state; every node heartbeats
    let claim = owner(&edge, "live/demo").expect("the edge sees the claim");
    assert_eq!((claim["node"].as_str(), claim["state"].as_str()), (Some("origin-a"), Some("live")), "{claim}");
    let first_epoch = claim["epoch"].as_u64().unwrap_or(0);
    assert!(first_epoch >= 1, "{claim}");
    assert!(
        wait_until(Duration::from_secs(5), || cluster(&edge)["nodes"].as_array().is_some_and(|n| n.len() == 3)),
        "{}",
        cluster(&edge)
    );
    let raw = redis.cmd(&["GET", "livegate:stream:live/demo"]);
    assert!(raw.contains("\"token\""), "the claim holds its owner's token: {raw}");
    assert!(!cluster(&edge).to_string().contains("token"), "the API never shows a token");

    // another node refuses the key, naming its owner
    let refused = Rtmp::publish(b.rtmp, "live", "demo?key=k1").err().expect("origin-b refused the publish");
    assert!(refused.contains("NetStream.Publish.BadName") && refused.contains("origin-a"), "{refused}");
    assert!(api_stream(&b, "live/demo").is_none());

    // the edge pulls it from its owner, once for all its viewers and outputs
    let first = http_request(edge.http, "GET", "/live/demo.flv", 50_000, Duration::from_secs(10));
    assert_eq!(first.status, 200);
    assert!(first.body.len() >= 50_000, "{} bytes through the edge", first.body.len());
    assert_plays(&edge.rtmp_url("live/demo"), "cluster-edge-rtmp");
    let o = api_stream(&a, "live/demo").expect("origin-a has the stream");
    assert!(o["viewers"]["rtmp"].as_u64().unwrap_or(0) <= 1, "the origin sees one pull: {o}");
    // a key nobody publishes is not found at once
    let t = Instant::now();
    assert_eq!(http_request(edge.http, "GET", "/live/nobody.flv", 10, Duration::from_secs(5)).status, 404);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    // the encoder leaves origin-a and comes back through origin-b within the grace: the
    // key moves (a new epoch), origin-a ends its stream, the edge's viewers follow
    let url = edge.http_url("/live/demo.flv");
    let reader = std::thread::spawn(move || read_back(&url, "cluster-move", 14));
    let timed = arrivals(edge.http, "/live/demo.flv", 14);
    std::thread::sleep(Duration::from_secs(3));
    enc.stop();
    assert!(
        wait_until(Duration::from_secs(3), || owner(&b, "live/demo").is_some_and(|c| c["state"] == "waiting")),
        "the claim says waiting while origin-a waits for its publisher: {:?}",
        owner(&b, "live/demo")
    );
    let moved_at = Instant::now();
    // (a viewer asking origin-b first makes it pull from origin-a: the publisher then takes
    // that stream over)
    assert!(wait_live(&b, "live/demo", Duration::from_secs(5)), "origin-b serves the stream");
    let _enc_b = publish(&b.rtmp_url("live/demo?key=k1"), Source::default(), None);
    let taken =
        wait_until(Duration::from_secs(15), || owner(&edge, "live/demo").is_some_and(|c| c["node"] == "origin-b"));
    assert!(taken, "origin-b never took the key over: {:?}", owner(&edge, "live/demo"));
    let claim = owner(&edge, "live/demo").expect("claimed");
    assert!(claim["epoch"].as_u64().unwrap_or(0) > first_epoch, "a takeover is a new epoch: {claim}");
    assert!(wait_until(Duration::from_secs(5), || api_stream(&a, "live/demo").is_none()), "origin-a ended its stream");
    assert_one_timeline(&reader.join().unwrap(), "edge viewer across the move");
    let (gap, resumed) = longest_gap(&timed.join().unwrap(), moved_at);
    assert!(resumed, "the edge viewer got nothing after the move");
    eprintln!("edge viewer: longest gap after the encoder reconnected to origin-b: {gap:?}");
    let e = api_stream(&edge, "live/demo").expect("the edge still has the stream");
    assert!(e["reconnects"].as_u64().unwrap_or(0) >= 1, "{e}");
}

#[test]
fn after_kill_9_of_the_origin_the_encoder_reconnects_to_another_and_edge_viewers_resume() {
    let redis = Redis::start();
    let cfg = common::hostile::config_file("cluster-kill-a", &node_config(&redis, "origin-a", ""));
    let mut a = Gateway::start_with(&["--config", &cfg]);
    let (b, edge) = (node(&redis, "origin-b"), node(&redis, "edge-e"));
    let enc = publish(&a.rtmp_url("live/k"), Source::default(), None);
    assert!(wait_live(&a, "live/k", Duration::from_secs(15)));
    let claimed =
        wait_until(Duration::from_secs(3), || owner(&edge, "live/k").is_some_and(|c| c["node"] == "origin-a"));
    assert!(claimed, "{:?}", owner(&edge, "live/k"));
    let url = edge.http_url("/live/k.flv");
    let reader = std::thread::spawn(move || read_back(&url, "cluster-kill", 16));
    let timed = arrivals(edge.http, "/live/k.flv", 16);
    std::thread::sleep(Duration::from_secs(3));
    let killed = Instant::now();
    // SAFETY: a plain syscall on the child's pid
    unsafe { libc::kill(a.pid() as i32, libc::SIGKILL) };
    let _ = a.terminate();
    drop(enc);
    // the encoder reconnects to origin-b, trying again while origin-a's claim lives on
    let refused_at_first = Rtmp::publish(b.rtmp, "live", "k").is_err();
    let mut enc_b = None;
    let taken = wait_until(Duration::from_secs(10), || {
        let mut e = publish(&b.rtmp_url("live/k"), Source::default(), None);
        std::thread::sleep(Duration::from_millis(700));
        let ok = e.is_running() && owner(&edge, "live/k").is_some_and(|c| c["node"] == "origin-b");
        if ok {
            enc_b = Some(e);
        }
        ok
    });
    assert!(taken, "origin-b never got the key: {:?}", owner(&edge, "live/k"));
    let claimed_after = killed.elapsed();
    assert_one_timeline(&reader.join().unwrap(), "edge viewer across kill -9 of its origin");
    let (gap, resumed) = longest_gap(&timed.join().unwrap(), killed);
    assert!(resumed, "the edge viewer got nothing after the kill");
    eprintln!(
        "kill -9 of origin-a: origin-b refused at first: {refused_at_first}, took the key {claimed_after:?} after the kill (TTL 3 s); the edge viewer's longest gap {gap:?}"
    );
}

#[test]
fn redis_down_keeps_live_streams_and_refuses_new_publishes_and_claims_come_back_when_it_returns() {
    let mut redis = Redis::start();
    let addr = redis.addr;
    let (a, edge) = (node(&redis, "origin-a"), node(&redis, "edge-e"));
    let open = Gateway::in_process(&node_config(&redis, "origin-open", "fail_open = true"));
    let _enc = publish(&a.rtmp_url("live/keep"), Source::default(), None);
    assert!(wait_live(&a, "live/keep", Duration::from_secs(15)));
    assert_eq!(http_request(edge.http, "GET", "/live/keep.flv", 20_000, Duration::from_secs(10)).status, 200);
    // Redis stalls (stopped, its connections open): a new publish is refused within the
    // command timeout, the live stream goes on
    let pid = redis.child.as_ref().map(|c| c.id()).expect("redis runs");
    // SAFETY: plain syscalls on the child's pid
    unsafe { libc::kill(pid as i32, libc::SIGSTOP) };
    let t = Instant::now();
    let stalled = Rtmp::publish(a.rtmp, "live", "stalled").err().expect("refused while Redis stalls");
    let took = t.elapsed();
    unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    assert!(stalled.contains("NetStream.Publish.Rejected"), "{stalled}");
    eprintln!("a publish while Redis stalls was refused after {took:?} (timeout_ms 500)");
    assert!(api_stream(&a, "live/keep").is_some());
    let url = edge.http_url("/live/keep.flv");
    let reader = std::thread::spawn(move || read_back(&url, "cluster-redis-down", 12));
    std::thread::sleep(Duration::from_secs(1));
    redis.kill();

    // past the TTL without Redis: the stream and the edge's pull go on
    std::thread::sleep(Duration::from_secs(4));
    assert!(api_stream(&a, "live/keep").is_some(), "origin-a ended a live stream because Redis is down");
    assert!(api_stream(&edge, "live/keep").is_some(), "the edge dropped its pull because Redis is down");
    let c = cluster(&a);
    assert_eq!(c["redis"], "down", "{c}");
    let metrics = http_get(a.http, "/metrics").text();
    assert!(metrics.contains("livegate_cluster_redis_up 0"), "{metrics}");
    // new publishes are refused (fail_open = false), or taken (fail_open = true)
    let refused = Rtmp::publish(a.rtmp, "live", "new").err().expect("a new publish is refused while Redis is down");
    assert!(refused.contains("NetStream.Publish.Rejected") && refused.contains("directory"), "{refused}");
    let _open_enc = publish(&open.rtmp_url("live/open"), Source::default(), None);
    assert!(wait_live(&open, "live/open", Duration::from_secs(15)), "fail_open publishes without Redis");
    // lookups fail fast
    let t = Instant::now();
    assert_eq!(http_request(edge.http, "GET", "/live/other.flv", 10, Duration::from_secs(5)).status, 404);
    assert!(t.elapsed() < Duration::from_secs(2), "a lookup took {:?}", t.elapsed());
    assert_one_timeline(&reader.join().unwrap(), "edge viewer while Redis is down");

    // Redis restarted empty: the claims are written again within a refresh
    let redis = Redis::start_at(addr);
    let back = wait_until(Duration::from_secs(8), || {
        owner(&edge, "live/keep").is_some_and(|c| c["node"] == "origin-a")
            && owner(&edge, "live/open").is_some_and(|c| c["node"] == "origin-open")
    });
    assert!(back, "claims did not come back: {}", cluster(&edge));
    assert!(redis.cmd(&["GET", "livegate:stream:live/keep"]).contains("origin-a"));
    assert!(Rtmp::publish(a.rtmp, "live", "new").is_ok(), "publishing works again");
}

#[test]
fn forged_and_oversized_values_in_redis_are_not_trusted() {
    let redis = Redis::start();
    let (a, edge) = (node(&redis, "origin-a"), node(&redis, "edge-e"));
    // garbage where a claim should be (no TTL): not a claim; a publish takes the key
    assert_eq!(redis.cmd(&["SET", "livegate:stream:live/junk", "\u{1}not json"]), "+OK");
    let mut p = Rtmp::publish(a.rtmp, "live", "junk").expect("an unreadable claim does not hold a key");
    p.send_configs(0);
    let claim = owner(&edge, "live/junk").expect("claimed");
    assert_eq!(claim["node"], "origin-a");
    // a forged claim naming a node that does not exist: the edge's pull fails, fast
    let forged = r#"{"node":"ghost","token":"x","epoch":1,"state":"live","rtmp":"rtmp://127.0.0.1:9","http":""}"#;
    assert_eq!(redis.cmd(&["SET", "livegate:stream:live/ghost", forged, "PX", "60000"]), "+OK");
    let t = Instant::now();
    assert_eq!(http_request(edge.http, "GET", "/live/ghost.flv", 10, Duration::from_secs(10)).status, 404);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // a claim over the value bound, and one with a path in its node name: not read
    let huge = format!(
        r#"{{"node":"big","token":"x","epoch":1,"state":"live","rtmp":"rtmp://{}:1935"}}"#,
        "h".repeat(100_000)
    );
    assert_eq!(redis.cmd(&["SET", "livegate:stream:live/huge", &huge]), "+OK");
    let tricky = r#"{"node":"../../x","token":"x","epoch":1,"state":"live","rtmp":"rtmp://127.0.0.1:9"}"#;
    assert_eq!(redis.cmd(&["SET", "livegate:stream:live/tricky", tricky]), "+OK");
    for key in ["huge", "tricky"] {
        assert_eq!(http_request(edge.http, "GET", &format!("/live/{key}.flv"), 10, Duration::from_secs(5)).status, 404);
    }
    // (the listing is answered from a copy at most 1 s old)
    let mut c = serde_json::Value::Null;
    let listed = |c: &serde_json::Value| -> Vec<String> {
        c["streams"].as_array().into_iter().flatten().filter_map(|s| s["stream"].as_str().map(String::from)).collect()
    };
    let fresh = wait_until(Duration::from_secs(3), || {
        c = cluster(&edge);
        listed(&c).contains(&"live/ghost".to_string())
    });
    assert!(fresh && listed(&c).contains(&"live/junk".to_string()), "{c}");
    assert!(!listed(&c).iter().any(|s| s == "live/huge" || s == "live/tricky"), "{c}");
    // a forged heartbeat is listed as data, never trusted as a URL to pull from
    assert_eq!(redis.cmd(&["SET", "livegate:node:evil", "{\"node\":\"evil\",\"streams\":\"<b>\"}"]), "+OK");
    assert_eq!(cluster(&edge)["redis"], "up");
    // the node whose claim someone overwrote by hand finds it at its next refresh and ends
    // its stream there (it never takes the key back)
    let stolen = r#"{"node":"origin-z","token":"other","epoch":99,"state":"live","rtmp":"rtmp://127.0.0.1:9"}"#;
    assert_eq!(redis.cmd(&["SET", "livegate:stream:live/junk", stolen, "PX", "60000"]), "+OK");
    assert!(
        wait_until(Duration::from_secs(5), || api_stream(&a, "live/junk").is_none()),
        "origin-a kept a stream whose claim another node holds"
    );
    assert!(redis.cmd(&["GET", "livegate:stream:live/junk"]).contains("origin-z"), "the other claim stands");
    drop(p);

    // a claim that went missing after a later claim (a higher epoch) was taken and released
    // is not written back: the node ends its stream
    let mut f = Rtmp::publish(a.rtmp, "live", "fenced").expect("publish");
    f.send_configs(0);
    let claimed =
        wait_until(Duration::from_secs(3), || owner(&edge, "live/fenced").is_some_and(|c| c["node"] == "origin-a"));
    assert!(claimed, "{:?}", owner(&edge, "live/fenced"));
    assert_eq!(redis.cmd(&["INCRBY", "livegate:epoch:live/fenced", "10"]).chars().next(), Some(':'));
    assert_eq!(redis.cmd(&["DEL", "livegate:stream:live/fenced"]), ":1");
    assert!(
        wait_until(Duration::from_secs(5), || api_stream(&a, "live/fenced").is_none()),
        "origin-a kept a stream whose key a later claim had"
    );
    assert_eq!(redis.cmd(&["GET", "livegate:stream:live/fenced"]), "", "the claim was not written back");
    drop(f);

    // a value of another type where a claim should be is unreadable, not an outage
    assert_eq!(redis.cmd(&["HSET", "livegate:stream:live/hash", "a", "b"]), ":1");
    let mut h = Rtmp::publish(a.rtmp, "live", "hash").expect("a hash does not hold a key");
    h.send_configs(0);
    assert_eq!(cluster(&edge)["redis"], "up");
    drop(h);

    // two publishes of one key on one node at once share its claim (the hub decides between
    // them: a silent one is taken over by the other); the claim stays
    let tries: Vec<_> = (0..2)
        .map(|_| {
            let addr = a.rtmp;
            std::thread::spawn(move || Rtmp::publish(addr, "live", "dup").ok())
        })
        .collect();
    let won: Vec<Rtmp> = tries.into_iter().filter_map(|t| t.join().unwrap()).collect();
    assert!(!won.is_empty(), "a publish of live/dup");
    std::thread::sleep(Duration::from_secs(4));
    let claim = owner(&edge, "live/dup").expect("the winner's claim is still there past the TTL");
    assert_eq!(claim["node"], "origin-a", "{claim}");
}

#[test]
fn without_a_cluster_section_there_is_no_directory() {
    let gw = Gateway::in_process("");
    assert_eq!(cluster(&gw), serde_json::json!({ "enabled": false }));
    assert!(livegate::config::Config::parse("[cluster]\nredis = \"nope://x\"\n").is_err());
    assert!(livegate::config::Config::parse("[cluster]\nredis = \"redis://127.0.0.1/0\"\nnode = \"a/b\"\n").is_err());
    assert!(livegate::config::Config::parse("[cluster]\nredis = \"redis://127.0.0.1/0\"\nttl_ms = 10\n").is_err());
    assert!(livegate::config::Config::parse("[cluster]\nredis = \"redis://127.0.0.1/0\"\nbogus = 1\n").is_err());
    // the docker-compose cluster profile's node configurations
    for node in ["origin-a", "origin-b", "edge-a", "edge-b"] {
        let path = format!("{}/deploy/cluster/{node}.toml", env!("CARGO_MANIFEST_DIR"));
        let config = livegate::config::Config::parse(&std::fs::read_to_string(&path).unwrap());
        let config = config.unwrap_or_else(|e| panic!("{path}: {e:#}"));
        assert_eq!(config.cluster.node.as_deref(), Some(node));
    }
}
