//! Reading FLV files (fixtures, recordings, benchmark sources): the file
//! header and the tag sequence. Sans-IO, over a byte slice.

use bytes::Bytes;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FlvFileError {
    #[error("not an FLV file")]
    NotFlv,
    #[error("tag at offset {0} runs past the end of the file")]
    Truncated(usize),
}

/// One tag: type (8 audio, 9 video, 18 script), 32-bit timestamp, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTag {
    pub tag_type: u8,
    pub timestamp: u32,
    pub body: Bytes,
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
        let h = &data[pos..pos + 11];
        let size = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
        let timestamp = (u32::from(h[7]) << 24) | (u32::from(h[4]) << 16) | (u32::from(h[5]) << 8) | u32::from(h[6]);
        let end = pos + 11 + size;
        if end > data.len() {
            return Err(FlvFileError::Truncated(pos));
        }
        tags.push(FileTag { tag_type: h[0] & 0x1f, timestamp, body: data.slice(pos + 11..end) });
        pos = end + 4;
    }
    Ok(tags)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
