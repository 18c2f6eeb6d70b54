//! `/api/streams` (JSON) and `/metrics` (Prometheus text).

use std::fmt::Write;
use std::sync::atomic::Ordering;
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use hyper::Response;
use serde_json::json;

use super::routes::full;
use super::Body;
use crate::hub::{Hub, Protocol, Stream};

fn stream_json(s: &Stream) -> serde_json::Value {
    let codec = s.codec();
    let uptime = s.uptime().as_secs_f64();
    let bytes_in = s.stats.bytes_in.load(Ordering::Relaxed);
    let viewers: serde_json::Map<String, serde_json::Value> =
        Protocol::ALL.iter().map(|p| (p.name().to_string(), json!(s.stats.viewers(*p)))).collect();
    let video_frames = s.stats.video_frames_in.load(Ordering::Relaxed);
    json!({
        "app": s.key().app,
        "name": s.key().name,
        "publisher": s.publisher_addr().to_string(),
        "started_unix_ms": s.started().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
        "uptime_s": uptime,
        "video": codec.video.as_ref().map(|v| json!({
            "codec": v.codec_string(),
            "width": v.width,
            "height": v.height,
            "fps": if uptime > 0.0 { (video_frames as f64 / uptime * 100.0).round() / 100.0 } else { 0.0 },
        })),
        "audio": codec.audio.as_ref().map(|a| json!({
            "codec": a.codec_string(),
            "sample_rate": a.sample_rate,
            "channels": a.channels,
        })),
        "bytes_in": bytes_in,
        "bitrate_in_kbps": if uptime > 0.0 { (bytes_in as f64 * 8.0 / uptime / 1000.0).round() } else { 0.0 },
        "bytes_out": s.stats.bytes_out.load(Ordering::Relaxed),
        "viewers": viewers,
        "lag_skips": s.stats.lag_skips.load(Ordering::Relaxed),
        "evictions": s.stats.evictions.load(Ordering::Relaxed),
    })
}

pub(crate) fn streams(hub: &Hub) -> Response<Body> {
    let list: Vec<_> = hub.streams().iter().map(|s| stream_json(s)).collect();
    let body = serde_json::to_vec_pretty(&json!({ "streams": list })).unwrap_or_default();
    full("application/json", "no-cache", Bytes::from(body))
}

pub(crate) fn metrics(hub: &Hub) -> Response<Body> {
    let streams = hub.streams();
    let mut out = String::new();
    let _ = writeln!(out, "# HELP livegate_streams Live streams.\n# TYPE livegate_streams gauge");
    let _ = writeln!(out, "livegate_streams {}", streams.len());
    let _ = writeln!(out, "# HELP livegate_viewers Viewers by protocol.\n# TYPE livegate_viewers gauge");
    for p in Protocol::ALL {
        let n: usize = streams.iter().map(|s| s.stats.viewers(p)).sum();
        let _ = writeln!(out, "livegate_viewers{{protocol=\"{}\"}} {n}", p.name());
    }
    type Counter = (&'static str, &'static str, fn(&Stream) -> u64);
    let counters: [Counter; 4] = [
        ("livegate_stream_bytes_in", "Bytes received from publishers of live streams.", |s| {
            s.stats.bytes_in.load(Ordering::Relaxed)
        }),
        ("livegate_stream_bytes_out", "Bytes sent to viewers of live streams.", |s| {
            s.stats.bytes_out.load(Ordering::Relaxed)
        }),
        ("livegate_stream_lag_skips", "Times a lagging viewer skipped to the latest keyframe.", |s| {
            s.stats.lag_skips.load(Ordering::Relaxed)
        }),
        ("livegate_stream_evictions", "Viewers disconnected for lagging.", |s| {
            s.stats.evictions.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, get) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for s in &streams {
            let _ = writeln!(out, "{name}{{app=\"{}\",stream=\"{}\"}} {}", s.key().app, s.key().name, get(s));
        }
    }
    full("text/plain; version=0.0.4; charset=utf-8", "no-cache", Bytes::from(out))
}
