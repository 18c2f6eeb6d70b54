//! Scenario results: JSON values, the table and the PASS/MISS lines.

use serde_json::json;

use crate::Args;

pub(crate) struct ScenarioResult {
    pub(crate) name: String,
    pub(crate) json: serde_json::Value,
    /// (target text, pass, hard)
    pub(crate) checks: Vec<(String, bool, bool)>,
    pub(crate) row: Vec<String>,
}

pub(crate) fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// The server core should be busy with the server only (plus softirq work it causes).
pub(crate) fn warn_noise(kind: &str, other: f64) {
    if other > 5.0 {
        eprintln!(
            "warning: {kind}: {other:.0} % of the server core went to other processes; the machine was not quiet"
        );
    }
}

pub(crate) fn round1(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!((x * 10.0).round() / 10.0)
    } else {
        serde_json::Value::Null
    }
}

pub(crate) fn round2(x: f64) -> serde_json::Value {
    if x.is_finite() {
        json!((x * 100.0).round() / 100.0)
    } else {
        serde_json::Value::Null
    }
}

pub(crate) fn print_table(args: &Args, results: &[ScenarioResult]) {
    let head = [
        "scenario",
        "pub → viewers",
        "server CPU",
        "RSS / peak MiB",
        "KiB per viewer",
        "kept up",
        "1st key p50/p95 ms",
        "core busy srv/cli %",
    ];
    println!();
    println!("| {} |", head.join(" | "));
    println!("|{}|", head.iter().map(|_| "---").collect::<Vec<_>>().join("|"));
    for r in results {
        println!("| {} |", r.row.join(" | "));
    }
    for r in results.iter().filter(|r| r.name == "hls") {
        println!(
            "\nHLS: first segment listed {} ms after publish start; segments listed {} ms (median) / {} ms (max) after their media end",
            r.json["hls_first_segment_ms"], r.json["hls_segment_late_p50_ms"], r.json["hls_segment_late_max_ms"]
        );
    }
    println!(
        "\nsteady window {} s; server on core {}, client + ffmpeg on core {}",
        args.steady, args.server_core, args.client_core
    );
    for r in results {
        for (text, ok, hard) in &r.checks {
            let verdict = match (ok, hard) {
                (true, _) => "PASS",
                (false, true) => "MISS",
                (false, false) => "miss (aim)",
            };
            println!("{verdict:>10}  {text}");
        }
    }
}
