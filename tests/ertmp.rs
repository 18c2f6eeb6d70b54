//! Enhanced RTMP end to end: a current ffmpeg (9.x, from PyPI imageio-ffmpeg; Debian's
//! 5.1 predates E-RTMP) publishes HEVC, AV1, VP9, Opus, FLAC, AC-3, E-AC-3, MP3 and a
//! multitrack FLV; the gateway serves them over LL-HLS/fMP4, HTTP-FLV and RTMP play, and
//! ffmpeg 9 / ffprobe read them back.

mod common;

use std::time::Duration;

use common::*;

fn api_stream(gw: &Gateway, key: &str) -> serde_json::Value {
    serde_json::from_slice(&http_get(gw.http, &format!("/api/streams/{key}")).body).unwrap_or_default()
}

fn wait_codecs(gw: &Gateway, key: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        last = api_stream(gw, key);
        last["video"]["codec"].is_string() && last["hls"]["last_sequence"].as_u64().unwrap_or(0) >= 2
    });
    assert!(ok, "{key} did not get live with HLS segments: {last}");
    last
}

/// Publishes a fixture FLV (captured from ffmpeg 9) in a loop, as it is (`-c copy`).
fn publish_fixture(gw: &Gateway, file: &str, key: &str) -> Ffmpeg {
    let path = format!("{}/fixtures/ertmp/{file}", env!("CARGO_MANIFEST_DIR"));
    // -map 0: every track (ffmpeg would pick one video stream of a multitrack file)
    ffmpeg9_spawn(&[
        "-re",
        "-stream_loop",
        "-1",
        "-i",
        &path,
        "-map",
        "0",
        "-c",
        "copy",
        "-f",
        "flv",
        &gw.rtmp_url(key),
    ])
}

fn stream_line<'a>(text: &'a str, kind: &str) -> &'a str {
    text.lines().find(|l| l.contains("Stream #0:") && l.contains(kind)).unwrap_or("")
}

#[test]
fn hevc_and_opus_from_ffmpeg_9_play_over_ll_hls_http_flv_and_rtmp() {
    let gw = Gateway::in_process("");
    let url = gw.rtmp_url("live/hevc");
    let _pub = ffmpeg9_publish(
        "320x240",
        25,
        48000,
        "-c:v libx265 -preset ultrafast -x265-params log-level=error:keyint=25:bframes=2 -c:a libopus -b:a 48k",
        &url,
    );
    let api = wait_codecs(&gw, "live/hevc");
    let video = api["video"]["codec"].as_str().unwrap();
    assert!(video.starts_with("hvc1.1.6.L"), "{api}");
    assert_eq!((api["video"]["width"].as_u64(), api["audio"]["codec"].as_str()), (Some(320), Some("opus")), "{api}");
    // Safari's rule: the sample entry is hvc1 (parameter sets in hvcC), never hev1
    let playlist = http_get(gw.http, "/live/hevc.m3u8").text();
    let map = playlist.split("#EXT-X-MAP:URI=\"").nth(1).and_then(|r| r.split('"').next()).expect("EXT-X-MAP");
    let init = http_get(gw.http, &format!("/live/{map}")).body;
    let has = |b: &[u8]| init.windows(4).any(|w| w == b);
    assert!(has(b"hvc1") && has(b"hvcC") && !has(b"hev1") && has(b"Opus") && has(b"dOps"), "init segment boxes");
    for (what, url) in [
        ("LL-HLS", gw.http_url("/live/hevc.m3u8")),
        ("HTTP-FLV", gw.http_url("/live/hevc.flv")),
        ("RTMP", gw.rtmp_url("live/hevc")),
    ] {
        let (ok, text) = ffmpeg9_decode(&url, 3);
        assert!(ok, "{what}: {text}");
        assert!(stream_line(&text, "Video:").contains("hevc"), "{what}: {text}");
        assert!(stream_line(&text, "Audio:").contains("opus"), "{what}: {text}");
        assert!(stream_line(&text, "Video:").contains("320x240"), "{what}: {text}");
        assert!(!text.contains("rror"), "{what} decoded with errors: {text}");
    }
    let metrics = http_get(gw.http, "/metrics").text();
    assert!(metrics.contains("livegate_streams_by_codec{video=\"hevc\",audio=\"opus\"} 1"), "{metrics}");
    // Debian's ffprobe 5.1 reads the fMP4 too (no E-RTMP needed for HLS)
    let probe = ffprobe(&gw.http_url("/live/hevc.m3u8"), &["-show_streams"]);
    let names: Vec<&str> =
        probe["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert_eq!(names, vec!["hevc", "opus"], "{probe}");
}

#[test]
fn av1_in_an_mpegts_app_is_served_as_fmp4() {
    let gw = Gateway::in_process("[hls]\nvariant = \"mpegts\"\n");
    let url = gw.rtmp_url("live/av1");
    let _pub = ffmpeg9_publish(
        "320x240",
        25,
        48000,
        "-c:v libsvtav1 -preset 12 -g 25 -svtav1-params lp=1 -c:a aac -b:a 64k",
        &url,
    );
    let api = wait_codecs(&gw, "live/av1");
    assert!(api["video"]["codec"].as_str().unwrap().starts_with("av01.0."), "{api}");
    assert_eq!(api["hls"]["variant"], "fmp4", "MPEG-TS cannot carry AV1: {api}");
    let playlist = http_get(gw.http, "/live/av1.m3u8").text();
    assert!(
        playlist.contains("#EXT-X-MAP:URI=") && playlist.contains(".m4s") && !playlist.contains(".ts\n"),
        "{playlist}"
    );
    for url in [gw.http_url("/live/av1.m3u8"), gw.http_url("/live/av1.flv"), gw.rtmp_url("live/av1")] {
        let (ok, text) = ffmpeg9_decode(&url, 2);
        assert!(ok && stream_line(&text, "Video:").contains("av1"), "{url}: {text}");
        assert!(stream_line(&text, "Audio:").contains("aac"), "{url}: {text}");
    }
    // an H.264/AAC stream in the same app stays MPEG-TS
    let _h264 = publish(&gw.rtmp_url("live/ts"), Source::default(), None);
    let api = wait_codecs(&gw, "live/ts");
    assert_eq!(api["hls"]["variant"], "mpegts", "{api}");
}

#[test]
fn vp9_flac_ac3_eac3_and_mp3_reach_fmp4_with_their_sample_entries() {
    let gw = Gateway::in_process("");
    let cases = [
        ("vp9_flac.flv", "live/vp9", "vp09.00.", "fLaC", ["vp9", "flac"]),
        ("h264_ac3.flv", "live/ac3", "avc1.", "ac-3", ["h264", "ac3"]),
        ("h264_eac3.flv", "live/eac3", "avc1.", "ec-3", ["h264", "eac3"]),
        ("h264_mp3.flv", "live/mp3", "avc1.", "mp4a.6B", ["h264", "mp3"]),
    ];
    let _pubs: Vec<Ffmpeg> = cases.iter().map(|(file, key, ..)| publish_fixture(&gw, file, key)).collect();
    for (_, key, video, audio, names) in cases {
        let api = wait_codecs(&gw, key);
        assert!(api["video"]["codec"].as_str().unwrap().starts_with(video), "{api}");
        assert_eq!(api["audio"]["codec"].as_str(), Some(audio), "{api}");
        assert_eq!((api["video"]["width"].as_u64(), api["video"]["height"].as_u64()), (Some(160), Some(120)), "{api}");
        let (ok, text) = ffmpeg9_decode(&gw.http_url(&format!("/{key}.m3u8")), 2);
        assert!(ok, "{key}: {text}");
        assert!(stream_line(&text, "Video:").contains(names[0]), "{key}: {text}");
        assert!(stream_line(&text, "Audio:").contains(names[1]), "{key}: {text}");
        assert!(!text.contains("rror"), "{key} decoded with errors: {text}");
        // HTTP-FLV carries the same codecs back out (Enhanced FLV where legacy FLV cannot)
        let (ok, text) = ffmpeg9_decode(&gw.http_url(&format!("/{key}.flv")), 2);
        assert!(ok && stream_line(&text, "Audio:").contains(names[1]), "{key} HTTP-FLV: {text}");
    }
}

#[test]
fn a_multitrack_publish_becomes_an_adaptive_hls_ladder_and_tracks_play_by_number() {
    let gw = Gateway::in_process("");
    let _pub = publish_fixture(&gw, "multi.flv", "live/multi");
    // a player asking in the publish's first seconds (the tracks are known, no segment is
    // out yet) waits for the ladder: it never gets track 0's muxed playlist, which it would keep
    let known = wait_until(Duration::from_secs(15), || {
        api_stream(&gw, "live/multi")["tracks"].as_array().is_some_and(|t| !t.is_empty())
    });
    assert!(known, "{}", api_stream(&gw, "live/multi"));
    let first = http_get(gw.http, "/live/multi.m3u8").text();
    assert!(first.contains("#EXT-X-STREAM-INF:"), "the first answer is the multivariant playlist: {first}");
    wait_codecs(&gw, "live/multi");
    // the multivariant playlist, once both variants have segments
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        text = http_get(gw.http, "/live/multi.m3u8").text();
        text.matches("#EXT-X-STREAM-INF:").count() == 2
    });
    assert!(ok, "{text}");
    let variants: Vec<(&str, &str)> =
        text.lines().zip(text.lines().skip(1)).filter(|(l, _)| l.starts_with("#EXT-X-STREAM-INF:")).collect();
    assert!(variants[0].0.contains("RESOLUTION=320x240") && variants[0].1 == "multi~0.m3u8", "{text}");
    assert!(variants[1].0.contains("RESOLUTION=160x120") && variants[1].1 == "multi~1.m3u8", "{text}");
    for (inf, _) in &variants {
        assert!(inf.contains("CODECS=\"avc1.") && inf.contains(",mp4a.40.2\"") && inf.contains("FRAME-RATE="), "{inf}");
    }
    let bandwidth = |inf: &str| -> u64 {
        inf.split("BANDWIDTH=").nth(1).and_then(|r| r.split(',').next()).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    assert!(bandwidth(variants[0].0) > bandwidth(variants[1].0), "highest first: {text}");
    // each variant's media playlist, reporting the other variant's last part
    for ((_, uri), other) in variants.iter().zip(["multi~1.m3u8", "multi~0.m3u8"]) {
        let media = http_get(gw.http, &format!("/live/{uri}")).text();
        assert!(media.contains("#EXT-X-PART:") && media.contains("#EXT-X-MAP:"), "{uri}: {media}");
        let report = format!("#EXT-X-RENDITION-REPORT:URI=\"{other}\",LAST-MSN=");
        assert!(media.contains(&report) && media.contains(",LAST-PART="), "{uri}: {media}");
    }
    let (ok, text) = ffmpeg9_decode(&gw.http_url("/live/multi.m3u8"), 2);
    assert!(ok && text.contains("320x240") && text.contains("160x120"), "{text}");
    // HTTP-FLV and RTMP play: the first track by default, another with ?track=N
    for (url, size) in [
        (gw.http_url("/live/multi.flv"), "320x240"),
        (gw.http_url("/live/multi.flv?track=1"), "160x120"),
        (gw.rtmp_url("live/multi?track=1"), "160x120"),
    ] {
        let (ok, text) = ffmpeg9_decode(&url, 2);
        assert!(ok && stream_line(&text, "Video:").contains(size), "{url}: {text}");
        assert!(stream_line(&text, "Audio:").contains("aac"), "{url}: {text}");
    }
    let api = api_stream(&gw, "live/multi");
    assert_eq!(api["tracks"][0]["stream"], "live/multi~1", "{api}");
    assert_eq!((api["tracks"][0]["width"].as_u64(), api["tracks"][0]["height"].as_u64()), (Some(160), Some(120)));
    // one encoder, one GOP structure: the variants are cut on the same keyframes
    let aligned = wait_until(Duration::from_secs(20), || api_stream(&gw, "live/multi")["tracks"][0]["aligned"] == true);
    assert!(aligned, "{}", api_stream(&gw, "live/multi"));
}

#[test]
fn a_multitrack_publishs_audio_tracks_become_an_audio_rendition_group() {
    let gw = Gateway::in_process("");
    // two H.264 video tracks, AAC on audio track 0 and Opus on audio track 1
    let _pub = publish_fixture(&gw, "multi_audio.flv", "live/langs");
    wait_codecs(&gw, "live/langs");
    let mut text = String::new();
    let ok = wait_until(Duration::from_secs(30), || {
        text = http_get(gw.http, "/live/langs.m3u8").text();
        text.matches("#EXT-X-STREAM-INF:").count() == 2 && text.matches("#EXT-X-MEDIA:").count() == 2
    });
    assert!(ok, "{text}");
    let media: Vec<&str> = text.lines().filter(|l| l.starts_with("#EXT-X-MEDIA:")).collect();
    // video-only variants and audio-only renditions: the publish's own audio first (default)
    assert!(media[0].contains("TYPE=AUDIO,URI=\"langs~a0.m3u8\",GROUP-ID=\"audio\""), "{text}");
    assert!(media[0].contains("NAME=\"Audio 0\",DEFAULT=YES"), "{text}");
    assert!(media[1].contains("URI=\"langs~a1.m3u8\"") && media[1].contains("NAME=\"Audio 1\""), "{text}");
    assert!(!media[1].contains("DEFAULT=YES"), "{text}");
    for inf in text.lines().filter(|l| l.starts_with("#EXT-X-STREAM-INF:")) {
        assert!(inf.contains("AUDIO=\"audio\"") && inf.contains(",mp4a.40.2,opus\""), "{inf}");
    }
    for (uri, has_video, has_audio) in
        [("langs~0.m3u8", true, false), ("langs~1.m3u8", true, false), ("langs~a0.m3u8", false, true)]
    {
        let (ok, out) = ffmpeg9_decode(&gw.http_url(&format!("/live/{uri}")), 1);
        assert!(ok && out.contains("Video:") == has_video && out.contains("Audio:") == has_audio, "{uri}: {out}");
    }
    // the audio rendition's playlist: audio-only fMP4 parts, reporting the variants
    let audio = http_get(gw.http, "/live/langs~a1.m3u8").text();
    assert!(audio.contains("#EXT-X-PART:") && audio.contains("#EXT-X-MAP:"), "{audio}");
    for other in ["langs~0.m3u8", "langs~1.m3u8", "langs~a0.m3u8"] {
        assert!(audio.contains(&format!("#EXT-X-RENDITION-REPORT:URI=\"{other}\"")), "{audio}");
    }
    let variant = http_get(gw.http, "/live/langs~1.m3u8").text();
    assert!(variant.contains("#EXT-X-RENDITION-REPORT:URI=\"langs~a1.m3u8\""), "{variant}");
    let (ok, out) = ffmpeg9_decode(&gw.http_url("/live/langs~a1.m3u8"), 2);
    assert!(ok && stream_line(&out, "Audio:").contains("opus") && !out.contains("Video:"), "{out}");
    // players that read the group see both audio tracks next to both videos
    let (ok, out) = ffmpeg9_decode(&gw.http_url("/live/langs.m3u8"), 2);
    assert!(ok && out.contains("opus") && out.contains("aac") && out.contains("160x120"), "{out}");
    let api = api_stream(&gw, "live/langs");
    assert_eq!(api["audio_tracks"][0]["stream"], "live/langs~a1", "{api}");
    assert_eq!(api["audio_tracks"][0]["codec"], "opus", "{api}");
    assert_eq!(api["tracks"][0]["stream"], "live/langs~1", "{api}");
}

/// An RTMP viewer that announces `codecs` in connect's `fourCcList` (None: no list) and
/// plays `live/NAME`: what the server answered.
fn play_announcing(gw: &Gateway, name: &str, codecs: Option<&[&str]>) -> String {
    use livegate::rtmp::amf0::Amf0Value;
    use std::io::Write;
    let mut c = hostile::Rtmp::connect(gw.rtmp);
    let extra = codecs
        .map(|l| {
            vec![("fourCcList".to_string(), Amf0Value::StrictArray(l.iter().map(|c| Amf0Value::string(*c)).collect()))]
        })
        .unwrap_or_default();
    let mut out = c.client.connect_with("live", extra);
    out.extend(c.client.create_stream());
    out.extend(c.client.play(1, name));
    c.s.write_all(&out).unwrap();
    c.wait_for(&[b"NetStream.Play.Start", b"NetStream.Play.Failed"], Duration::from_secs(10));
    String::from_utf8_lossy(&c.seen).into_owned()
}

#[test]
fn rtmp_play_follows_what_the_client_announced_in_connect() {
    let gw = Gateway::in_process("[rtmp]\nonly_announced_codecs = true\n");
    let _pub = publish_fixture(&gw, "hevc_opus.flv", "live/announce");
    wait_codecs(&gw, "live/announce");
    let refused = play_announcing(&gw, "announce", Some(&["avc1", "mp4a"]));
    assert!(
        refused.contains("NetStream.Play.Failed") && refused.contains("is hvc1, which this client did not announce"),
        "{refused}"
    );
    let silent = play_announcing(&gw, "announce", None);
    assert!(silent.contains("NetStream.Play.Failed") && silent.contains("announced nothing"), "{silent}");
    for list in [&["hvc1", "Opus"][..], &["*"]] {
        let ok = play_announcing(&gw, "announce", Some(list));
        assert!(ok.contains("NetStream.Play.Start"), "{list:?}: {ok}");
    }
}

#[test]
fn hostile_enhanced_rtmp_drops_only_the_offending_messages() {
    let gw = Gateway::in_process("");
    let _good = publish_fixture(&gw, "hevc_opus.flv", "live/good");
    wait_codecs(&gw, "live/good");
    let mut bad = hostile::Rtmp::publish(gw.rtmp, "live", "bad").expect("publish");
    let send = |c: &mut hostile::Rtmp, ts: u32, body: &[u8]| c.message(6, 9, 1, ts, body).expect("send");
    for ts in 0..100u32 {
        send(&mut bad, ts * 40, b"\x91vvc1\x00\x00\x00\x00\x00\x00\x01\x26"); // a codec livegate does not carry
    }
    send(&mut bad, 4000, b"\x90hvc1\x01\x02"); // a sequence start that does not parse
    send(&mut bad, 4040, b"\x91hv"); // a truncated ex-header
    let mut modex = vec![0x97u8];
    modex.extend(std::iter::repeat_n([0u8, 0, 7], 50).flatten());
    send(&mut bad, 4080, &modex); // a ModEx chain that never ends
    let mut many = vec![0x96u8, 0x13];
    many.extend_from_slice(b"avc1");
    for t in 0..=254u8 {
        many.extend_from_slice(&[t, 0, 0, 0]);
    }
    send(&mut bad, 4120, &many); // 255 tracks in one message
                                 // 40 multitrack sequence starts for 40 track ids: at most 7 more track streams
    let multi = std::fs::read(format!("{}/fixtures/ertmp/multi.flv", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let tags = hostile::parse_flv(&multi);
    let start = tags.iter().find(|t| t.kind == 9 && t.body.starts_with(&[0x96, 0x00])).expect("a track sequence start");
    for track in 1..=40u8 {
        let mut body = start.body.to_vec();
        body[6] = track;
        send(&mut bad, 4160, &body);
    }
    // and 40 audio track ids (the Opus track's multitrack sequence start): at most 7 too
    let multi = std::fs::read(format!("{}/fixtures/ertmp/multi_audio.flv", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let tags = hostile::parse_flv(&multi);
    let start =
        tags.iter().find(|t| t.kind == 8 && t.body.starts_with(&[0x95, 0x00])).expect("an audio track sequence start");
    for track in 1..=40u8 {
        let mut body = start.body.to_vec();
        body[6] = track;
        bad.message(4, 8, 1, 4200, &body).expect("send"); // an audio message
    }
    let counted = wait_until(Duration::from_secs(10), || {
        let m = http_get(gw.http, "/metrics").text();
        let n = |reason: &str| {
            m.lines()
                .find(|l| l.starts_with(&format!("livegate_media_dropped_total{{reason=\"{reason}\"}}")))
                .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        n("unsupported_codec") >= 100 && n("malformed") >= 4
    });
    assert!(counted, "{}", http_get(gw.http, "/metrics").text());
    // the connection is still up (dropped messages, not a closed publish) and the other stream plays
    let api = api_stream(&gw, "live/bad");
    assert_eq!(api["name"], "bad");
    let tracks = api["tracks"].as_array().map_or(0, Vec::len);
    assert!(tracks <= 7, "{tracks} track streams for one publish: {api}");
    // the audio track ids came last: once all are read, at most 7 got a stream
    let audio = |api: &serde_json::Value| api["audio_tracks"].as_array().map_or(0, Vec::len);
    assert!(
        wait_until(Duration::from_secs(10), || audio(&api_stream(&gw, "live/bad")) == 7),
        "{}",
        api_stream(&gw, "live/bad")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(audio(&api_stream(&gw, "live/bad")), 7, "{}", api_stream(&gw, "live/bad"));
    let (ok, text) = ffmpeg9_decode(&gw.http_url("/live/good.flv"), 2);
    assert!(ok && stream_line(&text, "Video:").contains("hevc"), "{text}");
}
