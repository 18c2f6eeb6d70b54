//! The nginx caching edge from deploy/nginx/edge.conf, run for real with
//! Debian's nginx in front of a local livegate: MPEG-TS HLS and HTTP-FLV through it, and
//! Low-Latency HLS (blocking reloads and parts, counted at the origin; hls.js through it).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        if !wait_until(Duration::from_secs(5), || matches!(self.0.try_wait(), Ok(Some(_)))) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Starts nginx with the repository's edge.conf, pointed at `origin` and listening on a free port
/// (its prefix, pid file and cache in a scratch directory of its own, `name`).
fn start_edge(name: &str, origin: std::net::SocketAddr) -> (Nginx, std::net::SocketAddr) {
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| Command::new(p).arg("-v").output().is_ok())
        .map(String::from)
        .unwrap_or_else(|| require_tool("nginx").display().to_string());
    let prefix = scratch_dir(name);
    for d in ["tmp", "cache"] {
        std::fs::create_dir_all(prefix.join(d)).unwrap();
    }
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/edge.conf")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(conf.contains("server livegate:8080;") && conf.contains("listen 8080;"), "edge.conf changed shape");
    let conf = conf
        .replace("server livegate:8080;", &format!("server {origin};"))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
    // Run as root, nginx's workers would switch to nobody (or www-data), who cannot enter a
    // checkout in a mode-0700 home directory (/root/project): every cache access would fail
    // with EACCES and every miss be a 500. They run as the user running the tests instead,
    // as they do anyway when that user is not root (nginx then cannot switch users).
    let id =
        |flag| String::from_utf8(Command::new("id").arg(flag).output().unwrap().stdout).unwrap().trim().to_string();
    let conf = if id("-u") == "0" { format!("user {} {};\n{conf}", id("-un"), id("-gn")) } else { conf };
    let path = prefix.join("edge.conf");
    std::fs::write(&path, conf).unwrap();
    let test = Command::new(&nginx).arg("-t").arg("-p").arg(&prefix).arg("-c").arg(&path).output().unwrap();
    assert!(test.status.success(), "nginx -t: {}", String::from_utf8_lossy(&test.stderr));
    let child = Command::new(&nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&path)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(prefix.join("error.log")).unwrap())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(addr).is_ok()), "nginx did not start");
    (Nginx(child), addr)
}

fn media_sequence(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("#EXT-X-MEDIA-SEQUENCE:")).and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn last_segment(text: &str) -> String {
    text.lines().rfind(|l| l.ends_with(".ts")).unwrap_or("").to_string()
}

#[test]
fn nginx_edge_caches_segments_and_keeps_playlists_fresh() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let _pub = publish(&gw.rtmp_url("live/edge"), Source::default(), None);
    let (_nginx, edge) = start_edge("edge-nginx", gw.http);
    assert!(wait_until(Duration::from_secs(20), || {
        let r = http_get(edge, "/live/edge.m3u8");
        r.status == 200 && r.text().matches("#EXTINF").count() >= 2
    }));

    // segments: first from the origin, then from the edge cache
    let playlist = http_get(edge, "/live/edge.m3u8").text();
    let seg = format!("/live/{}", last_segment(&playlist));
    let first = http_get(edge, &seg);
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), Some("video/mp2t"));
    let second = http_get(edge, &seg);
    assert_eq!(second.header("x-cache-status"), Some("HIT"), "{:?}", second.headers);
    assert_eq!(first.body, second.body);
    assert_eq!(second.body, http_get(gw.http, &seg).body, "edge serves the origin's bytes");

    // playlists: never more than about a second behind the origin
    std::thread::sleep(Duration::from_millis(4500));
    let via_edge = http_get(edge, "/live/edge.m3u8");
    let origin = http_get(gw.http, "/live/edge.m3u8").text();
    assert_eq!(via_edge.header("content-type"), Some("application/vnd.apple.mpegurl"));
    let (e, o) = (media_sequence(&via_edge.text()), media_sequence(&origin));
    assert!(o >= e && o - e <= 1, "edge playlist stale: edge {e}, origin {o}");
    assert!(media_sequence(&via_edge.text()) >= media_sequence(&playlist), "playlist went backwards");
    assert_ne!(last_segment(&via_edge.text()), last_segment(&playlist), "edge playlist did not refresh");

    // a player records through the edge
    let dir = scratch_dir("edge-play");
    let out = dir.join("rec.ts");
    let r = record(&format!("http://{edge}/live/edge.m3u8"), 4, &out);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));

    // HTTP-FLV streams through the edge without buffering
    let flv = http_request(edge, "GET", "/live/edge.flv", 100_000, Duration::from_secs(5));
    assert_eq!(flv.status, 200);
    assert!(flv.body.starts_with(b"FLV"));
    assert!(flv.body.len() >= 100_000, "only {} bytes through the edge", flv.body.len());
}

/// `livegate_hls_requests_total{kind="KIND"}` of the origin.
fn origin_requests(gw: &Gateway, kind: &str) -> u64 {
    let text = http_get(gw.http, "/metrics").text();
    let prefix = format!("livegate_hls_requests_total{{kind=\"{kind}\"}} ");
    text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The URI, msn and part of a playlist's `EXT-X-PRELOAD-HINT`.
fn hint(text: &str) -> Option<(String, u64, u32)> {
    let uri = text.lines().find(|l| l.starts_with("#EXT-X-PRELOAD-HINT:"))?.split('"').nth(1)?.to_string();
    let (msn, part) = uri.strip_suffix(".m4s")?.rsplit('-').next()?.split_once('.')?;
    Some((uri.clone(), msn.parse().ok()?, part.parse().ok()?))
}

#[test]
fn low_latency_hls_through_the_edge_reaches_the_origin_once_per_part() {
    let gw = Gateway::in_process("[hls]\nvariant = \"lowlatency\"\n");
    let _pub = publish(&gw.rtmp_url("live/lledge"), Source::default(), None);
    let (_nginx, edge) = start_edge("edge-nginx-ll", gw.http);
    assert!(wait_until(Duration::from_secs(20), || {
        let r = http_get(edge, "/live/lledge.m3u8");
        r.status == 200 && r.text().matches("#EXTINF").count() >= 2
    }));
    let (blocking0, parts0) = (origin_requests(&gw, "blocking_playlist"), origin_requests(&gw, "part"));
    // 20 players behaving like hls.js: a blocking reload for the hinted part, then the part
    const PLAYERS: usize = 20;
    let players: Vec<_> = (0..PLAYERS)
        .map(|_| {
            std::thread::spawn(move || {
                let mut text = http_get(edge, "/live/lledge.m3u8").text();
                let (mut reloads, start) = (0u64, std::time::Instant::now());
                while start.elapsed() < Duration::from_secs(6) {
                    let (uri, msn, part) = hint(&text).expect("a preload hint");
                    let r = http_get(edge, &format!("/live/lledge.m3u8?_HLS_msn={msn}&_HLS_part={part}"));
                    assert_eq!(r.status, 200);
                    text = r.text();
                    assert!(text.contains(&uri), "the part asked for is listed");
                    let p = http_get(edge, &format!("/live/{uri}"));
                    assert_eq!(p.status, 200, "{uri}");
                    reloads += 1;
                }
                reloads
            })
        })
        .collect();
    let reloads: u64 = players.into_iter().map(|p| p.join().unwrap()).sum();
    let origin_blocking = origin_requests(&gw, "blocking_playlist") - blocking0;
    let origin_parts = origin_requests(&gw, "part") - parts0;
    println!("{reloads} blocking reloads and parts by {PLAYERS} players through the edge: the origin saw {origin_blocking} blocking reloads and {origin_parts} part requests");
    assert!(reloads >= PLAYERS as u64 * 10, "only {reloads} reloads in 6 s");
    // about one origin request per (msn, part) and per part, whatever the audience
    assert!(origin_blocking * 4 <= reloads, "{origin_blocking} origin reloads for {reloads}");
    assert!(origin_parts * 4 <= reloads, "{origin_parts} origin part requests for {reloads}");

    // and hls.js plays it through the edge at low latency
    let r = common::browser::run_player(
        serde_json::json!({"mode": "hls", "url": format!("http://{edge}/live/lledge.m3u8"), "seconds": 10,
                           "vendor": common::browser::vendor()}),
        |_, _| {},
    );
    common::browser::assert_played(&r, 10.0);
    assert!(r["parts"].as_u64().unwrap_or(0) > 0 && r["canBlockReload"].as_bool() == Some(true));
    println!("LL-HLS through the edge: latency {} s", r["latencyAvg"]);
}
