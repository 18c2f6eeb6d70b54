//! JSON Web Tokens for publish and play: ffmpeg publishes with a token for its stream and
//! is refused with one for another; HTTP-FLV, RTMP play, LL-HLS (every URI of the playlist
//! carries the token) take `?jwt=` or `Authorization: Bearer`; RS256 keys come from a JWKS
//! file or URL (an openssl-made RSA key); forged, expired, not-yet-valid, wrong-audience,
//! `alg: none`, algorithm-confused and oversized tokens, and JWKS URLs that hang, redirect
//! or answer garbage are refused with a reason.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use common::hostile::Rtmp;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const SECRET: &str = "jwt-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

fn hs256(secret: &str, claims: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()).unwrap()).unwrap()
}

fn token(action: &str, path: &str) -> String {
    hs256(SECRET, json!({ "action": action, "path": path, "exp": now() + 600 }))
}

fn get(gw: &Gateway, path: &str, headers: &[&str]) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(gw.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n").unwrap();
    let mut buf = vec![0u8; 16 * 1024];
    let mut got = Vec::new();
    // the whole answer (Connection: close), but of an HTTP-FLV body (which never ends) the
    // start only
    while got.len() < (1 << 20) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
        let flv = String::from_utf8_lossy(&got[..got.len().min(1024)]).to_ascii_lowercase().contains("video/x-flv");
        if flv && got.len() >= 2048 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

fn wait_live_with(gw: &Gateway, key: &str, query: &str) -> bool {
    wait_until(Duration::from_secs(15), || {
        http_request(gw.http, "HEAD", &format!("/{key}.flv?{query}"), 0, Duration::from_secs(2)).status == 200
    })
}

#[test]
fn tokens_publish_and_play_their_stream_only_over_rtmp_http_flv_and_ll_hls() {
    let gw = Gateway::in_process(&format!("[auth]\njwt_secret = \"{SECRET}\"\n"));
    let publish_token = token("publish", "live/demo");
    let _enc = publish(&gw.rtmp_url(&format!("live/demo?jwt={publish_token}")), Source::default(), None);
    let play = token("play", "live/demo");
    assert!(wait_live_with(&gw, "live/demo", &format!("jwt={play}")), "ffmpeg published with its token");

    // a token for another stream, or none, is refused with the reason
    let other = Rtmp::publish(gw.rtmp, "live", &format!("x?jwt={publish_token}")).err().expect("refused");
    assert!(other.contains("NetStream.Publish.Unauthorized") && other.contains("not for this stream"), "{other}");
    let none = Rtmp::publish(gw.rtmp, "live", "y").err().expect("refused");
    assert!(none.contains("NetStream.Publish.Unauthorized") && none.contains("no token"), "{none}");
    let wildcard = token("publish", "live/*");
    assert!(Rtmp::publish(gw.rtmp, "live", &format!("z?jwt={wildcard}")).is_ok(), "live/* covers live/z");

    // play: ?jwt=, a bearer header, RTMP play; a publish token is not a play token
    assert_eq!(get(&gw, &format!("/live/demo.flv?jwt={play}"), &[]).0, 200);
    assert_eq!(get(&gw, "/live/demo.flv", &[&format!("Authorization: Bearer {play}")]).0, 200);
    let (status, body) = get(&gw, "/live/demo.flv", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("WWW-Authenticate: Bearer") || body.contains("www-authenticate: Bearer"), "{body}");
    let (status, body) = get(&gw, &format!("/live/demo.flv?jwt={publish_token}"), &[]);
    assert!(status == 401 && body.contains("not for this action"), "{body}");
    let _viewer = Rtmp::play(gw.rtmp, "live", &format!("demo?jwt={play}"));

    // LL-HLS: every URI the playlist names carries the token; a segment needs it
    let mut playlist = String::new();
    let ok = wait_until(Duration::from_secs(15), || {
        playlist = get(&gw, &format!("/live/demo.m3u8?jwt={play}"), &[]).1;
        playlist.contains("#EXT-X-PART:")
    });
    assert!(ok, "{playlist}");
    let body = playlist.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    let mut uris: Vec<String> =
        body.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    for l in body.lines().filter(|l| l.starts_with('#')) {
        if let Some(rest) = l.split("URI=\"").nth(1) {
            uris.push(rest.split('"').next().unwrap_or("").to_string());
        }
    }
    assert!(uris.len() >= 3, "{body}");
    for uri in &uris {
        assert!(uri.ends_with(&format!("jwt={play}")), "{uri} lacks the token in {body}");
    }
    let segment = uris.iter().find(|u| u.contains(".m4s") || u.contains(".mp4")).expect("a media URI");
    assert_eq!(get(&gw, &format!("/live/{segment}"), &[]).0, 200);
    let bare = segment.split('?').next().unwrap_or("");
    assert_eq!(get(&gw, &format!("/live/{bare}"), &[]).0, 401, "a segment without the token");
    // the token's stream only
    assert_eq!(get(&gw, &format!("/live/other.m3u8?jwt={play}"), &[]).0, 401);
}

#[test]
fn forged_expired_early_wrong_audience_alg_none_and_oversized_tokens_are_refused() {
    let gw = Gateway::in_process(&format!(
        "[auth]\njwt_secret = \"{SECRET}\"\njwt_audience = \"livegate\"\njwt_issuer = \"idp\"\njwt_actions = [\"play\"]\n"
    ));
    // publishing is not covered (jwt_actions): open
    let _enc = publish(&gw.rtmp_url("live/demo"), Source::default(), None);
    let claims = |extra: serde_json::Value| {
        let mut c =
            json!({ "action": "play", "path": "live/demo", "exp": now() + 600, "aud": "livegate", "iss": "idp" });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let good = hs256(SECRET, claims(json!({})));
    assert!(wait_live_with(&gw, "live/demo", &format!("jwt={good}")));
    let t = Instant::now();
    for _ in 0..200 {
        assert_eq!(get(&gw, &format!("/live/demo.m3u8?jwt={good}"), &[]).0 / 100, 2);
    }
    eprintln!("200 playlist requests with a cached token: {:?}", t.elapsed());
    let none = format!(
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.",
        // {"action":"play","path":"live/demo","exp":9999999999,"aud":"livegate","iss":"idp"}
        "eyJhY3Rpb24iOiJwbGF5IiwicGF0aCI6ImxpdmUvZGVtbyIsImV4cCI6OTk5OTk5OTk5OSwiYXVkIjoibGl2ZWdhdGUiLCJpc3MiOiJpZHAifQ"
    );
    let cases = [
        ("forged (another secret)", hs256("another-secret-0123456789abcdef", claims(json!({}))), "InvalidSignature"),
        ("expired", hs256(SECRET, claims(json!({ "exp": now() - 120 }))), "ExpiredSignature"),
        ("not yet valid", hs256(SECRET, claims(json!({ "nbf": now() + 600 }))), "ImmatureSignature"),
        ("wrong audience", hs256(SECRET, claims(json!({ "aud": "someone-else" }))), "InvalidAudience"),
        ("no audience", hs256(SECRET, claims(json!({ "aud": null }))), "aud"),
        ("wrong issuer", hs256(SECRET, claims(json!({ "iss": "evil" }))), "InvalidIssuer"),
        ("no exp", hs256(SECRET, claims(json!({ "exp": null }))), "exp"),
        ("alg none", none, "invalid token"),
        ("oversized", format!("{good}{}", "A".repeat(5000)), "longer than"),
        ("garbage", "a.b.c".to_string(), "invalid token"),
    ];
    for (what, token, why) in cases {
        let (status, body) = get(&gw, &format!("/live/demo.flv?jwt={token}"), &[]);
        assert_eq!(status, 401, "{what}: {body}");
        assert!(body.contains(why), "{what}: {body}");
    }
    assert_eq!(get(&gw, &format!("/live/demo.flv?jwt={good}"), &[]).0, 200);
}

/// Base64url without padding (JWK members).
fn b64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An RSA key made by openssl: its PKCS#1 DER (to sign) and a JWKS with its public half.
fn rsa_key(dir: &std::path::Path) -> (Vec<u8>, String, String) {
    let openssl = require_tool("openssl");
    let pem = dir.join("key.pem");
    let ok = Command::new(&openssl).args(["genrsa", "-traditional", "-out"]).arg(&pem).arg("2048").output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let der =
        Command::new(&openssl).args(["rsa", "-traditional", "-outform", "DER", "-in"]).arg(&pem).output().unwrap();
    assert!(der.status.success());
    let modulus = Command::new(&openssl).args(["rsa", "-noout", "-modulus", "-in"]).arg(&pem).output().unwrap();
    let hex = String::from_utf8_lossy(&modulus.stdout).trim().trim_start_matches("Modulus=").to_string();
    let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
    let public = Command::new(&openssl).args(["rsa", "-pubout", "-in"]).arg(&pem).output().unwrap();
    let jwks =
        json!({ "keys": [{ "kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64url(&n), "e": "AQAB" }] });
    (der.stdout, jwks.to_string(), String::from_utf8_lossy(&public.stdout).into_owned())
}

/// An HTTP server on loopback that answers every request with `answer` (None: never).
fn serve(answer: Option<String>) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            match &answer {
                Some(a) => {
                    let _ = s.write_all(a.as_bytes());
                }
                None => held.push(s),
            }
        }
    });
    addr
}

fn ok_json(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn rs256_tokens_verify_against_a_jwks_file_or_url_and_bad_key_sets_refuse_without_harm() {
    let dir = scratch_dir("jwt-jwks");
    let (der, jwks, public_pem) = rsa_key(&dir);
    let rs256 = |claims: serde_json::Value, kid: Option<&str>| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = kid.map(String::from);
        encode(&h, &claims, &EncodingKey::from_rsa_der(&der)).unwrap()
    };
    let play = rs256(json!({ "action": "*", "path": "live/*", "exp": now() + 600 }), Some("k1"));
    let file = dir.join("jwks.json");
    std::fs::write(&file, &jwks).unwrap();
    let url = serve(Some(ok_json(&jwks)));
    for source in [file.display().to_string(), format!("http://{url}/jwks.json")] {
        let gw = Gateway::in_process(&format!("[auth]\njwt_jwks = \"{source}\"\n"));
        // the key set loads at start (503 until then); then the token is good and the
        // stream not live yet
        assert!(
            wait_until(Duration::from_secs(10), || get(&gw, &format!("/live/rs.flv?jwt={play}"), &[]).0 == 404),
            "{source}: {}",
            get(&gw, &format!("/live/rs.flv?jwt={play}"), &[]).1
        );
        let _enc = publish(&gw.rtmp_url(&format!("live/rs?jwt={play}")), Source::default(), None);
        assert!(wait_live_with(&gw, "live/rs", &format!("jwt={play}")), "{source}");
        assert_eq!(get(&gw, &format!("/live/rs.flv?jwt={play}"), &[]).0, 200, "{source}");
        // an unknown key id; HS256 signed with the RSA public key as its secret (algorithm
        // confusion); HS256 where only the key set is configured
        let unknown = rs256(json!({ "action": "*", "path": "live/*", "exp": now() + 600 }), Some("k2"));
        let confused = hs256(&public_pem, json!({ "action": "*", "path": "live/*", "exp": now() + 600 }));
        for (what, t) in [("unknown kid", unknown), ("algorithm confusion", confused)] {
            let (status, body) = get(&gw, &format!("/live/rs.flv?jwt={t}"), &[]);
            assert!(status == 401 && body.contains("no key"), "{source} {what}: {body}");
        }
    }
    // key sets that hang, redirect forever or are garbage: tokens are refused (no key),
    // the server answers everything else at once
    let hang = serve(None);
    let redirect = serve(Some(
        "HTTP/1.1 302 Found\r\nLocation: /jwks.json\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    ));
    let garbage = serve(Some(ok_json("{\"keys\": \"nope\"}")));
    let huge = serve(Some(ok_json(&format!("{{\"keys\":[],\"x\":\"{}\"}}", "x".repeat(1 << 20)))));
    for (what, addr) in [("hangs", hang), ("redirects", redirect), ("garbage", garbage), ("huge", huge)] {
        let gw = Gateway::in_process(&format!("[auth]\njwt_jwks = \"http://{addr}/jwks.json\"\n"));
        let t = Instant::now();
        assert_eq!(http_get(gw.http, "/healthz").status, 200);
        assert!(t.elapsed() < Duration::from_secs(2), "{what}: {:?}", t.elapsed());
        // while the load is under way: 503; once it failed (a hanging one at its 5 s
        // timeout): 401, no key
        let mut last = String::new();
        let failed = wait_until(Duration::from_secs(9), || {
            let (status, body) = get(&gw, &format!("/live/rs.flv?jwt={play}"), &[]);
            last = body;
            assert!(status == 503 || status == 401, "{what}: {last}");
            status == 401
        });
        assert!(failed && last.contains("no key"), "{what}: {last}");
    }
}
