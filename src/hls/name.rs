//! HLS segment file names, `STREAM-TOKEN-SEQ.ts`: one type for writing and parsing them.

use std::fmt;

/// The name of one segment: the stream name, the key's random token (so names never
/// repeat for a key and cannot be guessed) and the media sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentName<'a> {
    pub stream: &'a str,
    pub token: &'a str,
    pub sequence: u64,
}

impl<'a> SegmentName<'a> {
    /// Parses `STREAM-TOKEN-SEQ.ts` (the stream name may itself contain `-`).
    pub fn parse(file: &'a str) -> Option<Self> {
        let stem = file.strip_suffix(".ts")?;
        let mut parts = stem.rsplitn(3, '-');
        let sequence = parts.next()?.parse().ok()?;
        let token = parts.next().filter(|t| !t.is_empty())?;
        let stream = parts.next().filter(|s| !s.is_empty())?;
        Some(Self { stream, token, sequence })
    }
}

impl fmt::Display for SegmentName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}.ts", self.stream, self.token, self.sequence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_ones_are_refused() {
        let n = SegmentName { stream: "my-cam", token: "0123456789abcdef", sequence: 42 };
        let text = n.to_string();
        assert_eq!(text, "my-cam-0123456789abcdef-42.ts");
        assert_eq!(SegmentName::parse(&text), Some(n));
        for bad in ["x.ts", "a-b.ts", "a-b-c.ts", "a-b-1.m3u8", "-tok-1.ts", "a-b--1.ts"] {
            assert_eq!(SegmentName::parse(bad), None, "{bad}");
        }
    }
}
