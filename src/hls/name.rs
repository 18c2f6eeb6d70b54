//! HLS file names: segments `STREAM-TOKEN-SEQ.ts` (MPEG-TS) or `STREAM-TOKEN-SEQ.m4s`
//! (fMP4), their parts `STREAM-TOKEN-SEQ.PART.m4s` (Low-Latency HLS), initialization
//! segments `STREAM-TOKEN-initN.mp4`; one type for writing and
//! parsing them.

use std::fmt;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An MPEG-TS segment.
    Ts,
    /// An fMP4 media segment.
    M4s,
    /// An fMP4 initialization segment (`EXT-X-MAP`); `sequence` is its number.
    Init,
    /// A part of an fMP4 segment (Low-Latency HLS): `STREAM-TOKEN-SEQ.PART.m4s`.
    Part(u32),
}

impl FileKind {
    /// The `Content-Type` it is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            FileKind::Ts => "video/mp2t",
            FileKind::M4s | FileKind::Part(_) => "video/iso.segment",
            FileKind::Init => "video/mp4",
        }
    }
}

/// The name of one file: the stream name, the key's random token (so names never repeat
/// for a key and cannot be guessed), the media sequence number (or the initialization
/// segment's number) and the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName<'a> {
    pub stream: &'a str,
    pub token: &'a str,
    pub sequence: u64,
    pub kind: FileKind,
}

impl<'a> SegmentName<'a> {
    /// Parses a segment or initialization segment name (the stream name may itself
    /// contain `-`).
    pub fn parse(file: &'a str) -> Option<Self> {
        let (stem, kind) = if let Some(s) = file.strip_suffix(".ts") {
            (s, FileKind::Ts)
        } else if let Some(s) = file.strip_suffix(".m4s") {
            (s, FileKind::M4s)
        } else {
            (file.strip_suffix(".mp4")?, FileKind::Init)
        };
        let mut parts = stem.rsplitn(3, '-');
        let last = parts.next()?;
        let (number, kind) = match kind {
            FileKind::Init => (last.strip_prefix("init")?, kind),
            FileKind::M4s => match last.split_once('.') {
                Some((seq, part)) if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) => {
                    (seq, FileKind::Part(part.parse().ok()?))
                }
                Some(_) => return None,
                None => (last, kind),
            },
            _ => (last, kind),
        };
        // digits only: `parse` would also take a leading `+`
        if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let sequence = number.parse().ok()?;
        let token = parts.next().filter(|t| !t.is_empty())?;
        let stream = parts.next().filter(|s| !s.is_empty())?;
        Some(Self { stream, token, sequence, kind })
    }
}

impl fmt::Display for SegmentName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (stream, token, n) = (self.stream, self.token, self.sequence);
        match self.kind {
            FileKind::Ts => write!(f, "{stream}-{token}-{n}.ts"),
            FileKind::M4s => write!(f, "{stream}-{token}-{n}.m4s"),
            FileKind::Init => write!(f, "{stream}-{token}-init{n}.mp4"),
            FileKind::Part(p) => write!(f, "{stream}-{token}-{n}.{p}.m4s"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        for (kind, text) in [
            (FileKind::Ts, "my-cam-0123456789abcdef-42.ts"),
            (FileKind::M4s, "my-cam-0123456789abcdef-42.m4s"),
            (FileKind::Init, "my-cam-0123456789abcdef-init42.mp4"),
            (FileKind::Part(3), "my-cam-0123456789abcdef-42.3.m4s"),
        ] {
            let n = SegmentName { stream: "my-cam", token: "0123456789abcdef", sequence: 42, kind };
            assert_eq!(n.to_string(), text);
            assert_eq!(SegmentName::parse(text), Some(n));
        }
        for bad in [
            "x.ts",
            "a-b.ts",
            "a-b-c.ts",
            "a-b-1.m3u8",
            "-tok-1.ts",
            "a-b--1.ts",
            "a-b-+1.ts",
            "a-b-1.mp4",
            "a-b-init.mp4",
        ] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
