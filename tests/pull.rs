//! Pull edges against real origins: a second livegate (over RTMP and over HTTP-FLV) and
//! Debian's nginx-rtmp. A viewer of a stream the edge does not have starts one pull, on
//! any output (HTTP-FLV, RTMP play, HLS); viewers share it (the origin sees one
//! connection); it stops after `pull_idle_ms` without viewers; the origin's encoder
//! restarting within the grace keeps the edge's viewers; non-live keys and pull loops get
//! not-found fast.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::nginx_rtmp::NginxRtmp;
use common::*;

fn api_stream(gw: &Gateway, key: &str) -> Option<serde_json::Value> {
    let r = http_get(gw.http, &format!("/api/streams/{key}"));
    (r.status == 200).then(|| serde_json::from_slice(&r.body).expect("json"))
}

/// An ffmpeg player of `url` for `seconds`, in the background.
fn play_in_background(url: &str, seconds: u32) -> std::process::Child {
    Command::new(require_tool("ffmpeg"))
        .args(["-v", "error", "-i", url, "-t", &seconds.to_string(), "-f", "null", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ffmpeg")
}

fn edge_config(origin: &str, idle_ms: u64) -> String {
    format!("[relay]\npull_wait_ms = 5000\n[apps.live]\npull = \"{origin}\"\npull_idle_ms = {idle_ms}\n")
}

#[test]
fn an_edge_pulls_from_a_livegate_origin_once_for_every_output_and_stops_when_idle() {
    let origin = Gateway::in_process("");
    let edge = Gateway::in_process(&edge_config(&format!("rtmp://{}/live", origin.rtmp), 2000));
    let _enc = publish(&origin.rtmp_url("live/demo"), Source::default(), None);
    assert!(wait_live(&origin, "live/demo", Duration::from_secs(15)));
    assert!(api_stream(&edge, "live/demo").is_none(), "nothing is pulled before a viewer asks");

    // the first viewer (HTTP-FLV) starts the pull; RTMP play and HLS join it
    let started = Instant::now();
    let first = http_request(edge.http, "GET", "/live/demo.flv", 50_000, Duration::from_secs(10));
    assert_eq!(first.status, 200);
    assert!(first.body.len() >= 50_000, "{} bytes", first.body.len());
    eprintln!("first 50 kB through the edge {:?} after the request", started.elapsed());
    let players: Vec<_> = [edge.http_url("/live/demo.flv"), edge.rtmp_url("live/demo")]
        .iter()
        .map(|u| play_in_background(u, 6))
        .collect();
    let one_pull = wait_until(Duration::from_secs(5), || {
        let (o, e) = (api_stream(&origin, "live/demo"), api_stream(&edge, "live/demo"));
        let edge_viewers = e
            .map_or(0, |e| e["viewers"]["http_flv"].as_u64().unwrap_or(0) + e["viewers"]["rtmp"].as_u64().unwrap_or(0));
        o.is_some_and(|o| o["viewers"]["rtmp"] == 1) && edge_viewers == 2
    });
    assert!(one_pull, "two edge viewers ride on one pull: origin {:?}", api_stream(&origin, "live/demo"));
    assert_plays(&edge.http_url("/live/demo.flv"), "pull-flv");
    assert_plays(&edge.rtmp_url("live/demo"), "pull-rtmp");
    let playlist = http_get(edge.http, "/live/demo.m3u8");
    assert_eq!(playlist.status, 200);
    assert!(playlist.text().starts_with("#EXTM3U"), "{}", playlist.text());
    for mut p in players {
        let _ = p.wait();
    }
    assert_eq!(api_stream(&origin, "live/demo").unwrap()["viewers"]["rtmp"], 1, "still one pull");

    // no viewer (the HLS client is counted 10 s after its last fetch): the pull stops
    // pull_idle_ms later, and the origin loses its viewer
    let stopped = wait_until(Duration::from_secs(25), || api_stream(&edge, "live/demo").is_none());
    assert!(stopped, "the pull did not stop without viewers");
    assert!(wait_until(Duration::from_secs(5), || api_stream(&origin, "live/demo")
        .is_some_and(|o| o["viewers"]["rtmp"] == 0)));

    // HLS alone starts a pull too: the first playlist request waits for the first playlist
    let playlist = http_get(edge.http, "/live/demo.m3u8");
    assert_eq!(playlist.status, 200, "{}", playlist.text());
    assert!(playlist.text().contains("#EXTINF"), "{}", playlist.text());
}

#[test]
fn an_edge_pulls_from_nginx_rtmp_and_from_livegate_over_http_flv() {
    let nginx = NginxRtmp::start();
    let _enc = publish(&format!("rtmp://{}/live/n", nginx.addr()), Source::default(), None);
    let edge = Gateway::in_process(&edge_config(&format!("rtmp://{}/live", nginx.addr()), 2000));
    // nginx-rtmp takes a moment to have the stream: the first tries may be refused
    let live = wait_until(Duration::from_secs(15), || {
        http_request(edge.http, "GET", "/live/n.flv", 20_000, Duration::from_secs(8)).status == 200
    });
    assert!(live, "the edge never pulled from nginx-rtmp");
    assert_plays(&edge.http_url("/live/n.flv"), "pull-nginx-flv");
    assert_plays(&edge.rtmp_url("live/n"), "pull-nginx-rtmp");

    let origin = Gateway::in_process("");
    let _enc2 = publish(&origin.rtmp_url("live/h"), Source::default(), None);
    assert!(wait_live(&origin, "live/h", Duration::from_secs(15)));
    let http_edge = Gateway::in_process(&edge_config(&format!("http://{}/live", origin.http), 2000));
    assert_plays(&http_edge.http_url("/live/h.flv"), "pull-http-flv");
    let o = api_stream(&origin, "live/h").unwrap();
    assert!(o["viewers"]["http_flv"].as_u64().unwrap_or(0) <= 1, "{o}");
}

#[test]
fn edge_viewers_keep_playing_when_the_origin_encoder_restarts_within_the_grace() {
    let origin = Gateway::in_process("");
    let edge = Gateway::in_process(&edge_config(&format!("rtmp://{}/live", origin.rtmp), 5000));
    let enc = publish(&origin.rtmp_url("live/r"), Source::default(), None);
    assert!(wait_live(&origin, "live/r", Duration::from_secs(15)));
    let url = edge.http_url("/live/r.flv");
    let reader = std::thread::spawn(move || read_back(&url, "pull-restart", 12));
    std::thread::sleep(Duration::from_secs(4));
    enc.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let _enc = publish(&origin.rtmp_url("live/r"), Source::default(), None);
    let ReadBack { video, codecs, video_ts: ts, .. } = reader.join().unwrap();
    assert!(video >= 200, "{video} video packets through a 12 s read ({codecs})");
    let span = ts.last().copied().unwrap_or(0.0) - ts.first().copied().unwrap_or(0.0);
    assert!(span >= 9.0, "the viewer's timeline spans {span:.1} s");
    assert!(ts.windows(2).all(|w| w[1] >= w[0] - 0.5), "the timeline went back");
    assert!(api_stream(&edge, "live/r").is_some(), "the edge lost the stream");
}

#[test]
fn keys_that_are_not_live_and_pull_loops_get_not_found_fast() {
    let origin = Gateway::in_process("");
    let cfg = format!(
        "[relay]\npull_wait_ms = 5000\nmax_pulls_per_origin = 8\n[apps.live]\npull = \"rtmp://{}/live\"\n",
        origin.rtmp
    );
    let edge = Gateway::in_process(&cfg);
    let started = Instant::now();
    let handles: Vec<_> = (0..40)
        .map(|i| {
            let http = edge.http;
            std::thread::spawn(move || {
                http_request(http, "GET", &format!("/live/none{i}.flv"), 1000, Duration::from_secs(10)).status
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 404);
    }
    assert!(started.elapsed() < Duration::from_secs(5), "40 non-live keys took {:?}", started.elapsed());

    // two edges that pull from each other: a loop, refused at the second hop
    let (a_rtmp, a_http, b_rtmp, b_http) = (free_port(), free_port(), free_port(), free_port());
    let a = Gateway::in_process_at(&edge_config(&format!("rtmp://{b_rtmp}/live"), 2000), a_rtmp, a_http);
    let b = Gateway::in_process_at(&edge_config(&format!("rtmp://{a_rtmp}/live"), 2000), b_rtmp, b_http);
    let started = Instant::now();
    assert_eq!(http_request(a.http, "GET", "/live/loop.flv", 1000, Duration::from_secs(10)).status, 404);
    assert!(started.elapsed() < Duration::from_secs(5), "the loop took {:?}", started.elapsed());
    assert!(api_stream(&a, "live/loop").is_none() && api_stream(&b, "live/loop").is_none());
    let _ = b_http;
}

/// A fake origin on loopback: every connection gets `answer(stream)` written to it until
/// the peer goes; the number of connections it took.
fn fake_origin(answer: fn(&mut std::net::TcpStream)) -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let n2 = n.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().map_while(Result::ok) {
            n2.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            std::thread::spawn(move || answer(&mut conn));
        }
    });
    (addr, n)
}

#[test]
fn origins_that_send_garbage_or_huge_tags_end_the_pull_not_the_edge() {
    use std::io::{Read, Write};
    // RTMP: garbage instead of a handshake
    let (rtmp_garbage, _) = fake_origin(|c| {
        let mut b = [0u8; 1537];
        let _ = c.read(&mut b);
        let junk: Vec<u8> = (0..1 << 20).map(|i| (i * 7 + 3) as u8).collect();
        for _ in 0..64 {
            if c.write_all(&junk).is_err() {
                return;
            }
        }
    });
    // HTTP-FLV: a tag header that declares 16 MiB (over rtmp.max_message_size)
    let (huge_tag, _) = fake_origin(|c| {
        let mut b = [0u8; 4096];
        let _ = c.read(&mut b);
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\n\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00",
        );
        let _ = c.write_all(&[9, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0]);
        let zeros = vec![0u8; 1 << 20];
        while c.write_all(&zeros).is_ok() {}
    });
    // HTTP-FLV: 512 MiB of 4 MiB video tags of garbage (each within the bound)
    let (flood, _) = fake_origin(|c| {
        let mut b = [0u8; 4096];
        let _ = c.read(&mut b);
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\ncontent-type: video/x-flv\r\n\r\nFLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00",
        );
        let size = 4usize << 20;
        let mut tag = vec![9u8, (size >> 16) as u8, (size >> 8) as u8, size as u8, 0, 0, 0, 0, 0, 0, 0];
        tag.extend((0..size).map(|i| (i * 13) as u8));
        tag.extend_from_slice(&((size + 11) as u32).to_be_bytes());
        for _ in 0..128 {
            if c.write_all(&tag).is_err() {
                return;
            }
        }
    });
    // HTTP: an HTML page
    let (html, _) = fake_origin(|c| {
        let mut b = [0u8; 4096];
        let _ = c.read(&mut b);
        let _ = c
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 20\r\n\r\n<html>nothing</html>");
    });
    let dir = scratch_dir("pull-hostile");
    let cfg = dir.join("livegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[relay]\npull_wait_ms = 3000\n[hub]\nreconnect_grace_ms = 2000\n\
             [apps.a]\npull = \"rtmp://{rtmp_garbage}/live\"\n[apps.b]\npull = \"http://{huge_tag}/live\"\n\
             [apps.c]\npull = \"http://{flood}/live\"\n[apps.d]\npull = \"http://{html}/live\"\n"
        ),
    )
    .unwrap();
    let mut edge = Gateway::start_with(&["--config", cfg.to_str().unwrap()]);
    let base = proc_status_kb(edge.pid(), "VmRSS:");
    for app in ["a", "b", "c", "d"] {
        let started = Instant::now();
        let r = http_request(edge.http, "GET", &format!("/{app}/s.flv"), 1000, Duration::from_secs(10));
        assert_eq!(r.status, 404, "app {app}");
        assert!(started.elapsed() <= Duration::from_secs(4), "app {app}: {:?}", started.elapsed());
    }
    // the flood runs on while the pull retries within the grace
    std::thread::sleep(Duration::from_secs(4));
    assert!(edge.is_running(), "the edge died: {}", edge.log());
    assert_eq!(http_get(edge.http, "/healthz").status, 200);
    let hwm = proc_status_kb(edge.pid(), "VmHWM:");
    eprintln!("edge VmRSS at start {base} kB, VmHWM after the hostile origins {hwm} kB");
    assert!(hwm < base + 96 * 1024, "VmHWM {hwm} kB (started at {base} kB)");
    let log = edge.log();
    assert!(log.contains("bad RTMP from the origin") || log.contains("pull failed"), "{log}");
    assert!(log.contains("larger than the"), "the huge tag is named in the log: {log}");
}

#[test]
fn always_on_pulls_start_by_themselves_and_a_lost_origin_ends_the_stream_after_the_grace() {
    let origin = Gateway::in_process("[hub]\nreconnect_grace_ms = 500\n");
    let enc = publish(&origin.rtmp_url("live/lobby"), Source::default(), None);
    let enc2 = publish(&origin.rtmp_url("live/gone"), Source::default(), None);
    assert!(wait_live(&origin, "live/lobby", Duration::from_secs(15)));
    assert!(wait_live(&origin, "live/gone", Duration::from_secs(15)));
    let edge = Gateway::in_process(&format!(
        "[hub]\nreconnect_grace_ms = 3000\n[apps.live]\npull = \"rtmp://{}/live\"\npull_always = [\"lobby\"]\npull_idle_ms = 1000\n",
        origin.rtmp
    ));
    // (the API asks no pull, unlike a viewer's request)
    let on_edge = |key: &str| api_stream(&edge, key).is_some();
    // no viewer asked: the edge has it anyway, and keeps it past pull_idle_ms
    assert!(wait_until(Duration::from_secs(15), || on_edge("live/lobby")), "the always-on pull did not start");
    std::thread::sleep(Duration::from_secs(3));
    assert!(api_stream(&edge, "live/lobby").is_some(), "an always-on pull stopped without viewers");
    assert_eq!(api_stream(&origin, "live/lobby").unwrap()["viewers"]["rtmp"], 1);

    // an on-demand pull with a viewer; its origin's encoder goes for good: the edge's stream
    // waits out the edge's grace (3 s) while the pull tries again, then ends
    let mut viewer = play_in_background(&edge.http_url("/live/gone.flv"), 60);
    assert!(wait_until(Duration::from_secs(10), || api_stream(&edge, "live/gone").is_some()));
    std::thread::sleep(Duration::from_secs(2));
    enc2.stop();
    let gone_at = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || api_stream(&edge, "live/gone").is_none()),
        "the edge kept a stream whose origin is gone"
    );
    let took = gone_at.elapsed();
    assert!(took >= Duration::from_secs(2), "ended after {took:?}: before the edge's grace");
    assert!(
        wait_until(Duration::from_secs(10), || viewer.try_wait().ok().flatten().is_some()),
        "the viewer was not ended"
    );
    // the always-on pull comes back by itself when its origin stream does
    enc.stop();
    assert!(wait_until(Duration::from_secs(15), || api_stream(&edge, "live/lobby").is_none()));
    let _enc = publish(&origin.rtmp_url("live/lobby"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(20), || on_edge("live/lobby")), "the always-on pull did not come back");
}
