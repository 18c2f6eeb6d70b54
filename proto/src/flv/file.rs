//! Reading FLV: the one tag header parser ([`TagHeader`]), whole files (fixtures,
//! recordings, benchmark sources: [`read_tags`]) and live FLV byte streams read piece by
//! piece ([`TagScanner`], for players and the benchmark). Sans-IO, over byte slices.

use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlvFileError {
    #[error("not an FLV file")]
    NotFlv,
    #[error("tag at offset {0} runs past the end of the file")]
    Truncated(usize),
    #[error("a tag of {size} bytes is larger than the {max} bytes allowed")]
    TagTooLarge { size: usize, max: usize },
}

/// One tag: type (8 audio, 9 video, 18 script), 32-bit timestamp, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    pub tag_type: u8,
    pub timestamp: u32,
    pub body: Bytes,
}

/// Length of an FLV tag header.
pub const TAG_HEADER_LEN: usize = 11;

/// An FLV tag header: type (8 audio, 9 video, 18 script; filter bits masked), body size and
/// 32-bit timestamp (24 bits + the extension byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TagHeader {
    pub tag_type: u8,
    pub size: usize,
    pub timestamp: u32,
}

impl TagHeader {
    pub fn parse(h: &[u8; TAG_HEADER_LEN]) -> Self {
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp = (u32::from(h[7]) << 24) | (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6]);
        Self { tag_type: h[0] & 0x1f, size, timestamp }
    }
}

/// Walks a live FLV byte stream fed in pieces of any size, reading tag headers and the first
/// two body bytes of each tag (enough for codec, keyframe and packet type) without copying
/// or buffering bodies.
#[derive(Debug, Default)]
pub struct TagScanner {
    started: bool,
    hdr: [u8; TAG_HEADER_LEN + 2],
    have: usize,
    /// The header of the tag whose first body bytes are being read.
    header: Option<TagHeader>,
    skip: usize,
}

impl TagScanner {
    /// Feeds the next piece; calls `on_tag` with each tag's header and its first two body
    /// bytes (zero where the body is shorter).
    pub fn feed(&mut self, mut b: &[u8], mut on_tag: impl FnMut(TagHeader, [u8; 2])) {
        while !b.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(b.len());
                self.skip -= n;
                b = &b[n..];
                continue;
            }
            if !self.started {
                // file header (9) + PreviousTagSize0 (4)
                self.skip = 13;
                self.started = true;
                continue;
            }
            let want = TAG_HEADER_LEN + self.header.map_or(0, |h| h.size.min(2));
            let n = (want - self.have).min(b.len());
            self.hdr[self.have..self.have + n].copy_from_slice(&b[..n]);
            self.have += n;
            b = &b[n..];
            if self.have < want {
                continue;
            }
            let header = match self.header {
                Some(h) => h,
                None => {
                    let mut h = [0u8; TAG_HEADER_LEN];
                    h.copy_from_slice(&self.hdr[..TAG_HEADER_LEN]);
                    let h = TagHeader::parse(&h);
                    self.header = Some(h);
                    if h.size > 0 {
                        continue; // then its first body bytes
                    }
                    h
                }
            };
            let prefix = header.size.min(2);
            let mut first = [0u8; 2];
            first[..prefix].copy_from_slice(&self.hdr[TAG_HEADER_LEN..TAG_HEADER_LEN + prefix]);
            on_tag(header, first);
            self.have = 0;
            self.header = None;
            // the rest of the body and the PreviousTagSize
            self.skip = header.size - prefix + 4;
        }
    }
}

/// Reads whole tags out of a live FLV byte stream fed in pieces of any size (an HTTP-FLV
/// pull from an origin): the FLV header is checked and skipped, each tag's body is cut out
/// of the buffer (one copy, from the socket's pieces into it), and a tag larger than
/// `max_tag` is an error before its body is buffered, so what it holds is bounded by
/// `max_tag` plus one piece.
#[derive(Debug)]
pub struct TagReader {
    buf: bytes::BytesMut,
    header_done: bool,
    max_tag: usize,
}

impl TagReader {
    pub fn new(max_tag: usize) -> Self {
        Self { buf: bytes::BytesMut::new(), header_done: false, max_tag }
    }

    /// Appends the next piece of the stream.
    pub fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    /// Bytes held (a partial tag).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole tag, `Ok(None)` when more bytes are needed.
    pub fn next_tag(&mut self) -> Result<Option<FileTag>, FlvFileError> {
        if !self.header_done {
            if self.buf.len() < 9 {
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                return Err(FlvFileError::NotFlv);
            }
            let header_len = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]) as usize;
            if !(9..=64).contains(&header_len) {
                return Err(FlvFileError::NotFlv);
            }
            // the header and PreviousTagSize0
            if self.buf.len() < header_len + 4 {
                return Ok(None);
            }
            let _ = self.buf.split_to(header_len + 4);
            self.header_done = true;
        }
        if self.buf.len() < TAG_HEADER_LEN {
            return Ok(None);
        }
        let mut h = [0u8; TAG_HEADER_LEN];
        h.copy_from_slice(&self.buf[..TAG_HEADER_LEN]);
        let TagHeader { tag_type, size, timestamp } = TagHeader::parse(&h);
        if size > self.max_tag {
            return Err(FlvFileError::TagTooLarge { size, max: self.max_tag });
        }
        if self.buf.len() < TAG_HEADER_LEN + size + 4 {
            self.buf.reserve(TAG_HEADER_LEN + size + 4 - self.buf.len());
            return Ok(None);
        }
        let _ = self.buf.split_to(TAG_HEADER_LEN);
        let body = self.buf.split_to(size).freeze();
        let _ = self.buf.split_to(4);
        Ok(Some(FileTag { tag_type, timestamp, body }))
    }
}

/// Splits a whole FLV file into tags (bodies are slices of `data`).
pub fn read_tags(data: &Bytes) -> Result<Vec<FileTag>, FlvFileError> {
    if data.len() < 9 || &data[..3] != b"FLV" {
        return Err(FlvFileError::NotFlv);
    }
    let header_len = u32::from_be_bytes([data[5], data[6], data[7], data[8]]) as usize;
    let mut pos = header_len.checked_add(4).ok_or(FlvFileError::NotFlv)?;
    let mut tags = Vec::new();
    while pos + 11 <= data.len() {
        let mut h = [0u8; TAG_HEADER_LEN];
        h.copy_from_slice(&data[pos..pos + TAG_HEADER_LEN]);
        let TagHeader { tag_type, size, timestamp } = TagHeader::parse(&h);
        let end = pos + TAG_HEADER_LEN + size;
        if end > data.len() {
            return Err(FlvFileError::Truncated(pos));
        }
        tags.push(FileTag { tag_type, timestamp, body: data.slice(pos + TAG_HEADER_LEN..end) });
        pos = end + 4;
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_stream_is_read_whole_tag_by_whole_tag_across_any_split() {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        for (i, body) in [&b"abc"[..], &b"defgh"[..]].iter().enumerate() {
            f.extend_from_slice(&[9, 0, 0, body.len() as u8, 0, 0, i as u8, 0, 0, 0, 0]);
            f.extend_from_slice(body);
            f.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
        }
        for split in 1..f.len() {
            let mut r = TagReader::new(1024);
            let mut tags = Vec::new();
            for piece in f.chunks(split) {
                r.push(piece);
                while let Some(t) = r.next_tag().unwrap() {
                    tags.push(t);
                }
            }
            assert_eq!(tags.len(), 2, "split {split}");
            assert_eq!((&tags[1].body[..], tags[1].timestamp, tags[1].tag_type), (&b"defgh"[..], 1, 9));
        }
        let mut big = TagReader::new(4);
        big.push(&f);
        assert_eq!(big.next_tag(), Ok(Some(FileTag { tag_type: 9, timestamp: 0, body: Bytes::from_static(b"abc") })));
        assert_eq!(big.next_tag(), Err(FlvFileError::TagTooLarge { size: 5, max: 4 }));
        let mut bad = TagReader::new(4);
        bad.push(b"<html>garbage");
        assert_eq!(bad.next_tag(), Err(FlvFileError::NotFlv));
    }

    #[test]
    fn reads_tags_and_rejects_garbage() {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        f.extend_from_slice(&[9, 0, 0, 2, 0, 0, 40, 1, 0, 0, 0, 0x17, 0x02, 0, 0, 0, 13]);
        let tags = read_tags(&Bytes::from(f.clone())).unwrap();
        assert_eq!(tags, vec![FileTag { tag_type: 9, timestamp: 0x0100_0028, body: Bytes::from_static(&[0x17, 2]) }]);
        assert_eq!(read_tags(&Bytes::from_static(b"GIF89a")), Err(FlvFileError::NotFlv));
        f.truncate(f.len() - 6);
        assert_eq!(read_tags(&Bytes::from(f)), Err(FlvFileError::Truncated(13)));
    }

    #[test]
    fn a_stream_is_scanned_across_any_split() {
        let mut f = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let tag = |ty: u8, ts: u32, body: &[u8]| {
            let mut t = vec![ty, 0, 0, body.len() as u8, (ts >> 16) as u8, (ts >> 8) as u8, ts as u8, 0, 0, 0, 0];
            t.extend_from_slice(body);
            t.extend_from_slice(&(11 + body.len() as u32).to_be_bytes());
            t
        };
        f.extend(tag(9, 1000, &[0x17, 1, 0, 0, 0, 9, 9, 9]));
        f.extend(tag(8, 1010, &[0xaf, 1, 7]));
        f.extend(tag(18, 1020, &[]));
        f.extend(tag(8, 1030, &[0xaf]));
        f.extend(tag(9, 1040, &[0x27, 1, 0]));
        for step in 1..=f.len() {
            let mut scanner = TagScanner::default();
            let mut seen = Vec::new();
            for piece in f.chunks(step) {
                scanner.feed(piece, |h, first| seen.push((h.tag_type, h.timestamp, h.size, first)));
            }
            assert_eq!(
                seen,
                vec![
                    (9, 1000, 8, [0x17, 1]),
                    (8, 1010, 3, [0xaf, 1]),
                    (18, 1020, 0, [0, 0]),
                    (8, 1030, 1, [0xaf, 0]),
                    (9, 1040, 3, [0x27, 1])
                ],
                "step {step}"
            );
        }
    }
}
