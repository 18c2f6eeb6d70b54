//! Recordings: a fragmented MP4 written as it goes (the [`super::Fmp4Muxer`]'s
//! initialization segment, then one `moof` + `mdat` per fragment) becomes a regular MP4 that
//! every player and editor seeks in, in place: the fragments' media stays where it is, the
//! leading `moov` and every `moof` become `free` boxes, and a full `moov` with sample tables
//! (`stts`, `ctts`, `stss`, `stsc`, `stsz`, `co64`) pointing into the `mdat`s is appended
//! (the "hybrid MP4" OBS writes). A crash loses at most the fragment being written: the
//! file's own boxes are its index, so recovery walks them, cuts a torn tail and finalizes.
//!
//! Sans-IO: the I/O side walks top-level boxes ([`BoxHeader::parse`]), hands this module
//! the `moov` and each `moof` with its file offset ([`Index`]), and writes what
//! [`Index::finish`] returns.

use bytes::{BufMut, BytesMut};
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum Mp4Error {
    #[error("malformed {0} box")]
    Malformed(&'static str),
    #[error("fragment for track {0}, which the moov does not have")]
    UnknownTrack(u32),
    #[error("more than {0} samples in one file")]
    TooManySamples(usize),
}

/// A box header: type, size (header included; 0 = to the end of the file is not written by
/// livegate and is refused) and header length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoxHeader {
    pub kind: [u8; 4],
    pub size: u64,
    pub header_len: u64,
}

impl BoxHeader {
    /// Parses the header at the start of `buf` (at least 16 bytes, or what is left of the
    /// file); `None` when `buf` is too short to tell.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, Mp4Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let size32 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let kind = [buf[4], buf[5], buf[6], buf[7]];
        let (size, header_len) = match size32 {
            0 => return Err(Mp4Error::Malformed("a box of size 0 (to the end of the file)")),
            1 => {
                if buf.len() < 16 {
                    return Ok(None);
                }
                let mut s = [0u8; 8];
                s.copy_from_slice(&buf[8..16]);
                (u64::from_be_bytes(s), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header_len {
            return Err(Mp4Error::Malformed("a box smaller than its header"));
        }
        Ok(Some(Self { kind, size, header_len }))
    }
}

/// A child box: its type, the whole box, its body.
type Child<'a> = ([u8; 4], &'a [u8], &'a [u8]);

/// The children of a container box's body.
fn children(mut body: &[u8]) -> impl Iterator<Item = Result<Child<'_>, Mp4Error>> {
    std::iter::from_fn(move || {
        if body.is_empty() {
            return None;
        }
        let h = match BoxHeader::parse(body) {
            Ok(Some(h)) => h,
            Ok(None) => return Some(Err(Mp4Error::Malformed("child header"))),
            Err(e) => return Some(Err(e)),
        };
        let Some(size) = usize::try_from(h.size).ok().filter(|s| *s <= body.len()) else {
            body = &[];
            return Some(Err(Mp4Error::Malformed("child size")));
        };
        let (this, rest) = body.split_at(size);
        body = rest;
        Some(Ok((h.kind, this, &this[h.header_len as usize..])))
    })
}

/// The first child of type `kind`: the whole box and its body.
fn child<'a>(body: &'a [u8], kind: &[u8; 4]) -> Result<Option<Child<'a>>, Mp4Error> {
    for c in children(body) {
        let c = c?;
        if &c.0 == kind {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

fn be32(b: &[u8], at: usize) -> Result<u32, Mp4Error> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])).ok_or(Mp4Error::Malformed("field"))
}

fn be64(b: &[u8], at: usize) -> Result<u64, Mp4Error> {
    let s = b.get(at..at + 8).ok_or(Mp4Error::Malformed("field"))?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Ok(u64::from_be_bytes(a))
}

/// One sample of a track as its `trun` described it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sample {
    size: u32,
    duration: u32,
    cts: i32,
    sync: bool,
}

#[derive(Debug)]
struct Track {
    id: u32,
    timescale: u32,
    samples: Vec<Sample>,
    /// (file offset of the run's data, samples in it): one chunk per `trun`.
    chunks: Vec<(u64, u32)>,
    /// Decode time of the first sample.
    start: Option<u64>,
    /// Decode time after the last sample.
    end: u64,
    /// Holes in the timeline (a recorder that fell behind and skipped ahead): (decode time
    /// it starts at, length).
    gaps: Vec<(u64, u64)>,
}

/// A hole of at least [`GAP_MIN_S`] in a recording's timeline: where (seconds from its
/// start) and how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gap {
    pub at_s: f64,
    pub duration_s: f64,
}

/// A jump forward in decode time this long or longer is a gap (seconds).
pub const GAP_MIN_S: f64 = 0.5;
/// Gaps one file keeps a record of.
const MAX_GAPS: usize = 1000;

/// The sample tables of a recording, built fragment by fragment.
#[derive(Debug)]
pub struct Index {
    tracks: Vec<Track>,
    max_samples: usize,
}

impl Index {
    /// The tracks the initialization segment's `moov` (the whole box) declares; at most
    /// `max_samples` samples over all tracks (16 bytes each while finalizing).
    pub fn new(moov: &[u8], max_samples: usize) -> Result<Self, Mp4Error> {
        let tracks = tracks(moov)?
            .into_iter()
            .map(|t| Track {
                id: t.id,
                timescale: t.timescale,
                samples: Vec::new(),
                chunks: Vec::new(),
                start: None,
                end: 0,
                gaps: Vec::new(),
            })
            .collect();
        Ok(Self { tracks, max_samples })
    }

    /// Samples so far, over all tracks.
    pub fn samples(&self) -> usize {
        self.tracks.iter().map(|t| t.samples.len()).sum()
    }

    /// Adds the samples of one `moof` (the whole box) found at file offset `offset`.
    pub fn add_fragment(&mut self, moof: &[u8], offset: u64) -> Result<(), Mp4Error> {
        let body = moof.get(8..).ok_or(Mp4Error::Malformed("moof"))?;
        for c in children(body) {
            let (kind, _, traf) = c?;
            if &kind != b"traf" {
                continue;
            }
            let (_, _, tfhd) = child(traf, b"tfhd")?.ok_or(Mp4Error::Malformed("traf without tfhd"))?;
            let flags = be32(tfhd, 0)? & 0x00ff_ffff;
            let id = be32(tfhd, 4)?;
            // livegate writes default-base-is-moof and no other defaults
            let mut at = 8;
            let mut base = offset;
            if flags & 0x01 != 0 {
                base = be64(tfhd, at)?;
                at += 8;
            }
            let _ = at;
            let decode = match child(traf, b"tfdt")? {
                Some((_, _, tfdt)) if tfdt.first() == Some(&1) => Some(be64(tfdt, 4)?),
                Some((_, _, tfdt)) => Some(u64::from(be32(tfdt, 4)?)),
                None => None,
            };
            let max = self.max_samples;
            let total = self.samples();
            let track = self.tracks.iter_mut().find(|t| t.id == id).ok_or(Mp4Error::UnknownTrack(id))?;
            if let Some(d) = decode {
                if track.start.is_none() {
                    track.start = Some(d);
                    track.end = d;
                } else if d > track.end {
                    if (d - track.end) as f64 >= GAP_MIN_S * f64::from(track.timescale) && track.gaps.len() < MAX_GAPS {
                        track.gaps.push((track.end, d - track.end));
                    }
                    // a gap: the last sample lasts until this fragment starts
                    if let Some(last) = track.samples.last_mut() {
                        last.duration = last.duration.saturating_add(u32::try_from(d - track.end).unwrap_or(u32::MAX));
                    }
                    track.end = d;
                }
            }
            let mut added = 0usize;
            for c in children(traf) {
                let (kind, _, trun) = c?;
                if &kind != b"trun" {
                    continue;
                }
                let run = parse_trun(trun, max.saturating_sub(total + added)).map_err(|e| match e {
                    Mp4Error::TooManySamples(_) => Mp4Error::TooManySamples(max),
                    e => e,
                })?;
                let data = match run.data_offset {
                    Some(off) => {
                        base.checked_add_signed(i64::from(off)).ok_or(Mp4Error::Malformed("trun data offset"))?
                    }
                    None => base,
                };
                let count = run.samples.len();
                for s in run.samples {
                    track.end = track.end.saturating_add(u64::from(s.duration));
                    track.samples.push(s);
                }
                if count > 0 {
                    track.chunks.push((data, count as u32));
                }
                added += count;
            }
        }
        Ok(())
    }

    /// The gaps in the recording's timeline: its video track's (its first track's without
    /// video; a gap in one track is in all of them).
    pub fn gaps(&self, video_id: Option<u32>) -> Vec<Gap> {
        let t = video_id.and_then(|id| self.tracks.iter().find(|t| t.id == id)).or(self.tracks.first());
        let Some(t) = t else { return Vec::new() };
        let ts = f64::from(t.timescale);
        let start = t.start.unwrap_or(0);
        t.gaps
            .iter()
            .map(|&(at, len)| Gap { at_s: at.saturating_sub(start) as f64 / ts, duration_s: len as f64 / ts })
            .collect()
    }

    /// The regular `moov` of the file: the initialization segment's `moov` (`init`) with
    /// its sample tables filled in, durations set, `mvex` dropped, and an edit list for a
    /// track that starts after the first; `note` (when not empty) in a `udta` box of its own
    /// (see [`note`]).
    pub fn finish(&self, init: &[u8], note: &[u8]) -> Result<Vec<u8>, Mp4Error> {
        const MOVIE_TIMESCALE: u64 = 1000;
        let body = init.get(8..).ok_or(Mp4Error::Malformed("moov"))?;
        // the recording starts at the earliest track's first sample (in seconds)
        let secs = |t: &Track, v: u64| v as f64 / f64::from(t.timescale);
        let t0 = self.tracks.iter().filter_map(|t| t.start.map(|s| secs(t, s))).fold(f64::INFINITY, f64::min);
        let t0 = if t0.is_finite() { t0 } else { 0.0 };
        let movie_duration = |t: &Track| {
            let len = t.end.saturating_sub(t.start.unwrap_or(0));
            let lead = t.start.map_or(0.0, |s| (secs(t, s) - t0).max(0.0));
            ((lead + len as f64 / f64::from(t.timescale)) * MOVIE_TIMESCALE as f64).round() as u64
        };
        let total = self.tracks.iter().map(movie_duration).max().unwrap_or(0);
        let mut out = BytesMut::with_capacity(1024 + self.samples() * 12);
        bx(&mut out, b"moov", |b| -> Result<(), Mp4Error> {
            for c in children(body) {
                let (kind, whole, inner) = c?;
                match &kind {
                    b"mvhd" => mvhd(b, inner, total)?,
                    b"trak" => {
                        let (_, _, tkhd) = child(inner, b"tkhd")?.ok_or(Mp4Error::Malformed("trak without tkhd"))?;
                        let v1 = tkhd.first() == Some(&1);
                        let id = be32(tkhd, if v1 { 20 } else { 12 })?;
                        let track = self.tracks.iter().find(|t| t.id == id).ok_or(Mp4Error::UnknownTrack(id))?;
                        let lead = track.start.map_or(0.0, |s| (secs(track, s) - t0).max(0.0));
                        let lead_ms = (lead * MOVIE_TIMESCALE as f64).round() as u64;
                        trak(b, inner, track, movie_duration(track), lead_ms)?;
                    }
                    b"mvex" => {}
                    _ => b.put_slice(whole),
                }
            }
            if !note.is_empty() {
                bx(b, b"udta", |b| {
                    bx::<Mp4Error>(b, NOTE, |b| {
                        b.put_slice(note);
                        Ok(())
                    })
                })?;
            }
            Ok(())
        })?;
        Ok(out.to_vec())
    }
}

/// One `trun` (its body): the data offset it names, and its samples; at most `limit`.
struct Run {
    data_offset: Option<i32>,
    samples: Vec<Sample>,
}

fn parse_trun(trun: &[u8], limit: usize) -> Result<Run, Mp4Error> {
    let v = trun.first().copied().unwrap_or(0);
    let tflags = be32(trun, 0)? & 0x00ff_ffff;
    let count = be32(trun, 4)? as usize;
    let mut at = 8;
    let mut data_offset = None;
    if tflags & 0x01 != 0 {
        data_offset = Some(be32(trun, at)? as i32);
        at += 4;
    }
    let mut first_flags = None;
    if tflags & 0x04 != 0 {
        first_flags = Some(be32(trun, at)?);
        at += 4;
    }
    let per = [0x100, 0x200, 0x400, 0x800].iter().filter(|f| tflags & **f != 0).count() * 4;
    // (a run without per-sample fields is none livegate writes: each sample has its size)
    if (per == 0 && count > 0) || count.saturating_mul(per) > trun.len().saturating_sub(at) {
        return Err(Mp4Error::Malformed("trun sample count"));
    }
    if count > limit {
        return Err(Mp4Error::TooManySamples(limit));
    }
    let mut samples = Vec::with_capacity(count);
    for i in 0..count {
        let mut s = Sample { size: 0, duration: 0, cts: 0, sync: true };
        if tflags & 0x100 != 0 {
            s.duration = be32(trun, at)?;
            at += 4;
        }
        if tflags & 0x200 != 0 {
            s.size = be32(trun, at)?;
            at += 4;
        }
        let sample_flags = if tflags & 0x400 != 0 {
            let f = be32(trun, at)?;
            at += 4;
            Some(f)
        } else if i == 0 {
            first_flags
        } else {
            None
        };
        if let Some(f) = sample_flags {
            s.sync = f & 0x0001_0000 == 0;
        }
        if tflags & 0x800 != 0 {
            let c = be32(trun, at)?;
            s.cts = if v == 0 { i32::try_from(c).unwrap_or(i32::MAX) } else { c as i32 };
            at += 4;
        }
        samples.push(s);
    }
    Ok(Run { data_offset, samples })
}

/// A track of a recording's `moov`, as playback reads its fragments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackInfo {
    pub id: u32,
    pub timescale: u32,
    pub video: bool,
}

/// The tracks a `moov` (the whole box) declares.
pub fn tracks(moov: &[u8]) -> Result<Vec<TrackInfo>, Mp4Error> {
    let body = moov.get(8..).ok_or(Mp4Error::Malformed("moov"))?;
    let mut tracks = Vec::new();
    for c in children(body) {
        let (kind, _, trak) = c?;
        if &kind != b"trak" {
            continue;
        }
        let (_, _, tkhd) = child(trak, b"tkhd")?.ok_or(Mp4Error::Malformed("trak without tkhd"))?;
        let id = be32(tkhd, if tkhd.first() == Some(&1) { 20 } else { 12 })?;
        let (_, _, mdia) = child(trak, b"mdia")?.ok_or(Mp4Error::Malformed("trak without mdia"))?;
        let (_, _, mdhd) = child(mdia, b"mdhd")?.ok_or(Mp4Error::Malformed("mdia without mdhd"))?;
        let timescale = be32(mdhd, if mdhd.first() == Some(&1) { 20 } else { 12 })?;
        // hdlr: version/flags 4, pre-defined 4, handler type 4
        let video = child(mdia, b"hdlr")?.and_then(|(_, _, h)| h.get(8..12)) == Some(b"vide".as_slice());
        tracks.push(TrackInfo { id, timescale: timescale.max(1), video });
    }
    if tracks.is_empty() {
        return Err(Mp4Error::Malformed("moov without tracks"));
    }
    Ok(tracks)
}

/// What playback needs of one fragment: when it starts (seconds; the earliest track's
/// decode time), how long it lasts (seconds; the longest track), and whether it can be
/// played from (its video track starts with a sync sample; always, without video).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FragmentTimes {
    pub start: f64,
    pub duration: f64,
    pub keyframe: bool,
}

/// The [`FragmentTimes`] of a `moof` (the whole box) of a file with `tracks`.
pub fn fragment_times(moof: &[u8], tracks: &[TrackInfo]) -> Result<FragmentTimes, Mp4Error> {
    let body = moof.get(8..).ok_or(Mp4Error::Malformed("moof"))?;
    let (mut start, mut end) = (f64::INFINITY, f64::NEG_INFINITY);
    let mut keyframe = !tracks.iter().any(|t| t.video);
    for c in children(body) {
        let (kind, _, traf) = c?;
        if &kind != b"traf" {
            continue;
        }
        let (_, _, tfhd) = child(traf, b"tfhd")?.ok_or(Mp4Error::Malformed("traf without tfhd"))?;
        let id = be32(tfhd, 4)?;
        let track = tracks.iter().find(|t| t.id == id).ok_or(Mp4Error::UnknownTrack(id))?;
        let decode = match child(traf, b"tfdt")? {
            Some((_, _, tfdt)) if tfdt.first() == Some(&1) => be64(tfdt, 4)?,
            Some((_, _, tfdt)) => u64::from(be32(tfdt, 4)?),
            None => return Err(Mp4Error::Malformed("traf without tfdt")),
        };
        let mut duration = 0u64;
        let mut first = true;
        for c in children(traf) {
            let (kind, _, trun) = c?;
            if &kind != b"trun" {
                continue;
            }
            let run = parse_trun(trun, usize::MAX)?;
            if first && track.video {
                keyframe = run.samples.first().is_some_and(|s| s.sync);
            }
            first &= run.samples.is_empty();
            duration += run.samples.iter().map(|s| u64::from(s.duration)).sum::<u64>();
        }
        let ts = f64::from(track.timescale);
        start = start.min(decode as f64 / ts);
        end = end.max(decode.saturating_add(duration) as f64 / ts);
    }
    if !start.is_finite() {
        return Err(Mp4Error::Malformed("moof without tracks"));
    }
    Ok(FragmentTimes { start, duration: (end - start).max(0.0), keyframe })
}

/// Moves every track of a `moof` (the whole box, in place) by `delta` seconds: its `tfdt`
/// decode times (a time that would fall below zero becomes zero).
pub fn shift_decode_times(moof: &mut [u8], tracks: &[TrackInfo], delta: f64) -> Result<(), Mp4Error> {
    let mut at = Vec::new();
    {
        let base = moof.as_ptr() as usize;
        let body = moof.get(8..).ok_or(Mp4Error::Malformed("moof"))?;
        for c in children(body) {
            let (kind, _, traf) = c?;
            if &kind != b"traf" {
                continue;
            }
            let (_, _, tfhd) = child(traf, b"tfhd")?.ok_or(Mp4Error::Malformed("traf without tfhd"))?;
            let id = be32(tfhd, 4)?;
            let track = tracks.iter().find(|t| t.id == id).ok_or(Mp4Error::UnknownTrack(id))?;
            if let Some((_, _, tfdt)) = child(traf, b"tfdt")? {
                let v1 = tfdt.first() == Some(&1);
                let now = if v1 { be64(tfdt, 4)? } else { u64::from(be32(tfdt, 4)?) };
                let moved = (now as f64 + delta * f64::from(track.timescale)).round().max(0.0) as u64;
                at.push((tfdt.as_ptr() as usize - base + 4, v1, moved));
            }
        }
    }
    for (offset, v1, t) in at {
        if v1 {
            moof[offset..offset + 8].copy_from_slice(&t.to_be_bytes());
        } else {
            let t = u32::try_from(t).map_err(|_| Mp4Error::Malformed("tfdt version 0 overflow"))?;
            moof[offset..offset + 4].copy_from_slice(&t.to_be_bytes());
        }
    }
    Ok(())
}

/// The box (in `moov`/`udta`) livegate keeps its own note about a recording in (players
/// skip boxes they do not know).
const NOTE: &[u8; 4] = b"lvgt";

/// The note [`Index::finish`] put in a `moov` (the whole box).
pub fn note(moov: &[u8]) -> Option<&[u8]> {
    let body = moov.get(8..)?;
    let (_, _, udta) = child(body, b"udta").ok()??;
    child(udta, NOTE).ok()?.map(|c| c.2)
}

/// What a listing shows of a finalized file: its duration in seconds and the sample entry
/// of each track (`avc1`, `hvc1`, `mp4a`, `Opus`, …), from its `moov` (the whole box).
pub fn summary(moov: &[u8]) -> Result<(f64, Vec<String>), Mp4Error> {
    let body = moov.get(8..).ok_or(Mp4Error::Malformed("moov"))?;
    let (_, _, mvhd) = child(body, b"mvhd")?.ok_or(Mp4Error::Malformed("moov without mvhd"))?;
    let (timescale, duration) = if mvhd.first() == Some(&1) {
        (be32(mvhd, 20)?, be64(mvhd, 24)?)
    } else {
        (be32(mvhd, 12)?, u64::from(be32(mvhd, 16)?))
    };
    let mut codecs = Vec::new();
    for c in children(body) {
        let (kind, _, trak) = c?;
        if &kind != b"trak" {
            continue;
        }
        let stsd = child(trak, b"mdia")?
            .map(|m| m.2)
            .and_then(|m| child(m, b"minf").ok().flatten())
            .and_then(|m| child(m.2, b"stbl").ok().flatten())
            .and_then(|s| child(s.2, b"stsd").ok().flatten());
        // stsd: version/flags 4, count 4, then the first entry's header
        if let Some(entry) = stsd.and_then(|s| s.2.get(12..16)) {
            codecs.push(String::from_utf8_lossy(entry).into_owned());
        }
    }
    Ok((duration as f64 / f64::from(timescale.max(1)), codecs))
}

/// Writes a box whose body `f` writes.
fn bx<E>(b: &mut BytesMut, kind: &[u8; 4], f: impl FnOnce(&mut BytesMut) -> Result<(), E>) -> Result<(), E> {
    let start = b.len();
    b.put_u32(0);
    b.put_slice(kind);
    f(b)?;
    let len = u32::try_from(b.len() - start).unwrap_or(u32::MAX);
    b[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn full(b: &mut BytesMut, kind: &[u8; 4], version: u8, flags: u32, f: impl FnOnce(&mut BytesMut)) {
    let _ = bx::<()>(b, kind, |b| {
        b.put_u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        f(b);
        Ok(())
    });
}

/// `mvhd` with the duration set (version 1: 64-bit times).
fn mvhd(b: &mut BytesMut, old: &[u8], duration_ms: u64) -> Result<(), Mp4Error> {
    // version 0: created 4, modified 4, timescale 4, duration 4, then 80 bytes of the rest
    let v1 = old.first() == Some(&1);
    let rest = old.get(if v1 { 32.. } else { 20.. }).ok_or(Mp4Error::Malformed("mvhd"))?;
    full(b, b"mvhd", 1, 0, |b| {
        b.put_u64(0);
        b.put_u64(0);
        b.put_u32(1000);
        b.put_u64(duration_ms);
        b.put_slice(rest);
    });
    Ok(())
}

fn trak(b: &mut BytesMut, old: &[u8], t: &Track, duration_ms: u64, lead_ms: u64) -> Result<(), Mp4Error> {
    bx(b, b"trak", |b| {
        for c in children(old) {
            let (kind, whole, inner) = c?;
            match &kind {
                b"tkhd" => {
                    // version 0: created 4, modified 4, id 4, reserved 4, duration 4, rest
                    let v1 = inner.first() == Some(&1);
                    let flags = be32(inner, 0)? & 0x00ff_ffff;
                    let rest = inner.get(if v1 { 36.. } else { 24.. }).ok_or(Mp4Error::Malformed("tkhd"))?;
                    full(b, b"tkhd", 1, flags, |b| {
                        b.put_u64(0);
                        b.put_u64(0);
                        b.put_u32(t.id);
                        b.put_u32(0);
                        b.put_u64(duration_ms);
                        b.put_slice(rest);
                    });
                    if lead_ms > 0 {
                        // an empty edit: the track starts this much after the movie
                        bx::<()>(b, b"edts", |b| {
                            full(b, b"elst", 1, 0, |b| {
                                b.put_u32(2);
                                b.put_u64(lead_ms);
                                b.put_i64(-1);
                                b.put_u32(0x0001_0000);
                                b.put_u64(duration_ms.saturating_sub(lead_ms));
                                b.put_i64(0);
                                b.put_u32(0x0001_0000);
                            });
                            Ok(())
                        })
                        .ok();
                    }
                }
                b"mdia" => mdia(b, inner, t)?,
                b"edts" => {}
                _ => b.put_slice(whole),
            }
        }
        Ok(())
    })
}

fn mdia(b: &mut BytesMut, old: &[u8], t: &Track) -> Result<(), Mp4Error> {
    bx(b, b"mdia", |b| {
        for c in children(old) {
            let (kind, whole, inner) = c?;
            match &kind {
                b"mdhd" => {
                    let v1 = inner.first() == Some(&1);
                    let rest = inner.get(if v1 { 32.. } else { 20.. }).ok_or(Mp4Error::Malformed("mdhd"))?;
                    full(b, b"mdhd", 1, 0, |b| {
                        b.put_u64(0);
                        b.put_u64(0);
                        b.put_u32(t.timescale);
                        b.put_u64(t.end.saturating_sub(t.start.unwrap_or(0)));
                        b.put_slice(rest);
                    });
                }
                b"minf" => bx(b, b"minf", |b| {
                    for c in children(inner) {
                        let (kind, whole, inner) = c?;
                        if &kind == b"stbl" {
                            stbl(b, inner, t)?;
                        } else {
                            b.put_slice(whole);
                        }
                    }
                    Ok(())
                })?,
                _ => b.put_slice(whole),
            }
        }
        Ok(())
    })
}

/// The sample table: the `stsd` kept, the rest written from the samples.
fn stbl(b: &mut BytesMut, old: &[u8], t: &Track) -> Result<(), Mp4Error> {
    let (_, stsd, _) = child(old, b"stsd")?.ok_or(Mp4Error::Malformed("stbl without stsd"))?;
    bx(b, b"stbl", |b| {
        b.put_slice(stsd);
        // decode times: runs of equal durations
        let mut stts: Vec<(u32, u32)> = Vec::new();
        for s in &t.samples {
            match stts.last_mut() {
                Some((n, d)) if *d == s.duration => *n += 1,
                _ => stts.push((1, s.duration)),
            }
        }
        full(b, b"stts", 0, 0, |b| {
            b.put_u32(stts.len() as u32);
            for (n, d) in &stts {
                b.put_u32(*n);
                b.put_u32(*d);
            }
        });
        if t.samples.iter().any(|s| s.cts != 0) {
            let mut ctts: Vec<(u32, i32)> = Vec::new();
            for s in &t.samples {
                match ctts.last_mut() {
                    Some((n, c)) if *c == s.cts => *n += 1,
                    _ => ctts.push((1, s.cts)),
                }
            }
            full(b, b"ctts", 1, 0, |b| {
                b.put_u32(ctts.len() as u32);
                for (n, c) in &ctts {
                    b.put_u32(*n);
                    b.put_i32(*c);
                }
            });
        }
        if t.samples.iter().any(|s| !s.sync) {
            let sync: Vec<u32> =
                t.samples.iter().enumerate().filter(|(_, s)| s.sync).map(|(i, _)| i as u32 + 1).collect();
            full(b, b"stss", 0, 0, |b| {
                b.put_u32(sync.len() as u32);
                sync.iter().for_each(|i| b.put_u32(*i));
            });
        }
        // chunks: one per trun; runs of chunks with the same sample count
        let mut stsc: Vec<(u32, u32)> = Vec::new();
        for (i, (_, n)) in t.chunks.iter().enumerate() {
            if stsc.last().is_none_or(|(_, last)| last != n) {
                stsc.push((i as u32 + 1, *n));
            }
        }
        full(b, b"stsc", 0, 0, |b| {
            b.put_u32(stsc.len() as u32);
            for (first, n) in &stsc {
                b.put_u32(*first);
                b.put_u32(*n);
                b.put_u32(1);
            }
        });
        full(b, b"stsz", 0, 0, |b| {
            b.put_u32(0);
            b.put_u32(t.samples.len() as u32);
            t.samples.iter().for_each(|s| b.put_u32(s.size));
        });
        full(b, b"co64", 0, 0, |b| {
            b.put_u32(t.chunks.len() as u32);
            t.chunks.iter().for_each(|(o, _)| b.put_u64(*o));
        });
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hls::testutil::*;
    use crate::mux::Fmp4Muxer;

    /// A recording the way the recorder writes it: init, then fragments; (file bytes,
    /// moov range, moof offsets).
    fn record(fragments: usize) -> (Vec<u8>, std::ops::Range<usize>, Vec<usize>) {
        let mut m = Fmp4Muxer::new();
        m.set_config(&codec_config(true, true)).unwrap();
        let mut file = m.init_segment().unwrap().to_vec();
        let ftyp = BoxHeader::parse(&file).unwrap().unwrap().size as usize;
        let moov = ftyp..file.len();
        let mut moofs = Vec::new();
        let mut t = 0i64;
        for f in 0..fragments {
            m.start_segment();
            for i in 0..30 {
                let v = video_frame(t, if i % 3 == 1 { 66 } else { 0 }, i == 0 && f % 2 == 0);
                m.prepare_video(&v).unwrap();
                m.commit_video(&v);
                m.write_audio(&audio_frame(t)).unwrap();
                t += 33;
            }
            moofs.push(file.len());
            file.extend_from_slice(&m.finish_segment(Some(t)));
        }
        (file, moov, moofs)
    }

    #[test]
    fn fragments_become_a_moov_with_every_sample() {
        let (file, moov, moofs) = record(3);
        let mut index = Index::new(&file[moov.clone()], 1 << 20).unwrap();
        for &o in &moofs {
            let h = BoxHeader::parse(&file[o..]).unwrap().unwrap();
            assert_eq!(&h.kind, b"moof");
            index.add_fragment(&file[o..o + h.size as usize], o as u64).unwrap();
        }
        assert_eq!(index.samples(), 180);
        let out = index.finish(&file[moov], b"{}").unwrap();
        assert_eq!(note(&out), Some(b"{}".as_slice()));
        let body = &out[8..];
        assert!(child(body, b"mvex").unwrap().is_none());
        let traks: Vec<_> = children(body).filter_map(|c| c.ok()).filter(|(k, _, _)| k == b"trak").collect();
        assert_eq!(traks.len(), 2);
        let (_, _, video) = traks[0];
        let stbl = child(child(child(video, b"mdia").unwrap().unwrap().2, b"minf").unwrap().unwrap().2, b"stbl")
            .unwrap()
            .unwrap()
            .2;
        let (_, _, stsz) = child(stbl, b"stsz").unwrap().unwrap();
        assert_eq!(be32(stsz, 8).unwrap(), 90);
        let (_, _, stss) = child(stbl, b"stss").unwrap().unwrap();
        assert_eq!(be32(stss, 4).unwrap(), 2, "keyframes in fragments 0 and 2");
        let (_, _, co64) = child(stbl, b"co64").unwrap().unwrap();
        assert_eq!(be32(co64, 4).unwrap(), 3, "one chunk per fragment");
        // the first chunk's data is the first video sample's bytes, right after the mdat header
        let first = be64(co64, 8).unwrap() as usize;
        let moof_len = BoxHeader::parse(&file[moofs[0]..]).unwrap().unwrap().size as usize;
        assert_eq!(first, moofs[0] + moof_len + 8);
        let (duration, codecs) = summary(&out).unwrap();
        assert_eq!(codecs, ["avc1", "mp4a"]);
        assert!((duration - 2.97).abs() < 0.1, "{duration}");
    }

    #[test]
    fn fragments_tell_their_times_and_move_in_time() {
        let (file, moov, moofs) = record(3);
        let tracks = tracks(&file[moov]).unwrap();
        assert_eq!(tracks.iter().map(|t| t.video).collect::<Vec<_>>(), [true, false]);
        let moof = |i: usize| {
            let h = BoxHeader::parse(&file[moofs[i]..]).unwrap().unwrap();
            file[moofs[i]..moofs[i] + h.size as usize].to_vec()
        };
        let times: Vec<FragmentTimes> = (0..3).map(|i| fragment_times(&moof(i), &tracks).unwrap()).collect();
        // 30 frames of 33 ms each; keyframes start fragments 0 and 2
        assert_eq!(times.iter().map(|t| t.keyframe).collect::<Vec<_>>(), [true, false, true]);
        for (i, t) in times.iter().enumerate() {
            assert!((t.start - i as f64 * 0.99).abs() < 0.05, "{i}: {t:?}");
            assert!((t.duration - 0.99).abs() < 0.05, "{i}: {t:?}");
        }
        let mut moved = moof(1);
        shift_decode_times(&mut moved, &tracks, 10.0).unwrap();
        let t = fragment_times(&moved, &tracks).unwrap();
        assert!((t.start - times[1].start - 10.0).abs() < 0.001, "{t:?}");
        assert_eq!(moved.len(), moof(1).len());
        // moved before zero: clamped, not wrapped
        shift_decode_times(&mut moved, &tracks, -1000.0).unwrap();
        assert_eq!(fragment_times(&moved, &tracks).unwrap().start, 0.0);
        for cut in 0..moved.len() {
            let _ = fragment_times(&moved[..cut], &tracks);
            let _ = shift_decode_times(&mut moved.clone()[..cut], &tracks, 1.0);
        }
    }

    #[test]
    fn a_jump_forward_in_time_is_a_gap_in_the_note() {
        let (file, moov, moofs) = record(3);
        let tracks = tracks(&file[moov.clone()]).unwrap();
        let mut index = Index::new(&file[moov.clone()], 1 << 20).unwrap();
        for (i, &o) in moofs.iter().enumerate() {
            let h = BoxHeader::parse(&file[o..]).unwrap().unwrap();
            let mut moof = file[o..o + h.size as usize].to_vec();
            if i == 2 {
                // the recorder fell behind and went on 2 s later
                shift_decode_times(&mut moof, &tracks, 2.0).unwrap();
            }
            index.add_fragment(&moof, o as u64).unwrap();
        }
        let gaps = index.gaps(Some(1));
        assert_eq!(gaps.len(), 1, "{gaps:?}");
        assert!((gaps[0].at_s - 1.98).abs() < 0.05 && (gaps[0].duration_s - 2.0).abs() < 0.01, "{gaps:?}");
        let out = index.finish(&file[moov], br#"{"gaps":[[1.98,2.0]]}"#).unwrap();
        assert_eq!(note(&out), Some(br#"{"gaps":[[1.98,2.0]]}"#.as_slice()));
        let (duration, _) = summary(&out).unwrap();
        assert!((duration - 4.97).abs() < 0.1, "the gap is in the duration: {duration}");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (file, moov, moofs) = record(1);
        let mut index = Index::new(&file[moov], 1 << 20).unwrap();
        for cut in 0..200 {
            let moof = &file[moofs[0]..moofs[0] + cut.min(file.len() - moofs[0])];
            let _ = index.add_fragment(moof, 0);
        }
        let mut tiny = Index::new(&record(1).0[record(1).1], 10).unwrap();
        let (file, _, moofs) = record(1);
        let h = BoxHeader::parse(&file[moofs[0]..]).unwrap().unwrap();
        assert_eq!(
            tiny.add_fragment(&file[moofs[0]..moofs[0] + h.size as usize], 0),
            Err(Mp4Error::TooManySamples(10))
        );
        assert!(Index::new(b"\0\0\0\x08moov", 10).is_err());
        assert_eq!(
            BoxHeader::parse(b"\0\0\0\0free"),
            Err(Mp4Error::Malformed("a box of size 0 (to the end of the file)"))
        );
    }
}
