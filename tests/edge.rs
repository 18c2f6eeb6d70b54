//! The nginx caching edge from deploy/nginx/edge.conf, run for real with
//! Debian's nginx in front of a local livegate.

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

/// Starts nginx with the repository's edge.conf, pointed at `origin` and listening on a free port.
fn start_edge(origin: std::net::SocketAddr) -> (Nginx, std::net::SocketAddr) {
    let nginx = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| Command::new(p).arg("-v").output().is_ok())
        .map(String::from)
        .unwrap_or_else(|| require_tool("nginx").display().to_string());
    let prefix = scratch_dir("edge-nginx");
    for d in ["tmp", "cache"] {
        std::fs::create_dir_all(prefix.join(d)).unwrap();
    }
    let conf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/nginx/edge.conf")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    assert!(conf.contains("server livegate:8080;") && conf.contains("listen 8080;"), "edge.conf changed shape");
    let conf = conf
        .replace("server livegate:8080;", &format!("server {origin};"))
        .replace("listen 8080;", &format!("listen 127.0.0.1:{port};"));
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
    let gw = Gateway::in_process("");
    let _pub = publish(&gw.rtmp_url("live/edge"), Source::default(), None);
    let (_nginx, edge) = start_edge(gw.http);
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
