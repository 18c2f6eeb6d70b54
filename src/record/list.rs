//! What is on disk: the listing of recordings (`/api/recordings`) and the path of one
//! recording by its URL (`/recordings/APP/STREAM/FILE.mp4`). A file's name carries its
//! stream and start (`STREAM-YYYYMMDD-HHMMSS[-N].mp4`), its `moov` its duration and codecs:
//! no database.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use livegate_proto::mux::mp4file::{note, summary, BoxHeader};
use serde::Serialize;

/// Files listed at most per request.
pub const MAX_LISTED: usize = 10_000;
/// The largest `moov` read for a listing.
const MAX_MOOV: u64 = 64 << 20;

/// One recording.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Listed {
    pub app: String,
    pub stream: String,
    pub file: String,
    /// Where to get it (finalized files only).
    pub url: Option<String>,
    /// Start, UTC, RFC 3339 (from the file's name).
    pub start: Option<String>,
    pub duration_s: Option<f64>,
    pub size: u64,
    pub codecs: Vec<String>,
    /// Finalized (`.mp4`), or still being recorded (`.mp4.part`).
    pub complete: bool,
    /// Holes in its timeline: where the recorder fell behind the stream (a disk slower than
    /// the stream) and went on from a later keyframe.
    pub gaps: Vec<GapJson>,
}

/// A gap in a recording: where (seconds from its start) and how long.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GapJson {
    pub at_s: f64,
    pub duration_s: f64,
}

/// A recording file of one stream, as its directory lists it.
#[derive(Debug, Clone)]
pub struct FileRef {
    pub path: PathBuf,
    /// Its name (`….mp4` or `….mp4.part`).
    pub name: String,
    /// Its name as a URL gives it: always `….mp4` (a file still being recorded is found
    /// under its final name too).
    pub url_name: String,
    /// Start, UTC, RFC 3339 (from the name).
    pub start: Option<String>,
    pub start_unix: Option<f64>,
    pub complete: bool,
}

/// The recordings of one stream directory (`DIR/APP/STREAM`), oldest first, at most
/// [`MAX_LISTED`].
pub fn stream_files(stream_dir: &Path, stream: &str) -> Vec<FileRef> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(stream_dir) else { return out };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let complete = name.ends_with(".mp4");
        if !complete && !name.ends_with(".mp4.part") {
            continue;
        }
        let start = start_of(&name, stream);
        out.push(FileRef {
            path: e.path(),
            url_name: name.trim_end_matches(".part").to_string(),
            start_unix: start.as_deref().and_then(super::clock::parse_time),
            start,
            name,
            complete,
        });
    }
    // files that started within one second: STEM.mp4, STEM-1.mp4, STEM-2.mp4, ...
    let counter = |f: &FileRef| -> u32 {
        let stem = f.url_name.trim_end_matches(".mp4");
        let after = stem.strip_prefix(stream).and_then(|r| r.get(17..)).unwrap_or("");
        after.strip_prefix('-').and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    out.sort_by(|a, b| a.start.cmp(&b.start).then(counter(a).cmp(&counter(b))).then(a.name.cmp(&b.name)));
    // the newest
    let extra = out.len().saturating_sub(MAX_LISTED);
    out.drain(..extra);
    out
}

/// The recordings under `dirs` (of `app`/`stream` when given), newest first, at most
/// [`MAX_LISTED`].
pub fn list(dirs: &[PathBuf], app: Option<&str>, stream: Option<&str>) -> Vec<Listed> {
    let mut out = Vec::new();
    for dir in dirs {
        for app_dir in subdirs(dir, crate::hub::valid_name).filter(|(n, _)| app.is_none_or(|a| a == n)) {
            let streams = subdirs(&app_dir.1, crate::hub::valid_stream_name);
            for stream_dir in streams.filter(|(n, _)| stream.is_none_or(|s| s == n)) {
                for f in stream_files(&stream_dir.1, &stream_dir.0) {
                    if out.len() >= MAX_LISTED {
                        break;
                    }
                    let Ok(meta) = std::fs::metadata(&f.path) else { continue };
                    let (duration_s, codecs, gaps) = match f.complete.then(|| read_summary(&f.path)).flatten() {
                        Some((d, c, g)) => (Some((d * 1000.0).round() / 1000.0), c, g),
                        None => (None, Vec::new(), Vec::new()),
                    };
                    out.push(Listed {
                        url: f.complete.then(|| format!("/recordings/{}/{}/{}", app_dir.0, stream_dir.0, f.name)),
                        start: f.start,
                        app: app_dir.0.clone(),
                        stream: stream_dir.0.clone(),
                        file: f.name,
                        duration_s,
                        size: meta.len(),
                        codecs,
                        complete: f.complete,
                        gaps,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| b.start.cmp(&a.start).then(b.file.cmp(&a.file)));
    out.dedup_by(|a, b| a.app == b.app && a.stream == b.stream && a.file == b.file);
    out
}

/// The directories in `dir` whose names are `valid` (app or stream names).
fn subdirs(dir: &Path, valid: fn(&str) -> bool) -> impl Iterator<Item = (String, PathBuf)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(move |e| {
            let n = e.file_name().to_string_lossy().into_owned();
            valid(&n).then(|| (n, e.path()))
        })
}

/// `STREAM-YYYYMMDD-HHMMSS[-N].mp4[.part]` → `YYYY-MM-DDTHH:MM:SSZ`.
fn start_of(file: &str, stream: &str) -> Option<String> {
    let rest = file.strip_prefix(stream)?.strip_prefix('-')?;
    let (date, rest) = rest.split_once('-')?;
    let time = rest.get(..6)?;
    if date.len() != 8 || !date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(format!("{}-{}-{}T{}:{}:{}Z", &date[..4], &date[4..6], &date[6..], &time[..2], &time[2..4], &time[4..]))
}

/// Duration and codecs from a finalized file's `moov` (its last box).
fn read_summary(path: &Path) -> Option<(f64, Vec<String>, Vec<GapJson>)> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    let mut pos = 0u64;
    let mut head = [0u8; 16];
    while pos < len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        let n = usize::try_from((len - pos).min(16)).ok()?;
        f.read_exact(&mut head[..n]).ok()?;
        let h = BoxHeader::parse(&head[..n]).ok()??;
        if &h.kind == b"moov" {
            if h.size > MAX_MOOV || pos + h.size > len {
                return None;
            }
            let mut buf = vec![0u8; usize::try_from(h.size).ok()?];
            f.seek(SeekFrom::Start(pos)).ok()?;
            f.read_exact(&mut buf).ok()?;
            let (duration, codecs) = summary(&buf).ok()?;
            let gaps = note(&buf)
                .and_then(|n| serde_json::from_slice::<super::file::Note>(n).ok())
                .map(|n| n.gaps.iter().map(|g| GapJson { at_s: g[0], duration_s: g[1] }).collect())
                .unwrap_or_default();
            return Some((duration, codecs, gaps));
        }
        pos = pos.checked_add(h.size)?;
    }
    None
}

/// The file a recording URL names (`APP`, `STREAM`, `FILE.mp4`) under `dir`; None for
/// names that are not a recording's (no path tricks: each part is checked on its own).
pub fn path_of(dir: &Path, app: &str, stream: &str, file: &str) -> Option<PathBuf> {
    let stem = file.strip_suffix(".mp4")?;
    let ok = crate::hub::valid_name(app)
        && crate::hub::valid_stream_name(stream)
        && !stem.is_empty()
        && stem.len() <= 200
        && stem.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.~".contains(&b))
        && !stem.starts_with('.');
    ok.then(|| dir.join(app).join(stream).join(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_give_the_start_and_urls_give_no_way_out() {
        assert_eq!(start_of("demo-20261207-125100.mp4", "demo").as_deref(), Some("2026-12-07T12:51:00Z"));
        assert_eq!(start_of("demo-20261207-125100-2.mp4.part", "demo").as_deref(), Some("2026-12-07T12:51:00Z"));
        assert_eq!(start_of("other.mp4", "demo"), None);
        let d = Path::new("/rec");
        assert_eq!(path_of(d, "live", "demo", "demo-1.mp4"), Some(PathBuf::from("/rec/live/demo/demo-1.mp4")));
        assert_eq!(path_of(d, "live", "demo~1", "demo~1-2.mp4"), Some(PathBuf::from("/rec/live/demo~1/demo~1-2.mp4")));
        for (app, stream, file) in [
            ("..", "demo", "a.mp4"),
            ("live", "..", "a.mp4"),
            ("live", "..~1", "a.mp4"),
            ("live~1", "demo", "a.mp4"),
            ("live", "demo", "../x.mp4"),
            ("live", "demo", ".hidden.mp4"),
            ("live", "demo", "a.mp4.part"),
            ("live", "demo", "a/b.mp4"),
            ("live", "demo", ".mp4"),
        ] {
            assert_eq!(path_of(d, app, stream, file), None, "{app}/{stream}/{file}");
        }
    }
}
