//! Names and languages of a multitrack publish's audio tracks, from its `onMetaData`:
//! Enhanced RTMP v2's `audioTrackIdInfoMap` (track id → properties) for tracks 1, 2, …
//! and the top level for track 0. The spec leaves the property names open; `name`
//! (or `title`, `label`) and `language` (or `lang`) are read.

use crate::rtmp::amf0::{self, Amf0Value};

/// A track's label, safe to put in a playlist attribute.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrackLabel {
    pub track: u8,
    pub name: Option<String>,
    /// A BCP 47 tag (only its characters are checked).
    pub language: Option<String>,
}

/// Longest name kept (longer ones are cut at a character boundary).
const MAX_NAME: usize = 64;
/// Tracks described at most (E-RTMP allows 256; a ladder serves far fewer).
const MAX_LABELS: usize = 16;

/// The labels of the audio tracks `metadata` (an `"onMetaData", object` AMF0 payload)
/// describes, by track id; empty when it describes none or does not decode.
pub fn audio_track_labels(metadata: &[u8]) -> Vec<TrackLabel> {
    let Ok(values) = amf0::decode_all(metadata) else { return Vec::new() };
    let Some(top) = values.iter().find(|v| v.properties().is_some()) else { return Vec::new() };
    let mut out = Vec::new();
    if let Some(label) = label(0, top) {
        out.push(label);
    }
    let Some(map) = top.get("audioTrackIdInfoMap").and_then(Amf0Value::properties) else { return out };
    for (id, props) in map {
        let Ok(track) = id.trim().parse::<u8>() else { continue };
        if track == 0 || out.iter().any(|l| l.track == track) {
            continue;
        }
        if let Some(l) = label(track, props) {
            out.push(l);
        }
        if out.len() >= MAX_LABELS {
            break;
        }
    }
    out
}

fn label(track: u8, props: &Amf0Value) -> Option<TrackLabel> {
    let text = |keys: &[&str]| keys.iter().find_map(|k| props.get(k).and_then(Amf0Value::as_str));
    let name = text(&["name", "title", "label"]).map(clean_name).filter(|n| !n.is_empty());
    let language = text(&["language", "lang"])
        .map(str::trim)
        .filter(|l| (2..=35).contains(&l.len()) && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        .map(str::to_string);
    (name.is_some() || language.is_some()).then_some(TrackLabel { track, name, language })
}

/// A name without the characters a quoted playlist attribute cannot hold.
fn clean_name(s: &str) -> String {
    let mut out = String::new();
    for c in s.trim().chars().filter(|c| !c.is_control() && *c != '"') {
        if out.len() + c.len_utf8() > MAX_NAME {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(top: Vec<(&str, Amf0Value)>) -> bytes::Bytes {
        amf0::encode_all(&[
            Amf0Value::string("onMetaData"),
            Amf0Value::EcmaArray(top.into_iter().map(|(k, v)| (k.to_string(), v)).collect()),
        ])
    }

    #[test]
    fn labels_come_from_the_top_level_and_the_audio_track_map() {
        let map = Amf0Value::object([
            ("1", Amf0Value::object([("language", Amf0Value::string("fr")), ("name", Amf0Value::string("Français"))])),
            ("2", Amf0Value::object([("title", Amf0Value::string("Commentary \"live\"\n"))])),
            ("x", Amf0Value::object([("name", Amf0Value::string("ignored"))])),
            ("3", Amf0Value::object([("language", Amf0Value::string("not a tag!"))])),
        ]);
        let m = metadata(vec![
            ("language", Amf0Value::string("en")),
            ("audiocodecid", Amf0Value::Number(10.0)),
            ("audioTrackIdInfoMap", map),
        ]);
        assert_eq!(
            audio_track_labels(&m),
            vec![
                TrackLabel { track: 0, name: None, language: Some("en".into()) },
                TrackLabel { track: 1, name: Some("Français".into()), language: Some("fr".into()) },
                TrackLabel { track: 2, name: Some("Commentary live".into()), language: None },
            ]
        );
    }

    #[test]
    fn plain_or_broken_metadata_has_no_labels() {
        assert!(audio_track_labels(&metadata(vec![("width", Amf0Value::Number(320.0))])).is_empty());
        assert!(audio_track_labels(b"\x02\x00\x0aonMetaData\x08\x00").is_empty());
        assert!(audio_track_labels(b"").is_empty());
        let long = "é".repeat(100);
        let m = metadata(vec![("name", Amf0Value::string(long))]);
        assert_eq!(audio_track_labels(&m)[0].name.as_ref().map(|n| n.len()), Some(64));
    }
}
