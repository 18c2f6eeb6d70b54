//! `/api/openapi.json` is true: schemathesis (PyPI; scripts/test.sh installs it into
//! target/py-tools and names it in `LIVEGATE_SCHEMATHESIS`) fuzzes every operation of the
//! running server from the description: no 5xx, no status, content type or body outside
//! it, no admin operation that works without the token. A stream is live, recorded and
//! pushed meanwhile, so the real stream, push and recording objects are checked too (the
//! description's examples name it: its admin operations run on it, kick included).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

const TOKEN: &str = "openapi-admin-token-0123456789";

fn schemathesis() -> PathBuf {
    let dir = std::env::var_os("LIVEGATE_SCHEMATHESIS").map(PathBuf::from).filter(|p| p.join("schemathesis").is_dir());
    dir.expect(
        "schemathesis is not installed: run the README's test command (scripts/test.sh), which fetches it from PyPI \
         into target/py-tools and sets LIVEGATE_SCHEMATHESIS",
    )
}

#[test]
fn the_api_keeps_to_its_openapi_description_under_schemathesis() {
    let tools = schemathesis();
    let dir = scratch_dir("openapi-record");
    let gw = Gateway::in_process(&format!(
        "[admin]\ntoken = \"{TOKEN}\"\n[record]\ndir = \"{}\"\n[apps.keyed.auth]\nplay_keys = [\"k\"]\n",
        dir.display()
    ));
    let _demo = publish(&gw.rtmp_url("live/demo"), Source { width: 320, height: 240, ..Source::default() }, None);
    assert!(wait_live(&gw, "live/demo", Duration::from_secs(10)));
    assert_eq!(admin(&gw, "POST", "/api/streams/live/demo/record", Some(TOKEN)).0, 201);
    let push = "/api/streams/live/demo/pushes?url=rtmp%3A%2F%2F127.0.0.1%3A9%2Fapp%2Fkey";
    assert_eq!(admin(&gw, "POST", push, Some(TOKEN)).0, 201);
    std::thread::sleep(Duration::from_secs(3));
    let spec = http_get(gw.http, "/api/openapi.json");
    assert_eq!(spec.status, 200);
    let doc: serde_json::Value = serde_json::from_slice(&spec.body).expect("the description is JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let out = Command::new("python3")
        .args(["-m", "schemathesis.cli", "run", &gw.http_url("/api/openapi.json")])
        .args(["--url", &gw.http_url("")])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,ignored_auth"])
        .args(["--exclude-path", "/api/events"])
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", "40", "--request-timeout", "10", "--generation-deterministic"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .env("PYTHONPATH", &tools)
        // (its cache directory, .schemathesis/, goes there, not into the checkout)
        .current_dir(scratch_dir("schemathesis"))
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .expect("run schemathesis");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "schemathesis found the API outside its description (above)");
    // it exercised the operations (not a run that tested nothing): "N generated, N passed"
    let generated = report
        .lines()
        .find(|l| l.contains(" generated, "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    println!("schemathesis generated {generated} cases");
    assert!(generated >= 200, "schemathesis generated only {generated} cases");
    assert!(report.contains("Tested: 15"), "every operation but /api/events was tested");
}
