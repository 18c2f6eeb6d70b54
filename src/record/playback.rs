//! Watching recordings back without remuxing them: a recording is read as the fragments it
//! was written as. A file (still `….mp4.part`, or finalized: its fragment headers then sit
//! in `free` boxes, byte for byte) is scanned once into an index of its fragments
//! ([`FileIndex`], cached, extended as a file being recorded grows); fragments group into
//! segments at keyframes ([`SEGMENT_TARGET`] long or more). From that index:
//!
//! - `GET /recordings/APP/STREAM/FILE.mp4?init` and `?seg=N`: the file's initialization
//!   segment and its segment N (its fragments' bytes, headers restored to `moof`);
//! - `GET /APP/STREAM.m3u8?start=…&end=…`: an HLS playlist over those segments, across
//!   files (a discontinuity between files); VOD when the range is over, EVENT while a file
//!   in it is still being recorded;
//! - `GET /APP/STREAM.m3u8?dvr`: the last `dvr_window_s` of a stream being recorded, as a
//!   live sliding-window playlist;
//! - `GET /APP/STREAM.mp4?start=…&duration=…`: one fragmented MP4 of the range, cut at
//!   keyframes, across files (decode times moved so the files follow each other).
//!
//! Bodies are read one fragment at a time as the client takes them: a request holds at most
//! one fragment (at most ~8 MiB, see `FRAGMENT_MAX_BYTES`) in memory.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use bytes::{Bytes, BytesMut};
use livegate_proto::mux::mp4file::{fragment_times, shift_decode_times, tracks, BoxHeader, FragmentTimes, TrackInfo};

use super::clock::format_time;
use super::list::FileRef;

/// A segment is cut at the first keyframe fragment once it lasts this long (seconds).
pub const SEGMENT_TARGET: f64 = 2.0;
/// ... or once it holds this many bytes (at a keyframe fragment).
const SEGMENT_KEY_BYTES: u64 = 16 << 20;
/// ... and at any fragment past this many bytes (a stream without keyframes).
const SEGMENT_MAX_BYTES: u64 = 32 << 20;
/// The largest `moov`/`moof` read (as the finalizer's bound).
const MAX_HEADER_BOX: u64 = 16 << 20;
/// Fragments indexed per file (48 bytes each).
const MAX_FRAGMENTS: usize = 500_000;
/// Files whose index is kept (~170 KiB for an hour of 1 s fragments).
const CACHED_FILES: usize = 128;
/// Fragments the kept indexes hold in all (~100 bytes each with their segments): ~50 MiB
/// whatever the files (a file of tiny fragments holds up to [`MAX_FRAGMENTS`]).
const CACHED_FRAGMENTS: usize = 500_000;
/// Segments one playlist lists at most: 24 h of 2 s segments. A VOD range is cut after
/// them; a live window or an event keeps the newest.
const MAX_LISTED_SEGMENTS: usize = 43_200;
/// Files one request reads at most (a publisher that reconnects often makes many short
/// ones); the newest are kept.
pub const MAX_FILES_PER_REQUEST: usize = 200;

/// One fragment of a file: where its `moof` starts, its `moof` and `mdat` together, its
/// `moof`'s length, and its times.
#[derive(Debug, Clone, Copy)]
struct Fragment {
    offset: u64,
    size: u64,
    moof_len: u64,
    times: FragmentTimes,
}

/// Fragments `first..end` of a file, played as one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Segment {
    first: usize,
    end: usize,
    /// Seconds, on the file's own timeline.
    pub start: f64,
    pub duration: f64,
    pub bytes: u64,
}

/// What playback knows of one file.
#[derive(Debug, Clone, Default)]
pub struct FileIndex {
    /// `ftyp` + `moov` (the initialization segment, as written).
    pub init: Bytes,
    tracks: Vec<TrackInfo>,
    fragments: Vec<Fragment>,
    segments: Vec<Segment>,
    /// Where scanning stopped: the next box to read (a file being recorded grows past it).
    scanned_to: u64,
    /// The file is finalized (its full `moov` was found): it will not grow.
    finalized: bool,
}

impl FileIndex {
    /// The segments that will not change: all of a finalized file's; a file being recorded's
    /// but the last (more fragments may join it).
    pub fn segments(&self) -> &[Segment] {
        if self.finalized {
            &self.segments
        } else {
            &self.segments[..self.segments.len().saturating_sub(1)]
        }
    }

    /// The file's timeline starts here (seconds): its first fragment.
    pub fn start(&self) -> f64 {
        self.fragments.first().map_or(0.0, |f| f.times.start)
    }

    /// Bytes of segment `n` (its fragments, headers included).
    pub fn segment_len(&self, n: usize) -> Option<u64> {
        let s = self.segments().get(n)?;
        Some(self.fragments[s.first..s.end].iter().map(|f| f.size).sum())
    }

    fn group(&mut self) {
        self.segments.clear();
        for (i, f) in self.fragments.iter().enumerate() {
            let end = f.times.start + f.times.duration;
            match self.segments.last_mut() {
                Some(s)
                    if !((f.times.keyframe && (s.duration >= SEGMENT_TARGET || s.bytes >= SEGMENT_KEY_BYTES))
                        || s.bytes >= SEGMENT_MAX_BYTES) =>
                {
                    s.end = i + 1;
                    s.duration = (end - s.start).max(s.duration);
                    s.bytes += f.size;
                }
                _ => self.segments.push(Segment {
                    first: i,
                    end: i + 1,
                    start: f.times.start,
                    duration: f.times.duration,
                    bytes: f.size,
                }),
            }
        }
    }
}

fn read_at(file: &File, at: u64, len: u64) -> anyhow::Result<Vec<u8>> {
    let mut buf = vec![0u8; usize::try_from(len)?];
    file.read_exact_at(&mut buf, at)?;
    Ok(buf)
}

/// The header of the box at `at` of a file of `len` bytes, if it is whole in the file.
fn header_at(file: &File, at: u64, len: u64) -> anyhow::Result<Option<BoxHeader>> {
    let mut head = [0u8; 16];
    let n = usize::try_from(len.saturating_sub(at).min(16))?;
    file.read_exact_at(&mut head[..n], at)?;
    Ok(BoxHeader::parse(&head[..n]).ok().flatten().filter(|h| at.checked_add(h.size).is_some_and(|end| end <= len)))
}

/// Scans `path` into its index, going on from `prev` (the same file scanned earlier,
/// shorter) when given.
fn scan(path: &Path, prev: Option<&FileIndex>) -> anyhow::Result<FileIndex> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let len = file.metadata()?.len();
    let mut ix = match prev {
        Some(p) if p.scanned_to <= len && !p.init.is_empty() => p.clone(),
        _ => FileIndex::default(),
    };
    let mut pos = ix.scanned_to;
    let mut ftyp: Option<Vec<u8>> = None;
    while pos < len && !ix.finalized && ix.fragments.len() < MAX_FRAGMENTS {
        let Some(h) = header_at(&file, pos, len)? else { break };
        match &h.kind {
            b"ftyp" if ix.init.is_empty() && h.size <= 4096 => ftyp = Some(read_at(&file, pos, h.size)?),
            // the initialization segment's moov (a free box once the file is finalized)
            b"moov" | b"free" if ix.init.is_empty() => {
                let Some(ftyp) = ftyp.take() else { anyhow::bail!("{}: no ftyp first", path.display()) };
                anyhow::ensure!(h.size <= MAX_HEADER_BOX, "{}: moov too large", path.display());
                let mut moov = read_at(&file, pos, h.size)?;
                moov[4..8].copy_from_slice(b"moov");
                ix.tracks = tracks(&moov).with_context(|| format!("{}: moov", path.display()))?;
                let mut init = BytesMut::from(&ftyp[..]);
                init.extend_from_slice(&moov);
                ix.init = init.freeze();
            }
            // the full moov of a finalized file ends it
            b"moov" => ix.finalized = true,
            // a fragment: its header box (free once finalized) and its mdat
            b"moof" | b"free" if !ix.init.is_empty() => {
                let Some(mdat) = header_at(&file, pos + h.size, len)? else { break };
                if &mdat.kind == b"mdat" && h.size <= MAX_HEADER_BOX {
                    let mut moof = read_at(&file, pos, h.size)?;
                    moof[4..8].copy_from_slice(b"moof");
                    if let Ok(times) = fragment_times(&moof, &ix.tracks) {
                        ix.fragments.push(Fragment { offset: pos, size: h.size + mdat.size, moof_len: h.size, times });
                    }
                    pos += h.size + mdat.size;
                    continue;
                }
            }
            _ => {}
        }
        pos += h.size;
    }
    anyhow::ensure!(!ix.init.is_empty(), "{}: no initialization segment", path.display());
    ix.scanned_to = pos;
    ix.group();
    Ok(ix)
}

/// A cached index: the file, its length when scanned, the index.
type Cached = (PathBuf, u64, Arc<FileIndex>);

/// Indexes of recently read files (see the module's description). Cheap to clone.
#[derive(Clone, Default)]
pub struct Playback {
    cache: Arc<Mutex<Vec<Cached>>>,
}

impl Playback {
    /// The index of `path`, and the file open for reading (blocking: call from a blocking
    /// task).
    pub fn open(&self, path: &Path) -> anyhow::Result<(Arc<FileIndex>, Arc<File>)> {
        let file = Arc::new(File::open(path).with_context(|| format!("opening {}", path.display()))?);
        Ok((self.index(path)?, file))
    }

    /// The index of `path` (blocking: call from a blocking task).
    pub fn index(&self, path: &Path) -> anyhow::Result<Arc<FileIndex>> {
        let len = std::fs::metadata(path)?.len();
        let prev = {
            let mut cache = crate::hub::lock(&self.cache);
            match cache.iter().position(|(p, _, _)| p == path) {
                Some(i) => {
                    let entry = cache.remove(i);
                    if entry.1 == len {
                        let ix = entry.2.clone();
                        cache.push(entry);
                        return Ok(ix);
                    }
                    Some(entry.2)
                }
                None => None,
            }
        };
        let ix = Arc::new(scan(path, prev.as_deref())?);
        let mut cache = crate::hub::lock(&self.cache);
        cache.retain(|(p, _, _)| p != path);
        make_room(&mut cache, ix.fragments.len());
        cache.push((path.to_path_buf(), len, ix.clone()));
        Ok(ix)
    }
}

/// Evicts the least recently used indexes until one of `incoming` fragments fits: at most
/// [`CACHED_FILES`] files and [`CACHED_FRAGMENTS`] fragments in all.
fn make_room(cache: &mut Vec<Cached>, incoming: usize) {
    let mut held: usize = cache.iter().map(|c| c.2.fragments.len()).sum();
    while !cache.is_empty() && (cache.len() >= CACHED_FILES || held + incoming > CACHED_FRAGMENTS) {
        held -= cache.remove(0).2.fragments.len();
    }
}

/// Reads fragments `first..end` of an open file one by one: each with its header restored
/// and, when `shift` is not 0, its decode times moved by that many seconds. (The file is
/// opened when the request is planned, so a rename or removal meanwhile does not cut the
/// body short.)
pub fn fragments(
    file: Arc<File>,
    ix: Arc<FileIndex>,
    segments: std::ops::Range<usize>,
    shift: f64,
) -> impl futures_util::Stream<Item = anyhow::Result<Bytes>> + Send {
    let first = ix.segments().get(segments.start).map(|s| s.first);
    let end = segments.end.checked_sub(1).and_then(|e| ix.segments().get(e)).map(|s| s.end);
    let (first, end) = match (first, end) {
        (Some(a), Some(b)) => (a, b),
        _ => (0, 0),
    };
    futures_util::stream::unfold(first, move |i| {
        let (file, ix) = (file.clone(), ix.clone());
        async move {
            if i >= end {
                return None;
            }
            let f = ix.fragments[i];
            let read = tokio::task::spawn_blocking(move || -> anyhow::Result<Bytes> {
                let mut buf = read_at(&file, f.offset, f.size)?;
                buf[4..8].copy_from_slice(b"moof");
                if shift != 0.0 {
                    let moof_len = usize::try_from(f.moof_len)?;
                    shift_decode_times(&mut buf[..moof_len], &ix.tracks, shift)?;
                }
                Ok(Bytes::from(buf))
            })
            .await;
            match read {
                Ok(Ok(bytes)) => Some((Ok(bytes), i + 1)),
                Ok(Err(e)) => Some((Err(e), end)),
                Err(e) => Some((Err(e.into()), end)),
            }
        }
    })
}

/// One file of a stream in a playlist or a range, with its index and the file open.
pub struct Listed {
    pub file: FileRef,
    pub index: Arc<FileIndex>,
    pub open: Arc<File>,
}

impl Listed {
    /// The wall-clock time (Unix seconds) a point of the file's timeline stands for.
    fn wall(&self, t: f64) -> f64 {
        self.file.start_unix.unwrap_or(0.0) + (t - self.index.start())
    }

    /// The wall-clock time (Unix seconds) its segments so far end at.
    pub fn end(&self) -> f64 {
        let last = self.index.segments().last().map_or(self.index.start(), |s| s.start + s.duration);
        self.wall(last)
    }
}

/// The segments of `files` (oldest first) that overlap `from..to` (Unix seconds): (file,
/// segment) pairs, at most `max` (the oldest, or with `newest` the newest).
fn select(files: &[Listed], from: f64, to: f64, max: usize, newest: bool) -> Vec<(usize, usize)> {
    let mut out = std::collections::VecDeque::new();
    for (fi, f) in files.iter().enumerate() {
        for (si, s) in f.index.segments().iter().enumerate() {
            let start = f.wall(s.start);
            if start < to && start + s.duration > from {
                if out.len() >= max {
                    if !newest {
                        return out.into();
                    }
                    out.pop_front();
                }
                out.push_back((fi, si));
            }
        }
    }
    out.into()
}

/// What kind of HLS playlist [`playlist`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A range that is over (`EXT-X-PLAYLIST-TYPE:VOD`, `EXT-X-ENDLIST`).
    Vod,
    /// A range a file still being recorded is in (`EVENT`, no end yet).
    Event,
    /// A live window (`dvr`): segments leave at the front; numbered from `first_seq`, the
    /// number of the first file's first segment, with `discontinuities` before it.
    Window { first_seq: u64, discontinuities: u64 },
}

/// An HLS playlist over `files`' segments in `from..to`; None when none is in it. URIs are
/// `/recordings/APP/STREAM/FILE.mp4?init|seg=N`.
pub fn playlist(app: &str, stream: &str, files: &[Listed], from: f64, to: f64, kind: Kind) -> Option<String> {
    use std::fmt::Write as _;
    let picked = select(files, from, to, MAX_LISTED_SEGMENTS, kind != Kind::Vod);
    let &(first_file, first_seg) = picked.first()?;
    // the longest segment of the files, not only of those listed: it changes less while a
    // window slides (a live playlist's target duration must not change)
    let target =
        files.iter().flat_map(|f| f.index.segments().iter().map(|s| s.duration)).fold(1.0f64, f64::max).ceil() as u64;
    let mut out = String::with_capacity(256 + picked.len() * 96);
    let _ = write!(out, "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n");
    match kind {
        Kind::Vod => out.push_str("#EXT-X-PLAYLIST-TYPE:VOD\n"),
        Kind::Event => out.push_str("#EXT-X-PLAYLIST-TYPE:EVENT\n"),
        Kind::Window { first_seq, discontinuities } => {
            // numbers go on across the files of the window
            let before: u64 = files[..first_file].iter().map(|f| f.index.segments().len() as u64).sum();
            let _ = writeln!(out, "#EXT-X-MEDIA-SEQUENCE:{}", first_seq + before + first_seg as u64);
            let _ = writeln!(out, "#EXT-X-DISCONTINUITY-SEQUENCE:{}", discontinuities + first_file as u64);
        }
    }
    out.push_str("#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut last_file = None;
    for &(fi, si) in &picked {
        let f = &files[fi];
        let s = f.index.segments()[si];
        let base = format!("/recordings/{app}/{stream}/{}", f.file.url_name);
        if last_file != Some(fi) {
            if last_file.is_some() {
                out.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{base}?init\"");
            last_file = Some(fi);
        }
        if f.file.start_unix.is_some() {
            let _ =
                writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", format_time((f.wall(s.start) * 1000.0).round() as i64));
        }
        let _ = write!(out, "#EXTINF:{:.3},\n{base}?seg={si}\n", s.duration);
    }
    if kind == Kind::Vod {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Some(out)
}

/// Segments of one open file, and how far to move their decode times (seconds).
pub type RangePart = (Arc<File>, Arc<FileIndex>, std::ops::Range<usize>, f64);

/// A range of a stream as one fragmented MP4: the files' parts in `from..to`, cut at the
/// segments (keyframes) around it, as (init, then (file, segments, shift) to read with
/// [`fragments`]). Files whose codecs differ from the first's are left out (one MP4 has one
/// set of sample entries).
pub struct RangePlan {
    pub init: Bytes,
    pub parts: Vec<RangePart>,
    /// Bytes of the whole response.
    pub len: u64,
    /// Files left out for their codecs.
    pub left_out: usize,
}

/// The [`RangePlan`] of `files` in `from..to`; None when nothing is in it.
pub fn range(files: &[Listed], from: f64, to: f64) -> Option<RangePlan> {
    let picked = select(files, from, to, usize::MAX, false);
    let &(first_file, _) = picked.first()?;
    let init = files[first_file].index.init.clone();
    let mut plan = RangePlan { len: init.len() as u64, init, parts: Vec::new(), left_out: 0 };
    // the output timeline: each file's first picked segment follows the last one's end
    let mut cursor: Option<f64> = None;
    let mut i = 0;
    while i < picked.len() {
        let fi = picked[i].0;
        let run = picked[i..].iter().take_while(|p| p.0 == fi).count();
        let (a, b) = (picked[i].1, picked[i + run - 1].1 + 1);
        i += run;
        let f = &files[fi];
        if f.index.init != plan.init {
            plan.left_out += 1;
            continue;
        }
        let segs = &f.index.segments()[a..b];
        let start = segs[0].start;
        let shift = match cursor {
            None => -start,
            Some(c) => c - start,
        };
        let last = segs[segs.len() - 1];
        cursor = Some(last.start + last.duration + shift);
        plan.len += (a..b).filter_map(|n| f.index.segment_len(n)).sum::<u64>();
        plan.parts.push((f.open.clone(), f.index.clone(), a..b, shift));
    }
    Some(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frag(start: f64, duration: f64, keyframe: bool, size: u64) -> Fragment {
        Fragment { offset: 0, size, moof_len: 0, times: FragmentTimes { start, duration, keyframe } }
    }

    #[test]
    fn the_index_cache_is_bounded_in_files_and_in_fragments() {
        let ix = |n: usize| {
            let fragments = (0..n).map(|i| frag(i as f64, 1.0, true, 10)).collect();
            Arc::new(FileIndex { fragments, ..FileIndex::default() })
        };
        let mut cache: Vec<Cached> = (0..CACHED_FILES).map(|i| (PathBuf::from(i.to_string()), 0, ix(10))).collect();
        make_room(&mut cache, 10);
        assert_eq!(cache.len(), CACHED_FILES - 1, "one file out");
        assert_eq!(cache[0].0, PathBuf::from("1"), "the least recently used");
        cache.push((PathBuf::from("big"), 0, ix(CACHED_FRAGMENTS - 100)));
        make_room(&mut cache, 200);
        let held: usize = cache.iter().map(|c| c.2.fragments.len()).sum();
        assert!(held + 200 <= CACHED_FRAGMENTS, "{held}");
        make_room(&mut cache, CACHED_FRAGMENTS + 1);
        assert!(cache.is_empty(), "an index larger than the bound is kept alone");
    }

    #[test]
    fn segments_start_at_keyframes_once_long_enough() {
        // 1 s fragments, a keyframe every 2 s; then 3 s of no keyframe; then a huge one
        let fragments = vec![
            frag(0.0, 1.0, true, 10),
            frag(1.0, 1.0, false, 10),
            frag(2.0, 1.0, true, 10),
            frag(3.0, 1.0, false, 10),
            frag(4.0, 1.0, false, 10),
            frag(5.0, 1.0, true, 10),
            frag(6.0, 0.5, false, SEGMENT_MAX_BYTES),
            frag(6.5, 0.5, false, 10),
        ];
        let mut ix = FileIndex { fragments, ..FileIndex::default() };
        ix.group();
        let cuts: Vec<(usize, usize)> = ix.segments.iter().map(|s| (s.first, s.end)).collect();
        assert_eq!(cuts, [(0, 2), (2, 5), (5, 7), (7, 8)]);
        assert_eq!(ix.segments[1].duration, 3.0);
        // a file being recorded keeps its last segment back
        assert_eq!(ix.segments().len(), 3);
        ix.finalized = true;
        assert_eq!(ix.segments().len(), 4);
    }
}
