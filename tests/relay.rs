//! Push relays (restream) against real targets: Debian's nginx-rtmp and a second livegate.
//! An ffmpeg publish to the origin is pushed to both, ffmpeg reads both back; a target
//! that goes away is retried and comes back by itself (the wait shown in `/api/streams`);
//! a target that stops reading costs the others nothing and is reconnected; targets that
//! never answer or close at once are retried with growing backoff; the admin API adds and
//! removes targets and refuses bad URLs with the reason.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::nginx_rtmp::NginxRtmp;
use common::*;

const TOKEN: &str = "relay-test-admin-token";

fn api_streams(gw: &Gateway) -> serde_json::Value {
    let r = http_get(gw.http, "/api/streams");
    assert_eq!(r.status, 200);
    serde_json::from_slice(&r.body).expect("json")
}

/// The `pushes` of stream `name` on `gw`.
fn pushes(gw: &Gateway, name: &str) -> Vec<serde_json::Value> {
    let v = api_streams(gw);
    v["streams"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .and_then(|s| s["pushes"].as_array().cloned())
        .unwrap_or_default()
}

fn push_to(gw: &Gateway, name: &str, port: u16) -> Option<serde_json::Value> {
    pushes(gw, name).into_iter().find(|p| p["url"].as_str().is_some_and(|u| u.contains(&format!(":{port}/"))))
}

/// An admin request; (status, body).
fn origin_config(targets: &[String]) -> String {
    let list: Vec<String> = targets.iter().map(|t| format!("{t:?}")).collect();
    format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[relay]\npush = [{}]\nconnect_timeout_ms = 2000\nstall_timeout_ms = 3000\nqueue_bytes = 262144\n",
        list.join(", ")
    )
}

#[test]
fn pushes_reach_nginx_rtmp_and_livegate_and_come_back_after_the_target_restarts() {
    let nginx = NginxRtmp::start();
    let target = Gateway::in_process("");
    let origin = Gateway::in_process(&origin_config(&[
        format!("rtmp://{}/live/{{stream}}", nginx.addr()),
        format!("rtmp://{}/live/{{app}}-{{stream}}", target.rtmp),
    ]));
    let _ffmpeg = publish(&origin.rtmp_url("live/demo"), Source::default(), None);
    assert!(wait_live(&origin, "live/demo", Duration::from_secs(15)));
    assert!(wait_live(&target, "live/live-demo", Duration::from_secs(15)), "the push to livegate did not go live");
    assert_plays(&format!("rtmp://{}/live/demo", nginx.addr()), "relay-nginx");
    assert_plays(&target.http_url("/live/live-demo.flv"), "relay-livegate");
    let p = push_to(&origin, "demo", nginx.port).expect("the nginx push in /api/streams");
    assert_eq!(p["state"], "publishing", "{p}");
    assert!(p["bytes"].as_u64().unwrap() > 100_000, "{p}");
    assert_eq!(p["source"], "config");
    assert!(p["connected_since_unix_ms"].as_u64().is_some(), "{p}");

    // the target goes away: the push waits (shown), and comes back when it is there again
    let port = nginx.port;
    drop(nginx);
    assert!(
        wait_until(Duration::from_secs(10), || push_to(&origin, "demo", port)
            .is_some_and(|p| p["state"] == "waiting" && p["last_error"].is_string())),
        "{:?}",
        push_to(&origin, "demo", port)
    );
    std::thread::sleep(Duration::from_secs(4));
    let nginx = NginxRtmp::start_on(port);
    assert!(
        wait_until(Duration::from_secs(40), || push_to(&origin, "demo", port)
            .is_some_and(|p| p["state"] == "publishing")),
        "the push did not come back: {:?}",
        push_to(&origin, "demo", port)
    );
    let p = push_to(&origin, "demo", port).unwrap();
    assert!(p["reconnects"].as_u64().unwrap() >= 1, "{p}");
    assert_plays(&format!("rtmp://{}/live/demo", nginx.addr()), "relay-nginx-again");
    // the other target never noticed
    let other = push_to(&origin, "demo", target.rtmp.port()).unwrap();
    assert_eq!((other["state"].as_str(), other["reconnects"].as_u64()), (Some("publishing"), Some(0)), "{other}");
}

#[test]
fn a_target_that_stops_reading_costs_the_others_nothing() {
    let nginx = NginxRtmp::start();
    let target = Gateway::in_process("");
    let origin = Gateway::in_process(&origin_config(&[
        format!("rtmp://{}/live/{{stream}}", nginx.addr()),
        format!("rtmp://{}/live/{{stream}}", target.rtmp),
    ]));
    let _ffmpeg = publish(&origin.rtmp_url("live/s"), Source::default(), None);
    assert!(wait_until(Duration::from_secs(15), || push_to(&origin, "s", nginx.port)
        .is_some_and(|p| p["state"] == "publishing")));
    // nginx stops reading (SIGSTOP): its queue fills (skips), it stalls and is reconnected
    let stop = std::process::Command::new("kill").args(["-STOP", &nginx.pid().to_string()]).status().unwrap();
    assert!(stop.success());
    let before = push_to(&origin, "s", target.rtmp.port()).unwrap()["bytes"].as_u64().unwrap();
    let t0 = Instant::now();
    let stalled = wait_until(Duration::from_secs(15), || {
        push_to(&origin, "s", nginx.port).is_some_and(|p| p["skips"].as_u64() > Some(0) && p["state"] != "publishing")
    });
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = std::process::Command::new("kill").args(["-CONT", &nginx.pid().to_string()]).status();
    assert!(stalled, "{:?}", push_to(&origin, "s", nginx.port));
    let p = push_to(&origin, "s", nginx.port).unwrap();
    assert!(p["last_error"].as_str().is_some_and(|e| e.contains("took no bytes")), "{p}");
    // meanwhile the healthy target kept its bitrate (the publish is ~1 Mbit/s) and skipped nothing
    let other = push_to(&origin, "s", target.rtmp.port()).unwrap();
    let rate = (other["bytes"].as_u64().unwrap() - before) as f64 * 8.0 / elapsed;
    assert!(rate > 200_000.0, "the healthy push moved {rate} bit/s while the other was stuck: {other}");
    assert_eq!((other["skips"].as_u64(), other["state"].as_str()), (Some(0), Some("publishing")), "{other}");
    assert_plays(&target.http_url("/live/s.flv"), "relay-healthy");
}

#[test]
fn targets_that_never_answer_or_close_at_once_back_off() {
    // one accepts and never says a word; one closes every connection at once
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer = TcpListener::bind("127.0.0.1:0").unwrap();
    let closer_addr = closer.local_addr().unwrap();
    let accepts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = accepts.clone();
    std::thread::spawn(move || {
        for s in closer.incoming() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(s);
        }
    });
    let silent_addr: SocketAddr = silent.local_addr().unwrap();
    let origin = Gateway::in_process(&origin_config(&[
        format!("rtmp://{silent_addr}/live/{{stream}}"),
        format!("rtmp://{closer_addr}/live/{{stream}}"),
    ]));
    let t0 = Instant::now();
    let _ffmpeg = publish(&origin.rtmp_url("live/x"), Source::default(), None);
    assert!(wait_live(&origin, "live/x", Duration::from_secs(15)));
    assert!(
        wait_until(Duration::from_secs(10), || push_to(&origin, "x", silent_addr.port())
            .is_some_and(|p| p["last_error"].as_str().is_some_and(|e| e.contains("timeout")))),
        "{:?}",
        push_to(&origin, "x", silent_addr.port())
    );
    std::thread::sleep(Duration::from_secs(10).saturating_sub(t0.elapsed()));
    // backoff 1, 2, 4, 8 s (±20 %): about 4 attempts in 10 s, never one a second
    let n = accepts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=6).contains(&n), "{n} connections in {:?}", t0.elapsed());
    let p = push_to(&origin, "x", closer_addr.port()).unwrap();
    assert_eq!(p["state"], "waiting", "{p}");
    // the publisher never noticed: the origin serves it
    let video = read_back(&origin.http_url("/live/x.flv"), "relay-origin-ok", 2).video;
    assert!(video >= 30);
    drop(silent);
}

#[test]
fn the_admin_api_adds_and_removes_pushes_and_refuses_bad_urls() {
    let target = Gateway::in_process("");
    let origin = Gateway::in_process(&origin_config(&[]));
    let _ffmpeg = publish(&origin.rtmp_url("live/api"), Source::default(), None);
    assert!(wait_live(&origin, "live/api", Duration::from_secs(15)));
    let enc = |u: &str| u.replace(':', "%3A").replace('/', "%2F").replace('{', "%7B").replace('}', "%7D");
    let url = format!("rtmp://{}/live/{{stream}}-copy", target.rtmp);
    let path = format!("/api/streams/live/api/pushes?url={}", enc(&url));
    assert_eq!(admin(&origin, "POST", &path, None).0, 401);
    assert_eq!(admin(&origin, "POST", &path, Some("wrong-token-wrong-token")).0, 401);
    for (bad, why) in [
        ("http://h/live/s", "scheme"),
        ("rtmp://h:99999/live/s", "port"),
        ("rtmp://h/live", "path"),
        ("rtmp:///live/s", "host"),
    ] {
        let (status, body) =
            admin(&origin, "POST", &format!("/api/streams/live/api/pushes?url={}", enc(bad)), Some(TOKEN));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains(why), "{bad}: {body}");
    }
    assert_eq!(
        admin(&origin, "POST", "/api/streams/live/nothere/pushes?url=rtmp%3A%2F%2Fh%2Fa%2Fb", Some(TOKEN)).0,
        404
    );
    let (status, body) = admin(&origin, "POST", &path, Some(TOKEN));
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(created["source"], "api");
    let id = created["id"].as_u64().unwrap();
    assert!(wait_live(&target, "live/api-copy", Duration::from_secs(15)), "the API push did not go live");
    assert_plays(&target.http_url("/live/api-copy.flv"), "relay-api");
    // the key in the URL is masked in what the API shows
    assert!(created["url"].as_str().unwrap().ends_with("/live/ap****"), "{created}");
    assert_eq!(admin(&origin, "DELETE", &format!("/api/streams/live/api/pushes/{id}"), None).0, 401);
    assert_eq!(admin(&origin, "DELETE", &format!("/api/streams/live/api/pushes/{id}"), Some(TOKEN)).0, 200);
    assert!(wait_until(Duration::from_secs(10), || pushes(&origin, "api").is_empty()), "{:?}", pushes(&origin, "api"));
    assert_eq!(admin(&origin, "DELETE", &format!("/api/streams/live/api/pushes/{id}"), Some(TOKEN)).0, 404);
    // the target as a JSON body
    let json_post = |body: &str| {
        let mut s = TcpStream::connect(origin.http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "POST /api/streams/live/api/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        let _ = s.read_to_string(&mut resp);
        resp
    };
    let resp = json_post(&format!(r#"{{"url": "rtmp://{}/live/json-{{stream}}"}}"#, target.rtmp));
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    assert!(wait_live(&target, "live/json-api", Duration::from_secs(15)), "the JSON push did not go live");
    assert!(json_post("{not json").starts_with("HTTP/1.1 400"));
    let one = pushes(&origin, "api").into_iter().next().expect("the JSON push");
    assert_eq!(admin(&origin, "DELETE", &format!("/api/streams/live/api/pushes/{}", one["id"]), Some(TOKEN)).0, 200);
    // the target's stream ends once the push is gone (its own grace applies)
    assert!(wait_until(Duration::from_secs(20), || http_get(target.http, "/api/streams/live/api-copy").status == 404));
}

#[test]
fn the_on_publish_answer_starts_pushes() {
    let target = Gateway::in_process("");
    let answer = format!(
        r#"{{"push": ["rtmp://{}/live/cb-{{stream}}", "ftp://bad"], "record": true, "other": 1}}"#,
        target.rtmp
    );
    let (hook, seen) = answering_hook(answer);
    let rec = scratch_dir("relay-callback-record");
    // recording is off for the app: the answer turns it on for this stream
    let origin =
        Gateway::in_process(&format!("[auth]\non_publish = \"{hook}\"\n[record]\ndir = \"{}\"\n", rec.display()));
    let _ffmpeg = publish(&origin.rtmp_url("live/c"), Source::default(), None);
    assert!(wait_live(&origin, "live/c", Duration::from_secs(15)));
    assert!(seen.lock().unwrap().iter().any(|b| b.contains("\"publish\"")), "{:?}", seen.lock().unwrap());
    assert!(wait_live(&target, "live/cb-c", Duration::from_secs(15)), "the callback's push did not go live");
    assert_plays(&target.http_url("/live/cb-c.flv"), "relay-callback");
    let list = pushes(&origin, "c");
    assert_eq!(list.len(), 1, "the bad URL is refused, the good one pushed once: {list:?}");
    assert_eq!(list[0]["source"], "callback");
    assert_eq!(list[0]["state"], "publishing");
    let v: serde_json::Value = serde_json::from_slice(&http_get(origin.http, "/api/streams/live/c").body).unwrap();
    assert_eq!(
        (v["recording"]["state"].as_str(), v["recording"]["source"].as_str()),
        (Some("recording"), Some("callback")),
        "{v}"
    );
}

/// A CA and a server certificate it signed for 127.0.0.1 (and localhost): (ca, cert, key).
fn ca_and_server_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = ca_signed_cert(dir, "server", "127.0.0.1");
    (dir.join("ca.pem"), cert, key)
}

#[test]
fn rtmps_targets_are_checked_against_the_roots_unless_a_target_opts_out() {
    let dir = scratch_dir("relay-rtmps");
    let (ca, cert, key) = ca_and_server_cert(&dir);
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let target = Gateway::in_process(&format!(
        "[rtmps]\nlisten = \"127.0.0.1:{port}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    ));
    // without the CA: the checked target fails with the certificate's reason; the one that
    // opted out gets the stream
    let origin = Gateway::in_process(&origin_config(&[
        format!("rtmps://127.0.0.1:{port}/live/{{stream}}-checked"),
        format!("rtmps://127.0.0.1:{port}/live/{{stream}}-unchecked?tls_verify=0"),
    ]));
    let _ffmpeg = publish(&origin.rtmp_url("live/t"), Source::default(), None);
    assert!(wait_live(&origin, "live/t", Duration::from_secs(15)));
    assert!(wait_live(&target, "live/t-unchecked", Duration::from_secs(15)), "the tls_verify=0 push did not arrive");
    let failed = wait_until(Duration::from_secs(10), || {
        pushes(&origin, "t").iter().any(|p| {
            p["state"] == "waiting"
                && p["last_error"].as_str().is_some_and(|e| e.contains("certificate: UnknownIssuer"))
        })
    });
    assert!(failed, "an unknown CA must fail the check: {:?}", pushes(&origin, "t"));
    assert!(http_get(target.http, "/api/streams/live/t-checked").status == 404);

    // with relay.ca_file: checked and accepted
    let cfg = format!(
        "{}ca_file = \"{}\"\n",
        origin_config(&[format!("rtmps://127.0.0.1:{port}/live/{{stream}}")]),
        ca.display()
    );
    let origin2 = Gateway::in_process(&cfg);
    let _ffmpeg2 = publish(&origin2.rtmp_url("live/v"), Source::default(), None);
    assert!(
        wait_live(&target, "live/v", Duration::from_secs(15)),
        "the push checked against ca_file did not arrive: {:?}",
        pushes(&origin2, "v")
    );
    assert_plays(&target.http_url("/live/v.flv"), "relay-rtmps");
}
